"""Turn one pipeline's findings into the DICOM objects sent back to the PACS."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

from pydicom.dataset import Dataset

from dicom_sr.derived import write_derived_series
from dicom_sr.errors import IdentityError
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity, derived_uid
from dicom_sr.kinds import ResultKind
from dicom_sr.kos import write_key_object_selection
from dicom_sr.pdf import write_pdf_report
from dicom_sr.profile import ViewerProfile
from dicom_sr.registration import write_deformable_registration, write_spatial_registration
from dicom_sr.sc import write_secondary_captures
from dicom_sr.seg import write_segmentation
from dicom_sr.sources import check_algorithm, check_source_images
from dicom_sr.sr import write_measurement_report
from dicom_sr.sr.writer import has_report_content
from pipelines.findings import DerivedSeries, Findings

logger = logging.getLogger(__name__)

#: What :func:`write_results` writes when not told otherwise.
DEFAULT_FORMATS: tuple[str, ...] = ("seg", "sr")

#: Identity keys of the objects written whatever ``formats`` says.
DERIVED_IDENTITY, REGISTRATION_IDENTITY = "derived", "reg"
#: Series Number offset of derived series from the SEG (or SR) identity when
#: no ``"derived"`` identity is given.
DERIVED_SERIES_NUMBER_OFFSET = 10


def write_results(
    source_images: Sequence[Dataset],
    findings: Findings,
    seg_identity: ResultIdentity | None = None,
    sr_identity: ResultIdentity | None = None,
    device: DeviceIdentity | None = None,
    algorithm: AlgorithmIdentity | None = None,
    *,
    formats: Collection[str] = DEFAULT_FORMATS,
    identities: Mapping[str, ResultIdentity] | None = None,
    profile: ViewerProfile | None = None,
    prior_images: Sequence[Dataset] = (),
    primary_outputs: bool = True,
) -> tuple[Dataset, ...]:
    """Write the result objects of ``findings`` in the requested formats.

    ``"seg"``: a Segmentation (PS3.3 A.51) when the findings have segments.
    ``"sr"``: a Comprehensive 3D SR with a TID 1500 Measurement Report when
    they have measurements, classifications, detections or registrations;
    it references the SEG's segments (the SEG is written for the SR's sake
    even when ``"seg"`` is not requested, but then not returned).
    ``"sc"``: Secondary Capture images with the segment outlines burned in.
    ``"pdf"``: an Encapsulated PDF summary. ``"ko"``: a Key Object Selection
    of ``findings.key_frames`` (or the segments' key frames). Every object
    is in the source's study, lists the algorithm as Contributing Equipment
    (IHE AIR) and tells its kind by Modality: SEG, SR, OT, DOC, KO.

    Whatever ``formats`` says, because they are the pipeline's primary
    output: each of ``findings.derived_series`` as its own image series
    (:func:`dicom_sr.derived.write_derived_series`; Modality CT, MR or OT,
    Image Type ``DERIVED\\SECONDARY\\REFORMATTED`` or ``...\\MIP``), and,
    when ``identities`` has a ``"reg"`` identity, each of
    ``findings.registrations`` as a Spatial Registration plus, when it has a
    deformation, a Deformable Spatial Registration (Modality REG). Without
    a ``"reg"`` identity a registration is reported in the SR only (TID
    1501 comparison group), as before.

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        Single-frame source images in the order of
        ``findings.source_sop_instance_uids``, or one multi-frame image;
        metadata suffices for SEG, SR and KO, SC and PDF need pixel data.
    findings : pipelines.findings.Findings
        What the pipeline found.
    seg_identity, sr_identity : ResultIdentity | None
        Identities of the SEG and the SR (the original positional API);
        ``identities["seg"]`` / ``identities["sr"]`` win over them.
    device : DeviceIdentity
        The node (required).
    algorithm : AlgorithmIdentity
        The algorithm that produced ``findings`` (required).
    formats : Collection[str]
        Any of ``"seg"``, ``"sr"``, ``"sc"``, ``"pdf"``, ``"ko"``.
    identities : Mapping[str, ResultIdentity] | None
        One identity per format. The SC series gets one instance per frame
        shown: the first has the identity's SOP Instance UID, the others
        UIDs derived from it (the same on every retry). Two more keys:
        ``"derived"`` - derived series ``i`` is series ``i`` of it (series
        0 the identity's UIDs, the others name-based UIDs derived from
        them, Series Number ``series_number + i``, Series Description
        ``"<derived description> (<identity's description>)"``); ``"reg"`` -
        the one series of every registration object (the first object has
        the identity's SOP Instance UID, the others derived ones, Instance
        Numbers counting on). Without ``"derived"``, derived series
        identities are derived from the SEG identity (else the SR's):
        name-based UIDs, Series Number ``base + 10 + i``.
    profile : ViewerProfile | None
        Viewer compatibility options of the destination.
    prior_images : Sequence[pydicom.dataset.Dataset]
        Metadata of the prior series of ``findings.registrations``, if the
        node has it: the Spatial Registration then references its images.
    primary_outputs : bool
        Write the derived series and registration objects (default). A
        caller writing a second set of viewer-profiled objects (another
        ``profile``) for the same findings passes ``False``: those objects
        do not depend on the profile and are written once.

    Returns
    -------
    tuple[pydicom.dataset.Dataset, ...]
        In the order SEG, SR, SC images, PDF, KO, the derived series' images
        (series by series, frame order), then per registration its Spatial
        Registration and Deformable Spatial Registration; a format without
        content writes nothing.

    Raises
    ------
    DicomWriterError
        Any error of :mod:`dicom_sr.errors`, when a result cannot be written;
        :class:`IdentityError` when a requested format has no identity, two
        formats share a UID, or ``device``/``algorithm`` is missing.
    """
    wanted = _formats(formats)
    extra = {k: v for k, v in (identities or {}).items() if k.lower() in _EXTRA_KEYS}
    ids = _identities(
        wanted,
        seg_identity,
        sr_identity,
        {k: v for k, v in (identities or {}).items() if k.lower() not in _EXTRA_KEYS},
        extra,
    )
    if device is None or algorithm is None:
        raise IdentityError("write_results needs a device and an algorithm")
    profile = profile or ViewerProfile()
    results: list[Dataset] = []
    segmentation = None
    report_wanted = ResultKind.SR in wanted and has_report_content(findings)
    if findings.segments and (ResultKind.SEG in wanted or report_wanted):
        seg_id = ids.get(ResultKind.SEG)
        if seg_id is None:
            raise IdentityError(
                "no result identity for seg (the SEG, or the SEG the SR references)"
            )
        segmentation = write_segmentation(
            source_images, findings, seg_id, device, algorithm, profile=profile
        )
        if ResultKind.SEG in wanted:
            results.append(segmentation)
    report = None
    if report_wanted:
        report = write_measurement_report(
            source_images, findings, segmentation, ids[ResultKind.SR], device, algorithm
        )
        results.append(report)
    if ResultKind.SC in wanted and findings.segments:
        results.extend(
            write_secondary_captures(
                source_images,
                findings,
                ids[ResultKind.SC],
                device,
                algorithm,
                frames=profile.sc_frames,
            )
        )
    if ResultKind.PDF in wanted:
        results.append(
            write_pdf_report(source_images, findings, ids[ResultKind.PDF], device, algorithm)
        )
    if ResultKind.KO in wanted:
        kos = write_key_object_selection(
            source_images,
            findings,
            ids[ResultKind.KO],
            device,
            algorithm,
            results=[r for r in (segmentation, report) if r is not None],
        )
        if kos is not None:
            results.append(kos)
    if primary_outputs and (findings.derived_series or findings.registrations):
        check_source_images(source_images, findings)
        check_algorithm(findings, algorithm)
        fallback = ids.get(ResultKind.SEG) or ids.get(ResultKind.SR)
        results.extend(_derived_images(source_images, findings, extra, fallback, device, algorithm))
        results.extend(
            _registrations(
                source_images, findings, extra, fallback, device, algorithm, prior_images
            )
        )
    if not results:
        logger.info(
            "findings of %s gave nothing to write in %s",
            findings.pipeline_name,
            sorted(f.format_name for f in wanted),
        )
    return tuple(results)


_EXTRA_KEYS = frozenset({DERIVED_IDENTITY, REGISTRATION_IDENTITY})


def write_primary_outputs(
    source_images: Sequence[Dataset],
    findings: Findings,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
    *,
    derived: ResultIdentity | None = None,
    registration: ResultIdentity | None = None,
    prior_images: Sequence[Dataset] = (),
) -> tuple[Dataset, ...]:
    """Write exactly the derived series and registration objects a caller planned.

    Unlike :func:`write_results`, nothing is derived from a SEG or SR
    identity: without ``derived`` no derived series is written, without
    ``registration`` no registration object (each is the base identity of
    its series, numbered as :func:`write_results` describes).

    Parameters
    ----------
    source_images, findings, device, algorithm
        As for :func:`write_results`.
    derived : ResultIdentity | None
        Identity of the first derived series (PS3.3 C.8.2.1 derived images).
    registration : ResultIdentity | None
        Identity of the first Spatial Registration (PS3.3 A.39).
    prior_images : Sequence[pydicom.dataset.Dataset]
        The prior series' metadata, for the registration's references.

    Returns
    -------
    tuple[pydicom.dataset.Dataset, ...]
        The derived series' images, then the registration objects.
    """
    wanted_derived = derived is not None and bool(findings.derived_series)
    wanted_reg = registration is not None and bool(findings.registrations)
    if not (wanted_derived or wanted_reg):
        return ()
    check_source_images(source_images, findings)
    check_algorithm(findings, algorithm)
    results: list[Dataset] = []
    if derived is not None:
        extra = {DERIVED_IDENTITY: derived}
        results.extend(_derived_images(source_images, findings, extra, None, device, algorithm))
    if registration is not None:
        extra = {REGISTRATION_IDENTITY: registration}
        results.extend(
            _registrations(source_images, findings, extra, None, device, algorithm, prior_images)
        )
    return tuple(results)


def _extra_identity(
    extra: Mapping[str, ResultIdentity], key: str, fallback: ResultIdentity | None, what: str
) -> ResultIdentity | None:
    identity = next((v for k, v in extra.items() if k.lower() == key), None)
    if identity is None and fallback is None:
        raise IdentityError(
            f"no result identity for the {what}: pass identities[{key!r}] (or a SEG/SR identity)"
        )
    return identity


def _derived_images(
    source_images: Sequence[Dataset],
    findings: Findings,
    extra: Mapping[str, ResultIdentity],
    fallback: ResultIdentity | None,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
) -> list[Dataset]:
    if not findings.derived_series:
        return []
    base = _extra_identity(extra, DERIVED_IDENTITY, fallback, "derived series")
    images: list[Dataset] = []
    for index, derived in enumerate(findings.derived_series):
        identity = derived_series_identity(base, fallback, derived, index, algorithm)
        images.extend(write_derived_series(source_images, derived, identity, device, algorithm))
    return images


def derived_series_identity(
    base: ResultIdentity | None,
    fallback: ResultIdentity | None,
    derived: DerivedSeries,
    index: int,
    algorithm: AlgorithmIdentity,
) -> ResultIdentity:
    """Identity of the ``index``-th derived series (see :func:`write_results`).

    From ``base`` (the ``"derived"`` identity) when given, else name-based
    from ``fallback`` (the SEG or SR identity) with Series Number
    ``fallback.series_number + 10 + index``.
    """
    if base is not None:
        if index == 0:
            series_uid, sop_uid = base.series_instance_uid, base.sop_instance_uid
        else:
            series_uid = derived_uid("derived-series", base.series_instance_uid, str(index))
            sop_uid = derived_uid("derived-image", base.sop_instance_uid, str(index))
        number, suffix = base.series_number + index, base.series_description
        instance_number = base.instance_number
    elif fallback is not None:
        series_uid = derived_uid("derived-series", fallback.series_instance_uid, str(index))
        sop_uid = derived_uid("derived-image", fallback.sop_instance_uid, str(index))
        number = fallback.series_number + DERIVED_SERIES_NUMBER_OFFSET + index
        suffix, instance_number = algorithm.name, 1
    else:
        raise IdentityError("no identity to derive the derived series' identity from")
    return ResultIdentity(
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        series_number=number,
        series_description=f"{derived.description} ({suffix})"[:64],
        instance_number=instance_number,
    )


def _registrations(
    source_images: Sequence[Dataset],
    findings: Findings,
    extra: Mapping[str, ResultIdentity],
    fallback: ResultIdentity | None,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
    prior_images: Sequence[Dataset],
) -> list[Dataset]:
    if not findings.registrations:
        return []
    base = next((v for k, v in extra.items() if k.lower() == REGISTRATION_IDENTITY), None)
    if base is None:
        logger.info(
            "no %r identity: %d registration(s) of %s are reported in the SR only",
            REGISTRATION_IDENTITY,
            len(findings.registrations),
            findings.pipeline_name,
        )
        return []
    objects: list[Dataset] = []
    for index, registration in enumerate(findings.registrations):
        kinds = ["rigid"] + (["deformable"] if registration.deformation is not None else [])
        for kind in kinds:
            position = len(objects)
            identity = ResultIdentity(
                series_instance_uid=base.series_instance_uid,
                sop_instance_uid=(
                    base.sop_instance_uid
                    if position == 0
                    else derived_uid("reg", base.sop_instance_uid, kind, str(index))
                ),
                series_number=base.series_number,
                series_description=base.series_description,
                instance_number=base.instance_number + position,
            )
            if kind == "rigid":
                objects.append(
                    write_spatial_registration(
                        source_images,
                        registration,
                        identity,
                        device,
                        algorithm,
                        prior_images=prior_images,
                    )
                )
            else:
                objects.append(
                    write_deformable_registration(
                        source_images, registration, identity, device, algorithm
                    )
                )
    return objects


#: The kinds :func:`write_results` writes by ``formats``.
WRITABLE_FORMATS = frozenset(
    {ResultKind.SEG, ResultKind.SR, ResultKind.SC, ResultKind.PDF, ResultKind.KO}
)


def _format(name: str) -> ResultKind:
    known = ", ".join(sorted(f.format_name for f in WRITABLE_FORMATS))
    try:
        kind = ResultKind.parse(str(name))
    except ValueError as exc:
        raise IdentityError(f"unknown result format {name!r}; known: {known}") from exc
    if kind not in WRITABLE_FORMATS:
        raise IdentityError(
            f"{kind.format_name} is written by write_primary_outputs, not by formats "
            f"(known: {known})"
        )
    return kind


def _formats(formats: Collection[str]) -> set[ResultKind]:
    if isinstance(formats, str):
        raise IdentityError("formats must be a collection of names, not a string")
    return {_format(name) for name in formats}


def _identities(
    wanted: set[ResultKind],
    seg_identity: ResultIdentity | None,
    sr_identity: ResultIdentity | None,
    identities: Mapping[str, ResultIdentity] | None,
    extra: Mapping[str, ResultIdentity] | None = None,
) -> dict[ResultKind, ResultIdentity]:
    ids: dict[ResultKind, ResultIdentity] = {}
    if seg_identity is not None:
        ids[ResultKind.SEG] = seg_identity
    if sr_identity is not None:
        ids[ResultKind.SR] = sr_identity
    for name, identity in (identities or {}).items():
        ids[_format(name)] = identity
    missing = sorted(f.format_name for f in wanted - {ResultKind.SEG} if f not in ids)
    if missing:
        raise IdentityError(f"no result identity for {', '.join(missing)}")
    seen: dict[str, str] = {}
    named = [(kind.format_name, identity) for kind, identity in ids.items()]
    named += [(key.lower(), identity) for key, identity in (extra or {}).items()]
    for kind, identity in named:
        for uid in (identity.series_instance_uid, identity.sop_instance_uid):
            if uid in seen and seen[uid] != kind:
                raise IdentityError(
                    f"{kind.upper()} and {seen[uid].upper()} must have their "
                    "own series and instance UIDs"
                )
            seen[uid] = kind
    return ids
