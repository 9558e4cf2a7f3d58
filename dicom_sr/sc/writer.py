"""Write the segment outlines burned into Secondary Capture images.

For PACS viewers that show neither SEG nor SR: one Secondary Capture Image
(PS3.3 A.8.1, RGB) per frame shown, the source frame windowed as the source
asks with every segment outlined in its colour, a legend and the words "not
for primary diagnosis" burned in. Image Type is DERIVED\\SECONDARY, Burned In
Annotation YES, and each image references its source frame in the Source
Image Sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DataElementSequence
from pydicom.uid import ExplicitVRLittleEndian

from dicom_sr.equipment import contributing_equipment, set_general_equipment
from dicom_sr.errors import EncodingError
from dicom_sr.geometry import SourceFrames, source_frames
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity, derived_uid
from dicom_sr.profile import ScFrames
from dicom_sr.render import DISCLAIMER, frames_to_show, render_frame
from dicom_sr.sources import check_algorithm, check_source_images, finish_result
from pipelines.findings import Findings, Segment

logger = logging.getLogger(__name__)


def sc_sop_instance_uid(identity: ResultIdentity, index: int) -> str:
    """SOP Instance UID of the ``index``-th image of the SC series (0: the identity's)."""
    if index == 0:
        return identity.sop_instance_uid
    return derived_uid("sc", identity.sop_instance_uid, str(index))


def write_secondary_captures(
    source_images: Sequence[Dataset],
    findings: Findings,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
    *,
    frames: ScFrames = ScFrames.KEY,
) -> tuple[Dataset, ...]:
    """Write one Secondary Capture image per frame shown.

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        The source images, with pixel data.
    findings : pipelines.findings.Findings
        Findings with segments.
    identity : ResultIdentity
        Series of the images; the ``k``-th image (from 0) has SOP Instance
        UID :func:`sc_sop_instance_uid` and Instance Number
        ``identity.instance_number + k``.
    device, algorithm
        As for the other writers.
    frames : ScFrames
        ``KEY``: ``findings.key_frames`` or each segment's largest
        cross-section; ``ALL``: every frame.

    Returns
    -------
    tuple[pydicom.dataset.Dataset, ...]
        The images in frame order (empty when no segment has a pixel).
    """
    check_source_images(source_images, findings)
    check_algorithm(findings, algorithm)
    if not findings.segments:
        raise EncodingError("findings have no segments to draw")
    geometry = source_frames(source_images, findings)
    shown = frames_to_show(findings, frames is ScFrames.ALL)
    segments = sorted(findings.segments, key=lambda s: s.description.number)
    images = tuple(
        _image(geometry, segments, frame, index, identity, device, algorithm)
        for index, frame in enumerate(shown)
    )
    logger.info("wrote %d SC images in series %s", len(images), identity.series_instance_uid)
    return images


def _image(
    geometry: SourceFrames,
    segments: Sequence[Segment],
    frame: int,
    index: int,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
) -> Dataset:
    source, frame_number = geometry.reference(frame)
    pixels = render_frame(geometry, segments, frame)
    spacing = geometry.pixel_spacing
    pixel_spacing = tuple(float(v) for v in spacing) if spacing is not None else None
    try:
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=identity.series_instance_uid,
            series_number=identity.series_number,
            sop_instance_uid=sc_sop_instance_uid(identity, index),
            instance_number=identity.instance_number + index,
            manufacturer=device.manufacturer,
            # highdicom 0.28 annotates this as tuple[int, int]; SCImage takes floats
            pixel_spacing=pixel_spacing,  # type: ignore[arg-type]
            patient_orientation=_patient_orientation(geometry),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            contributing_equipment=contributing_equipment(device, algorithm),
        )
    except ValueError as exc:
        raise EncodingError(f"cannot encode secondary capture: {exc}") from exc
    image.SeriesDescription = identity.series_description
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.BurnedInAnnotation = "YES"
    if "Laterality" not in image:
        image.Laterality = ""  # Type 2C: unknown for a derived image of any body part
    image.ImageComments = f"{DISCLAIMER}; {algorithm.name} {algorithm.version}"
    image.DerivationDescription = f"Segment outlines of {algorithm.name} {algorithm.version}"[:1024]
    set_general_equipment(image, device)
    image.SourceImageSequence = DataElementSequence([_source_item(source, frame_number)])
    finish_result(image, source)
    return image


def _source_item(source: Dataset, frame_number: int | None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if frame_number is not None:
        item.ReferencedFrameNumber = frame_number
    return item


def _patient_orientation(geometry: SourceFrames) -> tuple[str, str]:
    """Patient Orientation (0020,0020) of rows and columns from Image Orientation."""
    if geometry.orientation is None:
        return ("L", "P")  # no geometry: axial by convention
    row, column = geometry.orientation[:3], geometry.orientation[3:]
    return _direction(row), _direction(column)


def _direction(vector: np.ndarray) -> str:
    letters = (("R", "L"), ("A", "P"), ("F", "H"))
    order = np.argsort(-np.abs(vector))
    text = ""
    for axis in order:
        if abs(vector[axis]) > 0.25:
            text += letters[axis][int(vector[axis] > 0)]
    return text or "L"
