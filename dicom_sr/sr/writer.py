"""Write measurements as a TID 1500 Measurement Report in a Comprehensive 3D SR.

The report (PS3.16 TID 1500) holds one TID 1411 "Volumetric ROI Measurements
and Qualitative Evaluations" group per measured segment, each referencing its
segment in the SEG written for the same findings, and one TID 1501
"Measurement and Qualitative Evaluation Group" for whole-series measurements.
The node is the device observer (TID 1002/1004); every measurement (TID 300)
names the algorithm (TID 4019).
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
from dicom_sr.errors import EncodingError, SourceImagesError
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity, derived_uid
from dicom_sr.seg.writer import segment_tracking_uid
from dicom_sr.sources import check_algorithm, check_source_images, detach_from_source
from pipelines.findings import Findings, Measurement, SegmentDescription

logger = logging.getLogger(__name__)

_Group = (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


def write_measurement_report(
    source_images: Sequence[Dataset],
    findings: Findings,
    segmentation: Dataset | None,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
) -> hd.sr.Comprehensive3DSR:
    """Write the measurements of ``findings`` as a TID 1500 Measurement Report.

    Implements the Comprehensive 3D SR IOD (PS3.3 A.35.13) with the content
    tree of PS3.16 TID 1500. Segment measurements reference their segment
    with TID 1411 "Referenced Segment" and "Source Series for Segmentation";
    the group's Tracking Identifier and Tracking UID are those of the segment
    in the SEG, so SEG and SR track the finding with the same pair. Procedure
    Reported is the source's imaging procedure (see
    :func:`dicom_sr.codes.procedure_reported`). The document is complete,
    unverified and preliminary: no person has read it yet.

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        Single-frame source images in the order of
        ``findings.source_sop_instance_uids``; metadata suffices.
    findings : pipelines.findings.Findings
        Findings with at least one measurement.
    segmentation : pydicom.dataset.Dataset | None
        The SEG written for ``findings`` (:func:`dicom_sr.seg.write_segmentation`);
        ``None`` only when no measurement refers to a segment.
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
        When there is nothing to report or a measured segment is missing
        from ``segmentation``.
    """
    check_source_images(source_images, findings)
    check_algorithm(findings, algorithm)
    if not findings.measurements:
        raise EncodingError("findings have no measurements to report")
    groups: list[_Group] = _segment_groups(source_images, findings, segmentation, algorithm)
    series_measurements = [m for m in findings.measurements if m.segment_number is None]
    if series_measurements:
        groups.append(_series_group(source_images, series_measurements, identity, algorithm))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(device),
        procedure_reported=coded_concept(procedure_reported(source_images[0])),
        imaging_measurements=groups,
        title=coded_concept(IMAGING_MEASUREMENT_REPORT),
    )
    evidence = [*source_images, *([segmentation] if segmentation is not None else [])]
    try:
        document = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            series_instance_uid=identity.series_instance_uid,
            series_number=identity.series_number,
            sop_instance_uid=identity.sop_instance_uid,
            instance_number=identity.instance_number,
            manufacturer=device.manufacturer,
            is_complete=True,
            institution_name=device.institution_name,
            series_description=identity.series_description,
            manufacturer_model_name=device.manufacturer_model_name,
            software_versions=device.software_versions,
            device_serial_number=device.device_serial_number,
            content_qualification=device.content_qualification,
        )
    except ValueError as exc:
        raise EncodingError(f"cannot encode measurement report: {exc}") from exc
    detach_from_source(document, source_images[0])
    logger.info(
        "wrote SR %s: %d measurement groups, %d measurements",
        identity.sop_instance_uid,
        len(groups),
        len(findings.measurements),
    )
    return document


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


def _algorithm_id(algorithm: AlgorithmIdentity) -> hd.sr.AlgorithmIdentification:
    """Encode PS3.16 TID 4019 "Algorithm Identification"."""
    parameters = [f"{key}={value}" for key, value in algorithm.all_parameters().items()]
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=parameters or None,
        family=coded_concept(algorithm.family),
        manufacturer=algorithm.source,
    )


def _measurement(measurement: Measurement, algorithm: AlgorithmIdentity) -> hd.sr.Measurement:
    """Encode one numeric measurement (PS3.16 TID 300)."""
    derivation = measurement.derivation
    return hd.sr.Measurement(
        name=coded_concept(measurement.concept),
        value=float(measurement.value),
        unit=coded_concept(measurement.unit),
        derivation=coded_concept(derivation) if derivation is not None else None,
        algorithm_id=_algorithm_id(algorithm),
    )


def _segment_groups(
    source_images: Sequence[Dataset],
    findings: Findings,
    segmentation: Dataset | None,
    algorithm: AlgorithmIdentity,
) -> list[_Group]:
    """Build one TID 1411 group per measured segment, by segment number."""
    numbers = sorted(
        {m.segment_number for m in findings.measurements if m.segment_number is not None}
    )
    if not numbers:
        return []
    if segmentation is None:
        raise EncodingError("measurements refer to segments but no segmentation was given")
    items = _segment_items(segmentation, source_images)
    groups: list[_Group] = []
    for number in numbers:
        description = findings.segment(number).description
        measurements = [
            _measurement(m, algorithm) for m in findings.measurements if m.segment_number == number
        ]
        groups.append(
            _volumetric_group(description, items, segmentation, source_images, measurements)
        )
    return groups


def _segment_items(segmentation: Dataset, source_images: Sequence[Dataset]) -> dict[int, Dataset]:
    """Check ``segmentation`` was derived from the source; map number to item."""
    if segmentation.get("SOPClassUID") != SegmentationStorage:
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


def _volumetric_group(
    description: SegmentDescription,
    items: dict[int, Dataset],
    segmentation: Dataset,
    source_images: Sequence[Dataset],
    measurements: list[hd.sr.Measurement],
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """Build the TID 1411 group of one segment, referencing it in the SEG."""
    item = items.get(description.number)
    if item is None or str(item.get("SegmentLabel")) != description.label:
        raise EncodingError(
            f"segment {description.number} ({description.label}) is not in the segmentation"
        )
    tracking_uid = str(
        item.get("TrackingUID")
        or segment_tracking_uid(segmentation.SOPInstanceUID, description.number)
    )
    referenced_segment = hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID,
        sop_instance_uid=segmentation.SOPInstanceUID,
        segment_number=description.number,
        source_series=hd.sr.SourceSeriesForSegmentation(source_images[0].SeriesInstanceUID),
    )
    region = description.anatomic_region
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=description.tracking_id
        ),
        referenced_segment=referenced_segment,
        finding_type=coded_concept(description.property_type),
        finding_category=coded_concept(description.category),
        finding_sites=(
            [hd.sr.FindingSite(anatomic_location=coded_concept(region))]
            if region is not None
            else None
        ),
        measurements=measurements,
    )


def _series_group(
    source_images: Sequence[Dataset],
    measurements: Sequence[Measurement],
    identity: ResultIdentity,
    algorithm: AlgorithmIdentity,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """Build the TID 1501 group of whole-series measurements.

    The group names every source image as "Source of Measurement", so the
    measurements are tied to the series even when no segment is referenced.
    """
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid("series-measurements", identity.sop_instance_uid),
            identifier=f"{algorithm.name} series measurements",
        ),
        measurements=[_measurement(m, algorithm) for m in measurements],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(image) for image in source_images
        ],
    )
