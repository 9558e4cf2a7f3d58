"""Write a derived image series (MPR, MIP) as single-frame images in the source's study.

One image per frame of :attr:`pipelines.findings.DerivedSeries.voxels`, of
the source's own kind so that every PACS viewer scrolls, windows and
cross-references it like the scanner's reformats:

* CT source: CT Image Storage (PS3.3 A.3); MR source: MR Image Storage
  (A.4, the source's MR acquisition attributes copied); any other source:
  Secondary Capture Image Storage (A.8.1, Modality OT) with the same
  geometry attributes (a Standard Extended SOP Class).
* Image Type ``DERIVED\\SECONDARY\\<value 3>``: ``MIP`` when the derivation is
  DCM 113078 "Maximum intensity projection", ``MINIP`` for DCM 113079
  "Minimum intensity projection" (or a code meaning naming either
  projection), ``REFORMATTED`` for everything else (MPR, DCM 113072).
* Exact geometry (PS3.3 C.7.6.2): frame ``k`` has Image Position (Patient)
  ``origin + k * spacing[0] * slice_direction``, Image Orientation (Patient)
  ``row_direction`` then ``column_direction``, Pixel Spacing
  ``(spacing[1], spacing[2])`` (between rows, between columns), Slice
  Thickness ``slice_thickness`` and Spacing Between Slices ``spacing[0]``;
  the Frame of Reference is the source's.
* Pixel data: int16 with Rescale Slope / Intercept (:func:`encode_pixels`);
  CT values are HU rounded to integers, Rescale Type HU. Window Center /
  Width are the source's, else the data's 1st-99th percentile.
* Provenance: Derivation Description and Derivation Code Sequence (the
  finding's derivation), Source Image Sequence with Purpose of Reference
  DCM 121322 and the Common Instance Reference module (Referenced Series
  Sequence) naming the same images. The sources listed are those whose slab
  the derived image's slab crosses, at most :data:`MAX_SOURCE_REFERENCES`
  of them evenly spaced (a coronal MPR crosses every axial slice: listing
  hundreds per image would bloat every image for no viewer's benefit).
* Identity: series and numbering from the :class:`ResultIdentity`; image
  ``k`` has SOP Instance UID :func:`derived_sop_instance_uid` (the
  identity's for ``k = 0``, name-based UIDs for the others), so a retry
  re-sends the same objects.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DataElementSequence
from pydicom.uid import (
    CTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)

from dicom_sr.codes import (
    MAXIMUM_INTENSITY_PROJECTION,
    MINIMUM_INTENSITY_PROJECTION,
    SOURCE_IMAGE_FOR_PROCESSING,
    coded_concept,
)
from dicom_sr.derived.encoding import (
    StoredPixels,
    data_window,
    ds_values,
    encode_pixels,
    result_skeleton,
    source_window,
)
from dicom_sr.derived.stack import SourceStack, source_stack
from dicom_sr.equipment import contributing_equipment
from dicom_sr.errors import EncodingError
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity, derived_uid
from dicom_sr.sources import finish_result
from pipelines.findings import Code, DerivedSeries

logger = logging.getLogger(__name__)

#: Source images listed per derived image at most (evenly spaced among those it crosses).
MAX_SOURCE_REFERENCES = 16

_UNIT_ATOL = 1e-4
#: MR Image Module attributes (PS3.3 C.8.3.1) copied from an MR source; Type 1
#: ones the source lacks get a neutral value, Type 2 ones an empty value.
_MR_TYPE1 = {"ScanningSequence": "RM", "SequenceVariant": "NONE"}
_MR_TYPE2 = ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength")
_MR_OPTIONAL = (
    "RepetitionTime",
    "InversionTime",
    "TriggerTime",
    "SequenceName",
    "AngioFlag",
    "ImagedNucleus",
    "MagneticFieldStrength",
    "FlipAngle",
    "NumberOfAverages",
    "ImagingFrequency",
    "EchoNumbers",
)


def derived_sop_instance_uid(identity: ResultIdentity, index: int) -> str:
    """SOP Instance UID of the ``index``-th image of a derived series (0: the identity's)."""
    if index == 0:
        return identity.sop_instance_uid
    return derived_uid("derived", identity.sop_instance_uid, str(index))


def image_type_value3(derivation: Code) -> str:
    """Image Type value 3 of a derived image: ``MIP``, ``MINIP`` or ``REFORMATTED``."""
    meaning = derivation.meaning.lower()
    key = (derivation.value, derivation.scheme)
    if key == (MAXIMUM_INTENSITY_PROJECTION.value, MAXIMUM_INTENSITY_PROJECTION.scheme) or (
        "maximum intensity projection" in meaning
    ):
        return "MIP"
    if key == (MINIMUM_INTENSITY_PROJECTION.value, MINIMUM_INTENSITY_PROJECTION.scheme) or (
        "minimum intensity projection" in meaning
    ):
        return "MINIP"
    return "REFORMATTED"


def write_derived_series(
    source_images: Sequence[Dataset],
    derived: DerivedSeries,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
) -> tuple[Dataset, ...]:
    """Write ``derived`` as one single-frame image per frame (module docstring).

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        The images the series was derived from (metadata suffices): one
        series in one Frame of Reference, single-frame images or one
        multi-frame image.
    derived : pipelines.findings.DerivedSeries
        The derived voxels and their geometry.
    identity : ResultIdentity
        Series Instance UID, Series Number and Description of the new series;
        image ``k`` gets Instance Number ``identity.instance_number + k``.
    device, algorithm
        The node (General Equipment) and the algorithm (Contributing Equipment).

    Returns
    -------
    tuple[pydicom.dataset.Dataset, ...]
        The images in frame order, with file meta information.

    Raises
    ------
    SourceImagesError
        When the source images have no common patient geometry.
    EncodingError
        When the derived geometry is not orthonormal or a voxel is not finite.
    """
    stack = source_stack(source_images)
    directions = _check_geometry(derived)
    source = source_images[0]
    modality = str(source.get("Modality", ""))
    pixels = encode_pixels(derived.voxels, round_to_integers=modality == "CT")
    window = source_window(source)
    if window is None:
        center, width = data_window(derived.voxels)
        window = ([center], [width], None)
    now = dt.datetime.now()
    images = []
    for index in range(derived.voxels.shape[0]):
        image = _image(source, modality, derived, index, identity, device, algorithm, now)
        _set_geometry(image, derived, directions, index)
        _set_pixels(image, pixels, index, modality, window)
        _set_references(image, stack, derived, directions, index)
        finish_result(image, source)
        images.append(image)
    logger.info(
        "wrote %d derived images (%s) in series %s",
        len(images),
        derived.description,
        identity.series_instance_uid,
    )
    return tuple(images)


def _check_geometry(derived: DerivedSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row, column, normal = (
        np.asarray(v, dtype=float)
        for v in (derived.row_direction, derived.column_direction, derived.slice_direction)
    )
    axes = np.stack([row, column])
    if not np.allclose(axes @ axes.T, np.eye(2), atol=_UNIT_ATOL):
        raise EncodingError(f"derived series {derived.description!r}: directions not orthonormal")
    if abs(abs(float(normal @ np.cross(row, column))) - 1.0) > _UNIT_ATOL:
        raise EncodingError(
            f"derived series {derived.description!r}: slice direction is not normal to the plane"
        )
    if any(not s > 0 for s in derived.spacing) or not derived.slice_thickness > 0:
        raise EncodingError(f"derived series {derived.description!r}: spacing must be positive")
    return row, column, normal


def _storage(modality: str) -> tuple[str, str]:
    if modality == "CT":
        return CTImageStorage, "CT"
    if modality == "MR":
        return MRImageStorage, "MR"
    return SecondaryCaptureImageStorage, "OT"


def _image(
    source: Dataset,
    modality: str,
    derived: DerivedSeries,
    index: int,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
    now: dt.datetime,
) -> Dataset:
    """Every module but geometry, pixels and references."""
    sop_class_uid, result_modality = _storage(modality)
    sop_instance_uid = derived_sop_instance_uid(identity, index)
    ds = result_skeleton(
        sop_class_uid, sop_instance_uid, result_modality, source, identity, device, now
    )
    ds.InstanceNumber = identity.instance_number + index
    ds.ImageType = ["DERIVED", "SECONDARY", image_type_value3(derived.derivation)]
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = (
        f"{derived.description}; {algorithm.name} {algorithm.version}; "
        f"{device.content_qualification.value.lower()} use"
    )[:10240]
    ds.DerivationDescription = (
        f"{derived.description} of series {source.SeriesInstanceUID} "
        f"by {algorithm.name} {algorithm.version}"
    )[:1024]
    ds.DerivationCodeSequence = DataElementSequence([coded_concept(derived.derivation)])
    if source.get("LossyImageCompression") == "01":  # PS3.3 C.7.6.1.1.5: once lossy, always
        ds.LossyImageCompression = "01"
    ds.ContributingEquipmentSequence = DataElementSequence(
        contributing_equipment(device, algorithm)
    )
    _set_modality_attributes(ds, source, result_modality)
    return ds


def _set_modality_attributes(ds: Dataset, source: Dataset, modality: str) -> None:
    if modality in ("CT", "MR"):
        ds.PatientPosition = source.get("PatientPosition", "")
    if modality == "CT":
        ds.KVP = source.get("KVP", "")
        ds.AcquisitionNumber = ""
    elif modality == "MR":
        for keyword, default in _MR_TYPE1.items():
            if keyword in source:
                ds[keyword] = source[keyword]
            else:
                setattr(ds, keyword, default)
        for keyword in _MR_TYPE2:
            if keyword in source:
                ds[keyword] = source[keyword]
            else:
                setattr(ds, keyword, None)
        for keyword in _MR_OPTIONAL:
            if keyword in source:
                ds[keyword] = source[keyword]
        scanning, variant = _values(ds.ScanningSequence), _values(ds.SequenceVariant)
        if "RepetitionTime" not in ds and ("EP" not in scanning or "SK" in variant):
            ds.RepetitionTime = None  # Type 2C: required except for EP without SK
    else:
        ds.ConversionType = "WSD"


def _values(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]  # type: ignore[attr-defined]


def _position(derived: DerivedSeries, normal: np.ndarray, index: int) -> np.ndarray:
    result: np.ndarray = (
        np.asarray(derived.origin, dtype=float) + index * derived.spacing[0] * normal
    )
    return result


def _set_geometry(
    ds: Dataset,
    derived: DerivedSeries,
    directions: tuple[np.ndarray, np.ndarray, np.ndarray],
    index: int,
) -> None:
    row, column, normal = directions
    position = _position(derived, normal, index)
    if ds.Modality == "OT":  # SC: Patient Orientation is Type 2C (no Image Plane module)
        ds.PatientOrientation = [_orientation_letters(row), _orientation_letters(column)]
    ds.ImagePositionPatient = ds_values(position)
    ds.ImageOrientationPatient = ds_values([*row, *column])
    ds.PixelSpacing = ds_values([derived.spacing[1], derived.spacing[2]])
    ds.SliceThickness = ds_values([derived.slice_thickness])[0]
    ds.SpacingBetweenSlices = ds_values([derived.spacing[0]])[0]
    ds.SliceLocation = ds_values([float(position @ np.cross(row, column))])[0]


def _orientation_letters(vector: np.ndarray) -> str:
    """Patient Orientation (PS3.3 C.7.6.1.1.1) of a direction: main axis first."""
    letters = (("R", "L"), ("A", "P"), ("F", "H"))
    text = ""
    for axis in np.argsort(-np.abs(vector)):
        if abs(vector[axis]) > 0.25:
            text += letters[axis][int(vector[axis] > 0)]
    return text


def _set_pixels(
    ds: Dataset,
    pixels: StoredPixels,
    index: int,
    modality: str,
    window: tuple[list[float], list[float], str | None],
) -> None:
    frame = pixels.values[index]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(frame.shape[0]), int(frame.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.ascontiguousarray(frame, dtype="<i2").tobytes()
    rescaled = pixels.slope != 1.0 or pixels.intercept != 0.0
    if modality != "MR" or rescaled:  # the MR Image IOD has no Modality LUT module
        ds.RescaleIntercept = ds_values([pixels.intercept])[0]
        ds.RescaleSlope = ds_values([pixels.slope])[0]
        ds.RescaleType = "HU" if modality == "CT" else "US"
    centers, widths, explanation = window
    ds.WindowCenter = ds_values(centers) if len(centers) > 1 else ds_values(centers)[0]
    ds.WindowWidth = ds_values(widths) if len(widths) > 1 else ds_values(widths)[0]
    if explanation:
        ds.WindowCenterWidthExplanation = explanation


def _set_references(
    ds: Dataset,
    stack: SourceStack,
    derived: DerivedSeries,
    directions: tuple[np.ndarray, np.ndarray, np.ndarray],
    index: int,
) -> None:
    frames = _crossed_frames(stack, derived, directions, index)
    items = []
    for frame in frames:
        item = Dataset()
        image = stack.images[frame]
        item.ReferencedSOPClassUID = image.SOPClassUID
        item.ReferencedSOPInstanceUID = image.SOPInstanceUID
        number = stack.frame_numbers[frame]
        if number is not None:
            item.ReferencedFrameNumber = number
        item.PurposeOfReferenceCodeSequence = DataElementSequence(
            [coded_concept(SOURCE_IMAGE_FOR_PROCESSING)]
        )
        items.append(item)
    ds.SourceImageSequence = DataElementSequence(items)
    instances = []
    for uid in dict.fromkeys(str(stack.images[f].SOPInstanceUID) for f in frames):
        image = next(i for i in stack.images if str(i.SOPInstanceUID) == uid)
        instance = Dataset()
        instance.ReferencedSOPClassUID = image.SOPClassUID
        instance.ReferencedSOPInstanceUID = image.SOPInstanceUID
        instances.append(instance)
    series = Dataset()
    series.SeriesInstanceUID = stack.images[0].SeriesInstanceUID
    series.ReferencedInstanceSequence = DataElementSequence(instances)
    ds.ReferencedSeriesSequence = DataElementSequence([series])


def _crossed_frames(
    stack: SourceStack,
    derived: DerivedSeries,
    directions: tuple[np.ndarray, np.ndarray, np.ndarray],
    index: int,
) -> list[int]:
    """Source frames whose slab the derived image's slab crosses (evenly thinned)."""
    row, column, normal = directions
    rows, columns = derived.voxels.shape[1:]
    position = _position(derived, normal, index)
    half = derived.slice_thickness / 2.0
    corners = np.array(
        [
            position
            + r * derived.spacing[1] * column
            + c * derived.spacing[2] * row
            + s * half * normal
            for r in (0, rows - 1)
            for c in (0, columns - 1)
            for s in (-1.0, 1.0)
        ]
    )
    projected = corners @ stack.normal
    distances = stack.positions @ stack.normal
    source_half = abs(stack.slice_spacing) / 2.0
    margin = 1e-3
    crossed = np.flatnonzero(
        (distances > projected.min() - source_half + margin)
        & (distances < projected.max() + source_half - margin)
    )
    if crossed.size == 0:  # outside the source's extent: the nearest frame
        centre = float(position @ stack.normal)
        crossed = np.array([int(np.argmin(np.abs(distances - centre)))])
    if crossed.size > MAX_SOURCE_REFERENCES:
        picks = np.unique(np.round(np.linspace(0, crossed.size - 1, MAX_SOURCE_REFERENCES)))
        crossed = crossed[picks.astype(int)]
    return [int(f) for f in crossed]
