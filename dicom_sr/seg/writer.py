"""Write segments as a binary DICOM Segmentation (PS3.3 A.51).

One instance holds every segment of a :class:`~pipelines.findings.Findings`,
in the study of the source images (Patient, Study and Frame of Reference are
copied from them), with one frame per segment and source image that contains
any of the segment (empty frames are omitted, PS3.3 C.8.20.2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_sr.codes import coded_concept
from dicom_sr.equipment import result_object_arguments
from dicom_sr.errors import EncodingError
from dicom_sr.geometry import SourceFrames, source_frames
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity, derived_uid
from dicom_sr.profile import SEG_TRANSFER_SYNTAXES, SegmentationType, ViewerProfile
from dicom_sr.sources import check_algorithm, check_source_images, finish_result
from pipelines.findings import Findings, Segment, SegmentDescription

logger = logging.getLogger(__name__)

#: Transfer syntaxes a segmentation can be written in (highdicom 0.28
#: encodes 1-bit frames natively or as JPEG 2000 lossless only).
SEGMENTATION_TRANSFER_SYNTAXES = SEG_TRANSFER_SYNTAXES

_MAX_LO = 64


def segment_tracking_uid(segmentation_sop_instance_uid: str, segment_number: int) -> str:
    """Return the Tracking UID (0062,0021) of a segment.

    Derived from the SEG instance and the segment number, so a retry writes
    the same UID and the SR writer can find it again in the SEG.
    """
    return derived_uid("segment", segmentation_sop_instance_uid, str(segment_number))


def algorithm_identification(algorithm: AlgorithmIdentity) -> hd.AlgorithmIdentificationSequence:
    """Encode the Algorithm Identification Macro (PS3.3 Table 10-19)."""
    parameters = algorithm.all_parameters()
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=coded_concept(algorithm.family),
        version=algorithm.version,
        source=algorithm.source,
        parameters=parameters or None,
    )


def write_segmentation(
    source_images: Sequence[Dataset],
    findings: Findings,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
    *,
    transfer_syntax_uid: str | None = None,
    profile: ViewerProfile | None = None,
) -> hd.seg.Segmentation:
    """Write the segments of ``findings`` as one Segmentation instance.

    Implements the Segmentation IOD (PS3.3 A.51) with the Segmentation Image
    Module (C.8.20.2) and its Segment Description Macro (Table C.8.20-4).
    Every segment is AUTOMATIC, identified by ``algorithm``, tracked by its
    ``tracking_id`` and a derived Tracking UID (:func:`segment_tracking_uid`)
    and coloured by its sRGB colour converted to CIELab. Content Creator's
    Name (Type 2) stays empty: no person created the content. The algorithm
    is listed in the Contributing Equipment Sequence (IHE AIR), and the
    Patient and Study modules are copied exactly from the source.

    Every frame references its source frame in the Derivation Image
    Sequence and carries the source frame's Plane Position (Patient); the
    Referenced Series Sequence lists every source instance (OHIF and Weasis
    need both). A multi-frame source (one Enhanced CT/MR instance) is
    referenced frame by frame through ``findings.source_frame_numbers``.

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        Single-frame source images in the order of
        ``findings.source_sop_instance_uids``; metadata suffices.
    findings : pipelines.findings.Findings
        Findings with at least one segment, numbered 1..N.
    identity : ResultIdentity
        UIDs, number and description of the SEG instance and series.
    device : DeviceIdentity
        The node, recorded as equipment.
    algorithm : AlgorithmIdentity
        The algorithm that produced ``findings``.
    transfer_syntax_uid : str | None
        Overrides ``profile.transfer_syntax_uid`` when given.
    profile : ViewerProfile | None
        Segmentation type, empty frames and transfer syntax; BINARY with
        empty frames omitted in Explicit VR Little Endian when ``None``.

    Returns
    -------
    highdicom.seg.Segmentation
        The instance, a :class:`pydicom.dataset.Dataset` with file meta.

    Raises
    ------
    SourceImagesError
        When the source images are not the findings' source in frame order.
    IdentityError
        When ``algorithm`` is not the findings' pipeline.
    EncodingError
        When the segments cannot be encoded (none, numbering, shape,
        transfer syntax).
    """
    check_source_images(source_images, findings)
    check_algorithm(findings, algorithm)
    profile = profile or ViewerProfile()
    transfer_syntax_uid = transfer_syntax_uid or profile.transfer_syntax_uid
    if UID(transfer_syntax_uid) not in SEGMENTATION_TRANSFER_SYNTAXES:
        raise EncodingError(f"transfer syntax {transfer_syntax_uid} is not supported for SEG")
    segments = _ordered_segments(findings)
    _check_geometry(source_images, segments, len(findings.source_sop_instance_uids))
    frames = source_frames(source_images, findings)
    segmentation_type = profile.segmentation_type
    descriptions = [
        _segment_description(segment.description, identity, algorithm) for segment in segments
    ]
    try:
        segmentation = hd.seg.Segmentation(
            source_images=source_images,
            pixel_array=_pixel_array(segments, frames, segmentation_type),
            segmentation_type=hd.seg.SegmentationTypeValues(segmentation_type.value),
            segment_descriptions=descriptions,
            content_description=identity.series_description,
            transfer_syntax_uid=transfer_syntax_uid,
            omit_empty_frames=profile.omit_empty_frames,
            **result_object_arguments(identity, device, algorithm),
        )
    except ValueError as exc:
        raise EncodingError(f"cannot encode segmentation: {exc}") from exc
    finish_result(segmentation, source_images[0])
    logger.info(
        "wrote SEG %s: %d segments, %d frames from %d source images",
        identity.sop_instance_uid,
        len(descriptions),
        int(segmentation.NumberOfFrames),
        len(source_images),
    )
    return segmentation


def _ordered_segments(findings: Findings) -> list[Segment]:
    """Return the segments by number, checking they are numbered 1..N."""
    segments = sorted(findings.segments, key=lambda s: s.description.number)
    if not segments:
        raise EncodingError("findings have no segments to write")
    numbers = [s.description.number for s in segments]
    if numbers != list(range(1, len(numbers) + 1)):
        raise EncodingError(
            f"segment numbers must run 1..{len(numbers)} without gaps (PS3.3 C.8.20.2), "
            f"got {numbers}"
        )
    for segment in segments:
        if len(segment.description.label) > _MAX_LO:
            raise EncodingError(f"segment label longer than 64: {segment.description.label!r}")
    return segments


def _check_geometry(
    source_images: Sequence[Dataset], segments: Sequence[Segment], n_frames: int
) -> None:
    """Check every mask matches the source matrix, frame for frame."""
    shape = (n_frames, int(source_images[0].Rows), int(source_images[0].Columns))
    for image in source_images:
        if (int(image.Rows), int(image.Columns)) != shape[1:]:
            raise EncodingError("source images differ in Rows or Columns")
    for segment in segments:
        if segment.mask.shape != shape:
            raise EncodingError(
                f"segment {segment.description.label} has shape {segment.mask.shape}, "
                f"source images have {shape}"
            )


def _pixel_array(
    segments: Sequence[Segment], frames: SourceFrames, segmentation_type: SegmentationType
) -> np.ndarray:
    """Hand the masks to highdicom in the cheapest form that holds them all.

    One mask goes as it is (no copy). Masks that do not overlap go as one
    label map (one byte per voxel, whatever the number of segments); only
    overlapping masks are stacked as a [frame, row, column, segment] array
    (refused for LABELMAP, which cannot hold overlaps). For a multi-frame
    source the frames are put in the source's frame order.
    """
    if len(segments) == 1:
        array = segments[0].mask
    else:
        labels = _label_map(segments)
        if labels is not None:
            array = labels
        elif segmentation_type is SegmentationType.LABELMAP:
            raise EncodingError("segments overlap: a LABELMAP segmentation cannot hold them")
        else:
            logger.debug("segments overlap: stacking %d masks", len(segments))
            array = _stack_masks(segments)
    if segmentation_type is SegmentationType.LABELMAP and array.dtype == np.bool_:
        array = array.view(np.uint8)
    if frames.is_multiframe:
        array = _in_source_frame_order(array, frames)
    return array


def _in_source_frame_order(array: np.ndarray, frames: SourceFrames) -> np.ndarray:
    """Place findings frames at their source frame index (others stay empty)."""
    n_source = int(frames.images[0].NumberOfFrames)
    numbers = np.asarray(frames.frame_numbers, dtype=np.intp) - 1
    if len(numbers) == n_source and np.array_equal(numbers, np.arange(n_source)):
        return array
    ordered = np.zeros((n_source, *array.shape[1:]), dtype=array.dtype)
    ordered[numbers] = array
    return ordered


def segments_overlap(findings: Findings) -> bool:
    """Whether two segments of ``findings`` share a voxel (then no LABELMAP can hold them)."""
    if len(findings.segments) < 2:
        return False
    covered = np.zeros(findings.segments[0].mask.shape, dtype=np.bool_)
    for segment in findings.segments:
        if np.logical_and(covered, segment.mask).any():
            return True
        covered |= segment.mask
    return False


def _label_map(segments: Sequence[Segment]) -> np.ndarray | None:
    """Return the masks as one label map, or ``None`` if any two overlap."""
    dtype = np.uint8 if len(segments) <= np.iinfo(np.uint8).max else np.uint16
    labels = np.zeros(segments[0].mask.shape, dtype=dtype)
    for segment in segments:
        if labels[segment.mask].any():
            return None
        labels[segment.mask] = segment.description.number
    return labels


def _stack_masks(segments: Sequence[Segment]) -> np.ndarray:
    """Stack the masks as highdicom's [frame, row, column, segment] array.

    The masks are copied once into a segment-major buffer and handed over as
    a [frame, row, column, segment] view, so each segment's plane highdicom
    reads is contiguous (three times faster than ``np.stack(axis=-1)``).
    """
    stacked = np.empty((len(segments), *segments[0].mask.shape), dtype=np.bool_)
    for index, segment in enumerate(segments):
        stacked[index] = segment.mask
    return np.moveaxis(stacked, 0, -1)


def _segment_description(
    description: SegmentDescription,
    identity: ResultIdentity,
    algorithm: AlgorithmIdentity,
) -> hd.seg.SegmentDescription:
    """Encode one Segment Description Macro item (PS3.3 Table C.8.20-4)."""
    region = description.anatomic_region
    try:
        color = hd.color.CIELabColor.from_rgb(*description.color_rgb)
    except ValueError as exc:
        raise EncodingError(f"bad colour for segment {description.label}: {exc}") from exc
    return hd.seg.SegmentDescription(
        segment_number=description.number,
        segment_label=description.label,
        segmented_property_category=coded_concept(description.category),
        segmented_property_type=coded_concept(description.property_type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(algorithm),
        tracking_uid=segment_tracking_uid(identity.sop_instance_uid, description.number),
        tracking_id=description.tracking_id,
        anatomic_regions=[coded_concept(region)] if region is not None else None,
        display_color=color,
    )
