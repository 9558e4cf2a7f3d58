"""Coded concepts used by the writers, in one place.

Findings carry plain :class:`pipelines.findings.Code` values; the writers turn
them into highdicom :class:`~highdicom.sr.CodedConcept` items (PS3.3 Section
8.8, Code Sequence Macro) with :func:`coded_concept`. The constants below are
the fixed concepts the writers add themselves, each with the context group
(PS3.16) it is drawn from.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Final

import highdicom as hd
from pydicom.dataset import Dataset

from pipelines.findings import Code

logger = logging.getLogger(__name__)

#: Algorithm family of a trained model (PS3.16 CID 7162, DCM 123110).
ARTIFICIAL_INTELLIGENCE: Final = Code("123110", "DCM", "Artificial Intelligence")

#: Default title of a TID 1500 report (PS3.16 CID 7021, DCM 126000).
IMAGING_MEASUREMENT_REPORT: Final = Code("126000", "DCM", "Imaging Measurement Report")

#: Observer Type of the node itself (PS3.16 CID 270, DCM 121007).
OBSERVER_TYPE_DEVICE: Final = Code("121007", "DCM", "Device")

#: Procedure Reported when the modality has no entry below (PS3.16 CID 100).
IMAGING_PROCEDURE: Final = Code("363679005", "SCT", "Imaging procedure")

#: Procedure Reported by source Modality (0008,0060); all from PS3.16 CID 100
#: "Quantitative Diagnostic Imaging Procedures".
PROCEDURES_BY_MODALITY: Final = MappingProxyType(
    {
        "CT": Code("25045-6", "LN", "CT unspecified body region"),
        "MR": Code("25056-3", "LN", "MRI unspecified body region"),
        "PT": Code("44136-0", "LN", "PET unspecified body region"),
        "NM": Code("49118-3", "LN", "NM unspecified body region"),
        "CR": Code("43468-8", "LN", "XR unspecified body region"),
        "DX": Code("43468-8", "LN", "XR unspecified body region"),
        "XA": Code("77343006", "SCT", "Angiography"),
    }
)


def coded_concept(code: Code) -> hd.sr.CodedConcept:
    """Convert a plain findings code into a highdicom coded concept.

    Parameters
    ----------
    code : pipelines.findings.Code
        Code Value, Coding Scheme Designator and Code Meaning.

    Returns
    -------
    highdicom.sr.CodedConcept
        The same concept as an item of a Code Sequence (PS3.3 Section 8.8).
    """
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def procedure_reported(source_image: Dataset) -> Code:
    """Choose the TID 1500 Procedure Reported for a source series.

    The procedure is the imaging procedure that produced the source images,
    never the algorithm. It is mapped from Modality (0008,0060) onto a generic
    "unspecified body region" code of PS3.16 CID 100.

    Parameters
    ----------
    source_image : pydicom.dataset.Dataset
        Any image of the source series.

    Returns
    -------
    pipelines.findings.Code
        The procedure; :data:`IMAGING_PROCEDURE` for modalities not mapped.
    """
    modality = str(source_image.get("Modality", ""))
    code = PROCEDURES_BY_MODALITY.get(modality)
    if code is None:
        logger.debug("no CID 100 procedure for modality %r, using %s", modality, IMAGING_PROCEDURE)
        return IMAGING_PROCEDURE
    return code


#: Probability of a classification (DCM 122157 "Probability"): a NUM child of
#: the qualitative evaluation, unit UCUM "1" (no units), value in [0, 1].
PROBABILITY: Final = Code("122157", "DCM", "Probability")

#: Score of a detection: PS3.16 DCM 111012 "Certainty of Finding" (CID 6048,
#: the CAD certainty concept), NUM in [0, 1] with unit "1".
CERTAINTY_OF_FINDING: Final = Code("111012", "DCM", "Certainty of Finding")

#: UCUM unity for probabilities and scores (PS3.16 CID 7181).
NO_UNITS: Final = Code("1", "UCUM", "no units")

#: Finding of a qualitative evaluation group without a segment (SCT).
CLINICAL_FINDING: Final = Code("404684003", "SCT", "Clinical finding")

#: UIDREF concepts that name the prior study of a longitudinal comparison.
STUDY_INSTANCE_UID: Final = Code("110180", "DCM", "Study Instance UID")
SERIES_INSTANCE_UID: Final = Code("112002", "DCM", "Series Instance UID")
FRAME_OF_REFERENCE_UID: Final = Code("112227", "DCM", "Frame of Reference UID")

#: Title of the Key Object Selection document (PS3.16 CID 7010, DCM 113000).
OF_INTEREST: Final = Code("113000", "DCM", "Of Interest")
#: Title of an IHE IOCM rejection note (CID 7010, DCM 113001): the referenced
#: instances are withdrawn; an archive that supports IOCM hides them.
REJECTED_FOR_QUALITY_REASONS: Final = Code("113001", "DCM", "Rejected for Quality Reasons")

#: Document Title of the encapsulated PDF summary (LOINC 18748-4
#: "Diagnostic imaging study", PS3.16 CID 7020 "Document Titles").
DIAGNOSTIC_IMAGING_REPORT: Final = Code("18748-4", "LN", "Diagnostic Imaging Report")

#: Derivations of a derived image series (PS3.16 CID 7203 "Image Derivation");
#: :mod:`dicom_sr.derived` tells a projection from a reformat by these codes.
MULTIPLANAR_REFORMATTING: Final = Code("113072", "DCM", "Multiplanar reformatting")
MAXIMUM_INTENSITY_PROJECTION: Final = Code("113078", "DCM", "Maximum intensity projection")
MINIMUM_INTENSITY_PROJECTION: Final = Code("113079", "DCM", "Minimum intensity projection")

#: Purpose of Reference of a derived image's source images (PS3.16 CID 7202).
SOURCE_IMAGE_FOR_PROCESSING: Final = Code(
    "121322", "DCM", "Source image for image processing operation"
)

#: Registration Type of a spatial registration item (PS3.16 CID 7100 "RCS
#: Registration Method Type"): the Registered RCS itself, and the prior's
#: Frame of Reference aligned by image content.
FRAME_OF_REFERENCE_IDENTITY: Final = Code("125021", "DCM", "Frame of Reference Identity")
IMAGE_CONTENT_BASED_ALIGNMENT: Final = Code("125024", "DCM", "Image Content-based Alignment")
