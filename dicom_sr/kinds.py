"""The kinds of result object ainode writes: one enum, read by every stage.

A destination's ``formats`` name kinds (lower-case); the audit record and
the API show them upper-case, as here. Which kinds a job writes, under which
UIDs and for which destinations, is the node's ``ResultPlan``; this module
only says what each kind is.
"""

from __future__ import annotations

import enum

from pydicom.dataset import Dataset

from dicom_sr.codes import REJECTED_FOR_QUALITY_REASONS


class ResultKind(enum.StrEnum):
    """A kind of result object, by what it is for the viewer.

    ``SEG``: Segmentation (PS3.3 A.51, or Label Map Segmentation A.51a).
    ``SR``: Comprehensive 3D SR with a TID 1500 Measurement Report.
    ``SC``: Secondary Capture images with the outlines burned in.
    ``PDF``: Encapsulated PDF summary. ``KO``: Key Object Selection of the
    key images. ``DERIVED``: derived image series (reformats, MIPs: PS3.3
    C.8.2.1 Image Type ``DERIVED\\SECONDARY\\REFORMATTED``). ``REG``: Spatial
    and Deformable Spatial Registration (PS3.3 A.39, A.42). ``REJECT``: an
    IHE IOCM rejection note (KOS titled DCM 113001) withdrawing superseded
    results; never asked for, planned when a job replaces earlier ones.
    """

    SEG = "SEG"
    SR = "SR"
    SC = "SC"
    PDF = "PDF"
    KO = "KO"
    DERIVED = "DERIVED"
    REG = "REG"
    REJECT = "REJECT"

    @property
    def format_name(self) -> str:
        """The name a destination's ``formats`` uses (lower-case)."""
        return self.value.lower()

    @property
    def profiled(self) -> bool:
        """Whether its objects depend on a destination's viewer profile.

        The SEG's encoding does; the SR and the KOS reference the SEG they go
        with; the SC's frames follow the profile. PDF, derived series,
        registrations and rejection notes are the same for every destination.
        """
        return self in _PROFILED

    @property
    def requestable(self) -> bool:
        """Whether a destination may ask for it in ``formats`` (all but REJECT)."""
        return self is not ResultKind.REJECT

    @classmethod
    def parse(cls, name: str) -> ResultKind:
        """The kind named ``name`` (any case): ``"seg"`` -> ``SEG``."""
        try:
            return cls(str(name).upper())
        except ValueError as exc:
            known = ", ".join(k.format_name for k in cls if k.requestable)
            raise ValueError(f"unknown result kind {name!r}; known: {known}") from exc

    @classmethod
    def of_dataset(cls, ds: Dataset) -> ResultKind:
        """The kind of a written result object, from its Modality, Image Type and title."""
        modality = str(ds.get("Modality", ""))
        title = ds.get("ConceptNameCodeSequence")
        if modality == "KO" and title and title[0].CodeValue == REJECTED_FOR_QUALITY_REASONS.value:
            return cls.REJECT
        image_type = list(ds.get("ImageType", []))
        if len(image_type) > 2 and str(image_type[2]).upper() in _DERIVED_IMAGE_TYPES:
            return cls.DERIVED
        return _BY_MODALITY.get(modality, cls.SC)


_PROFILED = frozenset({ResultKind.SEG, ResultKind.SR, ResultKind.SC, ResultKind.KO})
#: Modality of each kind's objects (SC and derived series keep the source's).
_BY_MODALITY = {
    "SEG": ResultKind.SEG,
    "SR": ResultKind.SR,
    "DOC": ResultKind.PDF,
    "KO": ResultKind.KO,
    "REG": ResultKind.REG,
}
#: Image Type value 3 of derived image series (reformats, MIPs).
_DERIVED_IMAGE_TYPES = frozenset({"REFORMATTED", "MIP", "MINIP"})
