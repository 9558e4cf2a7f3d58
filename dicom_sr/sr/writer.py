"""Write findings as a TID 1500 Measurement Report in a Comprehensive 3D SR.

The report (PS3.16 TID 1500) holds, per finding, the groups built in
:mod:`dicom_sr.sr.groups`: a TID 1411 group per segment referencing its
segment in the SEG written for the same findings (with its measurements and
classifications) and a TID 1410 group with the segment's outline on its key
frame; a TID 1410 group per detection (SCOORD3D); a TID 1501 group for
whole-series measurements and classifications; a TID 1501 group per prior
study compared with. The node is the device observer (TID 1002/1004); every
measurement names the algorithm (TID 4019); the image library (TID 1600)
lists the images the outline groups are drawn on (single-frame sources
only: highdicom 0.28 cannot describe an enhanced multi-frame image there).
Listing all source images instead would cost ~10 s for 300 slices in
highdicom 0.28; the SEG and the whole-series group reference them all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import SegmentationStorage

from dicom_sr.codes import (
    IMAGING_MEASUREMENT_REPORT,
    OBSERVER_TYPE_DEVICE,
    coded_concept,
    procedure_reported,
)
from dicom_sr.equipment import result_object_arguments
from dicom_sr.errors import EncodingError, SourceImagesError
from dicom_sr.geometry import SourceFrames, source_frames
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity
from dicom_sr.outline import key_frame
from dicom_sr.seg.writer import segment_tracking_uid
from dicom_sr.sources import check_algorithm, check_source_images, finish_result
from dicom_sr.sr import groups
from pipelines.findings import Classification, Findings, Measurement

logger = logging.getLogger(__name__)

_SEGMENTATION_SOP_CLASSES = frozenset({SegmentationStorage, "1.2.840.10008.5.1.4.1.1.66.7"})


def has_report_content(findings: Findings) -> bool:
    """Return whether ``findings`` hold anything a TID 1500 report carries."""
    return bool(
        findings.measurements
        or findings.classifications
        or findings.detections
        or findings.registrations
    )


def write_measurement_report(
    source_images: Sequence[Dataset],
    findings: Findings,
    segmentation: Dataset | None,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
) -> hd.sr.Comprehensive3DSR:
    """Write ``findings`` as a TID 1500 Measurement Report.

    Implements the Comprehensive 3D SR IOD (PS3.3 A.35.13) with the content
    tree of PS3.16 TID 1500. Segment groups reference their segment with
    TID 1411 "Referenced Segment" and "Source Series for Segmentation"; the
    group's Tracking Identifier and Tracking UID are those of the segment in
    the SEG, so SEG and SR track the finding with the same pair. When a
    segmentation is given, every segment also gets an outline group with
    image coordinates. Procedure Reported is the source's imaging procedure
    (see :func:`dicom_sr.codes.procedure_reported`). The document is
    complete, unverified and preliminary: no person has read it yet. The
    algorithm is listed in the Contributing Equipment Sequence (IHE AIR) and
    the Patient and Study modules are copied exactly from the source.

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        Single-frame source images in the order of
        ``findings.source_sop_instance_uids``, or one multi-frame image;
        metadata suffices.
    findings : pipelines.findings.Findings
        Findings with at least one measurement, classification, detection
        or registration.
    segmentation : pydicom.dataset.Dataset | None
        The SEG written for ``findings`` (:func:`dicom_sr.seg.write_segmentation`);
        ``None`` only when no measurement or classification refers to a segment.
    identity : ResultIdentity
        UIDs, number and description of the SR instance and series.
    device : DeviceIdentity
        The node, recorded as equipment and as device observer.
    algorithm : AlgorithmIdentity
        The algorithm that produced ``findings``.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The instance, a :class:`pydicom.dataset.Dataset` with file meta.

    Raises
    ------
    SourceImagesError
        When the source images are not the findings' source in frame order,
        or ``segmentation`` was not derived from them.
    IdentityError
        When ``algorithm`` is not the findings' pipeline.
    EncodingError
        When there is nothing to report or a referenced segment is missing
        from ``segmentation``.
    """
    check_source_images(source_images, findings)
    check_algorithm(findings, algorithm)
    if not has_report_content(findings):
        raise EncodingError("findings have no measurements to report")
    frames = source_frames(source_images, findings)
    content = _groups(source_images, findings, segmentation, frames, identity, algorithm)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(device),
        procedure_reported=coded_concept(procedure_reported(source_images[0])),
        imaging_measurements=content,
        title=coded_concept(IMAGING_MEASUREMENT_REPORT),
        referenced_images=_library_images(findings, frames),
    )
    evidence = [*source_images, *([segmentation] if segmentation is not None else [])]
    try:
        document = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            is_complete=True,
            **result_object_arguments(identity, device, algorithm),
        )
    except ValueError as exc:
        raise EncodingError(f"cannot encode measurement report: {exc}") from exc
    finish_result(document, source_images[0])
    logger.info(
        "wrote SR %s: %d groups, %d measurements",
        identity.sop_instance_uid,
        len(content),
        len(findings.measurements),
    )
    return document


def _groups(
    source_images: Sequence[Dataset],
    findings: Findings,
    segmentation: Dataset | None,
    frames: SourceFrames,
    identity: ResultIdentity,
    algorithm: AlgorithmIdentity,
) -> list[groups.Group]:
    report_uid = identity.sop_instance_uid
    content: list[groups.Group] = _segment_groups(
        source_images, findings, segmentation, frames, algorithm, report_uid
    )
    frame_of_reference = str(source_images[0].get("FrameOfReferenceUID", ""))
    for detection in findings.detections:
        content.append(
            groups.detection_group(detection, frames, frame_of_reference, report_uid, algorithm)
        )
    series_measurements = [m for m in findings.measurements if m.segment_number is None]
    series_classes = [c for c in findings.classifications if c.segment_number is None]
    if series_measurements or series_classes:
        content.append(
            groups.series_group(
                source_images, series_measurements, series_classes, report_uid, algorithm
            )
        )
    for registration in findings.registrations:
        content.append(groups.registration_group(registration, report_uid, algorithm))
    return content


def _library_images(findings: Findings, frames: SourceFrames) -> list[Dataset] | None:
    """Images for the TID 1600 library: those the outline groups are drawn on."""
    if frames.is_multiframe or not findings.segments:
        return None
    keys = sorted({k for s in findings.segments if (k := key_frame(s.mask)) is not None})
    return [frames.images[k] for k in keys] or None


def _observation_context(device: DeviceIdentity) -> hd.sr.ObservationContext:
    """Describe the node as device observer (PS3.16 TID 1002, TID 1004)."""
    attributes = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device.observer_uid,
        name=device.observer_name,
        manufacturer_name=device.manufacturer,
        model_name=device.manufacturer_model_name,
        serial_number=device.device_serial_number,
    )
    observer = hd.sr.ObserverContext(
        observer_type=coded_concept(OBSERVER_TYPE_DEVICE),
        observer_identifying_attributes=attributes,
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def _segment_groups(
    source_images: Sequence[Dataset],
    findings: Findings,
    segmentation: Dataset | None,
    frames: SourceFrames,
    algorithm: AlgorithmIdentity,
    report_uid: str,
) -> list[groups.Group]:
    """Build the TID 1411 group and outline group of each segment, by number.

    Segments with measurements or classifications always get a TID 1411
    group (a segmentation is then required); with a segmentation, every
    segment in it gets its groups.
    """
    results: tuple[Measurement | Classification, ...] = (
        *findings.measurements,
        *findings.classifications,
    )
    referenced = {r.segment_number for r in results if r.segment_number is not None}
    if referenced and segmentation is None:
        raise EncodingError("measurements refer to segments but no segmentation was given")
    if segmentation is None:
        return []
    items = _segment_items(segmentation, source_images)
    numbers = sorted(referenced | {s.description.number for s in findings.segments})
    content: list[groups.Group] = []
    for number in numbers:
        segment = findings.segment(number)
        description = segment.description
        item = items.get(number)
        if item is None or str(item.get("SegmentLabel")) != description.label:
            if number not in referenced:
                continue
            raise EncodingError(
                f"segment {number} ({description.label}) is not in the segmentation"
            )
        tracking_uid = str(
            item.get("TrackingUID") or segment_tracking_uid(segmentation.SOPInstanceUID, number)
        )
        content.append(
            groups.volumetric_group(
                description,
                tracking_uid,
                segmentation,
                str(source_images[0].SeriesInstanceUID),
                [
                    groups.measurement(m, algorithm)
                    for m in findings.measurements
                    if m.segment_number == number
                ],
                [
                    groups.qualitative_evaluation(c)
                    for c in findings.classifications
                    if c.segment_number == number
                ],
            )
        )
        outline = groups.outline_group(description, segment.mask, frames, report_uid)
        if outline is not None:
            content.append(outline)
    return content


def _segment_items(segmentation: Dataset, source_images: Sequence[Dataset]) -> dict[int, Dataset]:
    """Check ``segmentation`` was derived from the source; map number to item."""
    if segmentation.get("SOPClassUID") not in _SEGMENTATION_SOP_CLASSES:
        raise SourceImagesError(
            f"segmentation has SOP Class {segmentation.get('SOPClassUID')}, "
            f"not Segmentation Storage"
        )
    source = source_images[0]
    if segmentation.get("StudyInstanceUID") != source.StudyInstanceUID:
        raise SourceImagesError("segmentation belongs to another study than the source images")
    referenced = {
        str(item.SeriesInstanceUID) for item in segmentation.get("ReferencedSeriesSequence", [])
    }
    if source.SeriesInstanceUID not in referenced:
        raise SourceImagesError("segmentation does not reference the source series")
    return {int(item.SegmentNumber): item for item in segmentation.get("SegmentSequence", [])}
