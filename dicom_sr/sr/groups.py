"""Measurement groups of the TID 1500 report, one builder per kind of finding.

* a segment: TID 1411 "Volumetric ROI Measurements and Qualitative
  Evaluations" referencing the segment in the SEG, with its measurements and
  classifications, and a TID 1410 "Planar ROI Measurements and Qualitative
  Evaluations" holding the segment's outline on its key frame as an image
  SCOORD POLYLINE (OHIF draws only groups with image coordinates);
* a detection: TID 1410 with a SCOORD3D POLYGON (the box on its central
  plane, patient coordinates) and the score as "Certainty of Finding";
* whole-series measurements and classifications: TID 1501;
* a registration onto a prior study: TID 1501 naming the prior study,
  series and frame of reference (UIDREF items).

Classifications are qualitative evaluations (CODE, PS3.16 TID 1501/1411
"Qualitative Evaluations"); their probability is a NUM child "Probability"
(DCM 122157, unit UCUM "1") of the evaluation, HAS PROPERTIES.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DataElementSequence

from dicom_sr.codes import (
    CERTAINTY_OF_FINDING,
    CLINICAL_FINDING,
    FRAME_OF_REFERENCE_UID,
    NO_UNITS,
    PROBABILITY,
    SERIES_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    coded_concept,
)
from dicom_sr.errors import EncodingError
from dicom_sr.geometry import SourceFrames
from dicom_sr.identity import AlgorithmIdentity, derived_uid
from dicom_sr.outline import key_frame, trace_contour
from pipelines.findings import (
    Classification,
    Detection,
    Measurement,
    Registration,
    SegmentDescription,
)

logger = logging.getLogger(__name__)

Group = (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


def algorithm_id(algorithm: AlgorithmIdentity) -> hd.sr.AlgorithmIdentification:
    """Encode PS3.16 TID 4019 "Algorithm Identification"."""
    parameters = [f"{key}={value}" for key, value in algorithm.all_parameters().items()]
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=parameters or None,
        family=coded_concept(algorithm.family),
        manufacturer=algorithm.source,
    )


def measurement(item: Measurement, algorithm: AlgorithmIdentity) -> hd.sr.Measurement:
    """Encode one numeric measurement (PS3.16 TID 300) with its derivation."""
    derivation = item.derivation
    return hd.sr.Measurement(
        name=coded_concept(item.concept),
        value=float(item.value),
        unit=coded_concept(item.unit),
        derivation=coded_concept(derivation) if derivation is not None else None,
        algorithm_id=algorithm_id(algorithm),
    )


def qualitative_evaluation(item: Classification) -> hd.sr.QualitativeEvaluation:
    """Encode a classification as a CODE evaluation with its probability as a NUM child."""
    evaluation = hd.sr.QualitativeEvaluation(
        name=coded_concept(item.concept), value=coded_concept(item.value)
    )
    if item.probability is not None:
        probability = hd.sr.NumContentItem(
            name=coded_concept(PROBABILITY),
            value=float(item.probability),
            unit=coded_concept(NO_UNITS),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES,
        )
        evaluation[0].ContentSequence = DataElementSequence([probability])
    return evaluation


def _finding_sites(description: SegmentDescription) -> list[hd.sr.FindingSite] | None:
    region = description.anatomic_region
    if region is None:
        return None
    return [hd.sr.FindingSite(anatomic_location=coded_concept(region))]


def volumetric_group(
    description: SegmentDescription,
    tracking_uid: str,
    segmentation: Dataset,
    source_series_instance_uid: str,
    measurements: list[hd.sr.Measurement],
    evaluations: list[hd.sr.QualitativeEvaluation],
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """Build the TID 1411 group of one segment, referencing it in the SEG."""
    referenced_segment = hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID,
        sop_instance_uid=segmentation.SOPInstanceUID,
        segment_number=description.number,
        source_series=hd.sr.SourceSeriesForSegmentation(source_series_instance_uid),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=description.tracking_id
        ),
        referenced_segment=referenced_segment,
        finding_type=coded_concept(description.property_type),
        finding_category=coded_concept(description.category),
        finding_sites=_finding_sites(description),
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )


def outline_group(
    description: SegmentDescription,
    mask: np.ndarray,
    frames: SourceFrames,
    report_uid: str,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | None:
    """Build a TID 1410 group with the segment's outline on its key frame.

    The outline is the traced boundary of the largest component of the
    segment on the frame where its cross-section is largest, as a closed
    SCOORD POLYLINE in image coordinates of that source frame (pixel centres
    at ``index + 0.5``, PS3.3 C.18.6.1.1). ``None`` for an empty segment.
    """
    frame = key_frame(mask)
    if frame is None:
        return None
    contour = trace_contour(mask[frame])
    if len(np.unique(contour, axis=0)) < 3:  # a pixel or a line: draw its square
        r, c = contour[0]
        contour = np.array(
            [
                [r - 0.5, c - 0.5],
                [r - 0.5, c + 0.5],
                [r + 0.5, c + 0.5],
                [r + 0.5, c - 0.5],
                [r - 0.5, c - 0.5],
            ]
        )
    image, frame_number = frames.reference(frame)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=(contour[:, ::-1] + 0.5).astype(np.float32),
        source_image=hd.sr.SourceImageForRegion.from_source_image(
            image, referenced_frame_numbers=[frame_number] if frame_number else None
        ),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid("outline", report_uid, description.tracking_id),
            identifier=f"{description.tracking_id} outline"[:64],
        ),
        referenced_region=region,
        finding_type=coded_concept(description.property_type),
        finding_category=coded_concept(description.category),
        finding_sites=_finding_sites(description),
    )


def detection_group(
    detection: Detection,
    frames: SourceFrames,
    frame_of_reference_uid: str,
    report_uid: str,
    algorithm: AlgorithmIdentity,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """Build a TID 1410 group for a detection box, in patient coordinates.

    The box (voxel indices, ``box_max`` exclusive) becomes the closed
    rectangle of its pixel edges on its central frame plane, mapped to
    patient coordinates with the source geometry: a SCOORD3D POLYGON (PS3.3
    C.18.9). Its score is a "Certainty of Finding" NUM (DCM 111012, unit 1).
    """
    if not frames.has_patient_geometry:
        raise EncodingError("detections need source images with a patient coordinate system")
    (f0, r0, c0), (f1, r1, c1) = detection.box_min, detection.box_max
    frame = (f0 + f1 - 1) / 2.0
    corners = np.array(
        [
            [frame, r0 - 0.5, c0 - 0.5],
            [frame, r0 - 0.5, c1 - 0.5],
            [frame, r1 - 0.5, c1 - 0.5],
            [frame, r1 - 0.5, c0 - 0.5],
            [frame, r0 - 0.5, c0 - 0.5],
        ]
    )
    region = hd.sr.ImageRegion3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POLYGON,
        graphic_data=frames.to_patient(corners),
        frame_of_reference_uid=frame_of_reference_uid,
    )
    score = hd.sr.Measurement(
        name=coded_concept(CERTAINTY_OF_FINDING),
        value=float(detection.score),
        unit=coded_concept(NO_UNITS),
        algorithm_id=algorithm_id(algorithm),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid("detection", report_uid, detection.tracking_id),
            identifier=detection.tracking_id[:64],
        ),
        referenced_region=region,
        finding_type=coded_concept(detection.finding),
        measurements=[score],
    )


def series_group(
    source_images: Sequence[Dataset],
    measurements: Sequence[Measurement],
    classifications: Sequence[Classification],
    report_uid: str,
    algorithm: AlgorithmIdentity,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """Build the TID 1501 group of whole-series measurements and classifications.

    The group names every source image as "Source of Measurement", so the
    results are tied to the series even when no segment is referenced.
    """
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid("series-measurements", report_uid),
            identifier=f"{algorithm.name} series measurements"[:64],
        ),
        finding_type=coded_concept(CLINICAL_FINDING) if classifications else None,
        measurements=[measurement(m, algorithm) for m in measurements] or None,
        qualitative_evaluations=[qualitative_evaluation(c) for c in classifications] or None,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(image) for image in source_images
        ],
    )


def registration_group(
    registration: Registration, report_uid: str, algorithm: AlgorithmIdentity
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """Build a TID 1501 group naming the prior study a comparison was made with.

    TID 1500 has no row for a prior study, so the group carries three UIDREF
    items (CONTAINS): Study Instance UID (DCM 110180), Series Instance UID
    (DCM 112002) and Frame of Reference UID (DCM 112227) of the prior. The
    registration matrix itself belongs in a Spatial Registration object.
    """
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid("prior", report_uid, registration.prior_study_instance_uid),
            identifier="comparison with prior study",
        ),
        algorithm_id=algorithm_id(algorithm),
    )
    container = group[0]
    for concept, value in (
        (STUDY_INSTANCE_UID, registration.prior_study_instance_uid),
        (SERIES_INSTANCE_UID, registration.prior_series_instance_uid),
        (FRAME_OF_REFERENCE_UID, registration.prior_frame_of_reference_uid),
    ):
        container.ContentSequence.append(
            hd.sr.UIDRefContentItem(
                name=coded_concept(concept),
                value=value,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group
