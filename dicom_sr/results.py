"""Turn one pipeline's findings into the DICOM objects sent back to the PACS."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

from pydicom.dataset import Dataset

from dicom_sr.errors import IdentityError
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity
from dicom_sr.kos import write_key_object_selection
from dicom_sr.pdf import write_pdf_report
from dicom_sr.profile import ResultFormat, ViewerProfile
from dicom_sr.sc import write_secondary_captures
from dicom_sr.seg import write_segmentation
from dicom_sr.sr import write_measurement_report
from dicom_sr.sr.writer import has_report_content
from pipelines.findings import Findings

logger = logging.getLogger(__name__)

#: What :func:`write_results` writes when not told otherwise.
DEFAULT_FORMATS: tuple[str, ...] = ("seg", "sr")


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
        UIDs derived from it (the same on every retry).
    profile : ViewerProfile | None
        Viewer compatibility options of the destination.

    Returns
    -------
    tuple[pydicom.dataset.Dataset, ...]
        In the order SEG, SR, SC images, PDF, KO; a format without content
        writes nothing.

    Raises
    ------
    DicomWriterError
        Any error of :mod:`dicom_sr.errors`, when a result cannot be written;
        :class:`IdentityError` when a requested format has no identity, two
        formats share a UID, or ``device``/``algorithm`` is missing.
    """
    wanted = _formats(formats)
    ids = _identities(wanted, seg_identity, sr_identity, identities)
    if device is None or algorithm is None:
        raise IdentityError("write_results needs a device and an algorithm")
    profile = profile or ViewerProfile()
    results: list[Dataset] = []
    segmentation = None
    report_wanted = ResultFormat.SR in wanted and has_report_content(findings)
    if findings.segments and (ResultFormat.SEG in wanted or report_wanted):
        seg_id = ids.get(ResultFormat.SEG)
        if seg_id is None:
            raise IdentityError(
                "no result identity for seg (the SEG, or the SEG the SR references)"
            )
        segmentation = write_segmentation(
            source_images, findings, seg_id, device, algorithm, profile=profile
        )
        if ResultFormat.SEG in wanted:
            results.append(segmentation)
    report = None
    if report_wanted:
        report = write_measurement_report(
            source_images, findings, segmentation, ids[ResultFormat.SR], device, algorithm
        )
        results.append(report)
    if ResultFormat.SC in wanted and findings.segments:
        results.extend(
            write_secondary_captures(
                source_images,
                findings,
                ids[ResultFormat.SC],
                device,
                algorithm,
                frames=profile.sc_frames,
            )
        )
    if ResultFormat.PDF in wanted:
        results.append(
            write_pdf_report(source_images, findings, ids[ResultFormat.PDF], device, algorithm)
        )
    if ResultFormat.KO in wanted:
        kos = write_key_object_selection(
            source_images,
            findings,
            ids[ResultFormat.KO],
            device,
            algorithm,
            results=[r for r in (segmentation, report) if r is not None],
        )
        if kos is not None:
            results.append(kos)
    if not results:
        logger.info(
            "findings of %s gave nothing to write in %s",
            findings.pipeline_name,
            sorted(f.value for f in wanted),
        )
    return tuple(results)


def _formats(formats: Collection[str]) -> set[ResultFormat]:
    if isinstance(formats, str):
        raise IdentityError("formats must be a collection of names, not a string")
    try:
        return {ResultFormat(str(name).lower()) for name in formats}
    except ValueError as exc:
        known = ", ".join(f.value for f in ResultFormat)
        raise IdentityError(f"unknown result format in {sorted(formats)}; known: {known}") from exc


def _identities(
    wanted: set[ResultFormat],
    seg_identity: ResultIdentity | None,
    sr_identity: ResultIdentity | None,
    identities: Mapping[str, ResultIdentity] | None,
) -> dict[ResultFormat, ResultIdentity]:
    ids: dict[ResultFormat, ResultIdentity] = {}
    if seg_identity is not None:
        ids[ResultFormat.SEG] = seg_identity
    if sr_identity is not None:
        ids[ResultFormat.SR] = sr_identity
    for name, identity in (identities or {}).items():
        try:
            ids[ResultFormat(name.lower())] = identity
        except ValueError as exc:
            raise IdentityError(f"identity for unknown result format {name!r}") from exc
    missing = sorted(f.value for f in wanted - {ResultFormat.SEG} if f not in ids)
    if missing:
        raise IdentityError(f"no result identity for {', '.join(missing)}")
    seen: dict[str, ResultFormat] = {}
    for kind, identity in ids.items():
        for uid in (identity.series_instance_uid, identity.sop_instance_uid):
            if uid in seen and seen[uid] is not kind:
                raise IdentityError(
                    f"{kind.value.upper()} and {seen[uid].value.upper()} must have their "
                    "own series and instance UIDs"
                )
            seen[uid] = kind
    return ids
