"""Load a DICOM image series into one 3-D volume in patient coordinates.

Two inputs are understood:

* a stack of single-frame images (CT, MR, PT, ...), whose geometry comes from
  the Image Plane Module (PS3.3 C.7.6.2) and whose modality values come from
  the Modality LUT Module's Rescale Slope / Intercept (PS3.3 C.11.1);
* one enhanced multi-frame image (Enhanced CT / MR, PS3.3 A.38 / A.36), whose
  geometry and rescale come from the Plane Position (Patient), Plane
  Orientation (Patient), Pixel Measures and Pixel Value Transformation
  functional group macros (PS3.3 C.7.6.16.2), per frame or shared.

Frames are sorted along the slice normal (row direction x column direction,
PS3.3 C.7.6.2.1.1) by the projection of Image Position (Patient) on it, so
frame 0 is the lowest position along the normal. The slice spacing is
measured from those positions, never taken from Slice Thickness (which is a
reconstruction property and may differ from the spacing).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.utils import pixel_array

from pipelines.errors import InputError
from pipelines.header import series_header
from pipelines.planar import is_planar, load_planar
from pipelines.volume_types import DECODE_ERRORS, Vector3, Volume

__all__ = ["Vector3", "Volume", "load_volume"]

logger = logging.getLogger(__name__)

_MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_ORIENTATION_ATOL = 1e-3  # direction cosines
_PIXEL_SPACING_RTOL = 1e-3
_DUPLICATE_MM = 1e-2  # two frames closer than this along the normal are one location


def _position_tolerance_mm(spacing: float) -> float:
    """How far a frame may sit from the regular grid before the stack is refused."""
    return max(0.05, 0.02 * spacing)


@dataclass(frozen=True)
class _Frame:
    """Geometry and rescale of one frame, before sorting."""

    source_index: int
    frame_number: int
    sop_instance_uid: str
    position: Vector3
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    thickness: float | None
    spacing_between_slices: float | None


def load_volume(datasets: Sequence[Dataset]) -> Volume:
    """Assemble one series into a :class:`Volume` sorted along the slice normal.

    Parameters
    ----------
    datasets : Sequence[pydicom.dataset.Dataset]
        Either single-frame images of one series in any order, or exactly one
        enhanced multi-frame image (PS3.3 C.7.6.16). Compressed transfer
        syntaxes are decoded by pydicom's pixel data handlers.

    Returns
    -------
    Volume
        Voxels in modality units, frame 0 the lowest along the normal.

    Raises
    ------
    InputError
        When there are no images or no pixel data, when geometry (Image
        Position / Orientation (Patient), Pixel Spacing) is missing or
        inconsistent (differing orientations, duplicate or irregular
        positions), when image sizes differ, or when images are not monochrome.
    """
    if not datasets:
        raise InputError("no images to load")
    if len(datasets) == 1 and is_planar(datasets[0]):
        return load_planar(datasets[0])
    for index, ds in enumerate(datasets):
        _check_image(ds, index)
    _check_same_series(datasets)
    frames = _collect_frames(datasets)
    row, column, normal, pixel_spacing = _common_orientation(frames)
    order, slice_spacing, step = _sort_along_normal(frames, normal)
    sorted_frames = [frames[i] for i in order]
    voxels = _decode(datasets, sorted_frames)
    first = datasets[0]
    volume = Volume(
        voxels=voxels,
        spacing=(slice_spacing, pixel_spacing[0], pixel_spacing[1]),
        origin=sorted_frames[0].position,
        row_direction=row,
        column_direction=column,
        slice_direction=normal,
        sop_instance_uids=tuple(f.sop_instance_uid for f in sorted_frames),
        source_frame_numbers=tuple(f.frame_number for f in sorted_frames),
        source_indices=tuple(f.source_index for f in sorted_frames),
        modality=str(first.get("Modality", "")),
        series_instance_uid=str(first.get("SeriesInstanceUID", "")),
        frame_step=step,
        sop_class_uid=str(first.get("SOPClassUID", "")) or None,
        header=series_header(
            datasets,
            [f.source_index for f in sorted_frames],
            [f.frame_number for f in sorted_frames],
        ),
    )
    logger.debug("loaded volume %s spacing %s", volume.shape, volume.spacing)
    return volume


def _check_image(ds: Dataset, index: int) -> None:
    """Refuse an image without pixel data, with colour pixels or without a UID."""
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise InputError(f"image {index} has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in _MONOCHROME or samples != 1:
        raise InputError(
            f"image {index} is not monochrome (Photometric Interpretation "
            f"{photometric or 'missing'}, {samples} samples per pixel)"
        )
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError(f"image {index} has no Rows / Columns")
    if not ds.get("SOPInstanceUID"):
        raise InputError(f"image {index} has no SOP Instance UID")
    if "ModalityLUTSequence" in ds:
        raise InputError(f"image {index} uses a Modality LUT Sequence, which is not supported")


def _check_same_series(datasets: Sequence[Dataset]) -> None:
    """All images share series, frame of reference, modality and matrix size."""
    if len(datasets) > 1 and any(_is_multi_frame(ds) for ds in datasets):
        raise InputError("expected one multi-frame image or a stack of single-frame images")
    for keyword in ("SeriesInstanceUID", "FrameOfReferenceUID", "Modality", "SOPClassUID"):
        values = {str(ds.get(keyword, "")) for ds in datasets}
        if len(values) > 1:
            raise InputError(f"images differ in {keyword} ({len(values)} distinct values)")
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        raise InputError(f"images differ in size (rows, columns): {sorted(sizes)}")


def _n_frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _is_multi_frame(ds: Dataset) -> bool:
    """An enhanced (functional group) image, or any image with several frames."""
    return _n_frames(ds) > 1 or "PerFrameFunctionalGroupsSequence" in ds


def _floats(value: object, count: int, what: str) -> tuple[float, ...]:
    """``count`` numbers from a DS value, or InputError naming ``what``."""
    if value is None:
        raise InputError(f"{what} is missing")
    items: list[Any] = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not numeric") from exc
    if len(numbers) != count or not all(np.isfinite(numbers)):
        raise InputError(f"{what} must have {count} finite values, got {len(numbers)}")
    return numbers


def _optional_float(value: object) -> float | None:
    """A positive finite number from a DS / IS value, or ``None``."""
    if not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if np.isfinite(number) and number > 0 else None


def _collect_frames(datasets: Sequence[Dataset]) -> list[_Frame]:
    """Geometry and rescale of every frame, in the order given."""
    if len(datasets) == 1 and _is_multi_frame(datasets[0]):
        return _enhanced_frames(datasets[0])
    return [_single_frame(ds, index) for index, ds in enumerate(datasets)]


def _single_frame(ds: Dataset, index: int) -> _Frame:
    """Geometry of a single-frame image from its Image Plane Module (C.7.6.2)."""
    where = f"image {index}"
    return _Frame(
        source_index=index,
        frame_number=1,
        sop_instance_uid=str(ds.SOPInstanceUID),
        position=_position(ds.get("ImagePositionPatient"), where),
        orientation=_floats(
            ds.get("ImageOrientationPatient"), 6, f"{where}: Image Orientation (Patient)"
        ),
        pixel_spacing=_pixel_spacing(ds.get("PixelSpacing"), where),
        slope=_optional_float(ds.get("RescaleSlope")) or 1.0,
        intercept=_intercept(ds.get("RescaleIntercept"), where),
        thickness=_optional_float(ds.get("SliceThickness")),
        spacing_between_slices=_optional_float(ds.get("SpacingBetweenSlices")),
    )


def _position(value: object, where: str) -> Vector3:
    x, y, z = _floats(value, 3, f"{where}: Image Position (Patient)")
    return x, y, z


def _pixel_spacing(value: object, where: str) -> tuple[float, float]:
    row_spacing, column_spacing = _floats(value, 2, f"{where}: Pixel Spacing")
    return row_spacing, column_spacing


def _intercept(value: object, where: str) -> float:
    if value is None or value == "":
        return 0.0
    (intercept,) = _floats(value, 1, f"{where}: Rescale Intercept")
    return intercept


def _group_item(per_frame: Dataset | None, shared: Dataset | None, keyword: str) -> Dataset | None:
    """First item of functional group ``keyword``, per-frame before shared (C.7.6.16)."""
    for groups in (per_frame, shared):
        if groups is not None and keyword in groups and len(groups[keyword].value) > 0:
            item: Dataset = groups[keyword].value[0]
            return item
    return None


def _enhanced_frames(ds: Dataset) -> list[_Frame]:
    """Geometry of every frame of an enhanced multi-frame image (C.7.6.16.2)."""
    n_frames = _n_frames(ds)
    per_frame_groups = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame_groups is None or len(per_frame_groups) != n_frames:
        raise InputError(
            f"multi-frame image has {n_frames} frames but no matching "
            "Per-frame Functional Groups Sequence"
        )
    shared_groups = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_groups[0] if shared_groups else None
    sop_instance_uid = str(ds.SOPInstanceUID)
    return [
        _enhanced_frame(per_frame, shared, number, sop_instance_uid)
        for number, per_frame in enumerate(per_frame_groups, start=1)
    ]


def _enhanced_frame(
    per_frame: Dataset, shared: Dataset | None, number: int, sop_instance_uid: str
) -> _Frame:
    """One frame's geometry and rescale from its functional groups.

    Plane Position (Patient), Plane Orientation (Patient), Pixel Measures and
    Pixel Value Transformation (PS3.3 C.7.6.16.2), per-frame before shared.
    """
    where = f"frame {number}"
    position = _group_item(per_frame, shared, "PlanePositionSequence")
    orientation = _group_item(per_frame, shared, "PlaneOrientationSequence")
    measures = _group_item(per_frame, shared, "PixelMeasuresSequence")
    rescale = _group_item(per_frame, shared, "PixelValueTransformationSequence")
    if position is None or orientation is None or measures is None:
        raise InputError(f"{where}: plane position, plane orientation or pixel measures missing")
    rescale = rescale if rescale is not None else Dataset()
    return _Frame(
        source_index=0,
        frame_number=number,
        sop_instance_uid=sop_instance_uid,
        position=_position(position.get("ImagePositionPatient"), where),
        orientation=_floats(
            orientation.get("ImageOrientationPatient"), 6, f"{where}: Image Orientation (Patient)"
        ),
        pixel_spacing=_pixel_spacing(measures.get("PixelSpacing"), where),
        slope=_optional_float(rescale.get("RescaleSlope")) or 1.0,
        intercept=_intercept(rescale.get("RescaleIntercept"), where),
        thickness=_optional_float(measures.get("SliceThickness")),
        spacing_between_slices=_optional_float(measures.get("SpacingBetweenSlices")),
    )


def _common_orientation(
    frames: Sequence[_Frame],
) -> tuple[Vector3, Vector3, Vector3, tuple[float, float]]:
    """Row, column and normal unit vectors and pixel spacing shared by all frames."""
    orientations = np.array([f.orientation for f in frames], dtype=float)
    if np.abs(orientations - orientations[0]).max() > _ORIENTATION_ATOL:
        raise InputError("images have differing Image Orientation (Patient)")
    spacings = np.array([f.pixel_spacing for f in frames], dtype=float)
    if np.any(spacings <= 0):
        raise InputError("Pixel Spacing must be positive")
    if np.abs(spacings - spacings[0]).max() > _PIXEL_SPACING_RTOL * spacings[0].max():
        raise InputError("images have differing Pixel Spacing")
    row = orientations[0, :3]
    column = orientations[0, 3:]
    row_norm, column_norm = np.linalg.norm(row), np.linalg.norm(column)
    if row_norm < 0.5 or column_norm < 0.5:
        raise InputError("Image Orientation (Patient) has a zero direction")
    row, column = row / row_norm, column / column_norm
    if abs(float(np.dot(row, column))) > _ORIENTATION_ATOL:
        raise InputError("Image Orientation (Patient) directions are not orthogonal")
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    return _vec(row), _vec(column), _vec(normal), (float(spacings[0, 0]), float(spacings[0, 1]))


def _vec(values: np.ndarray) -> Vector3:
    return float(values[0]), float(values[1]), float(values[2])


def _sort_along_normal(
    frames: Sequence[_Frame], normal: Vector3
) -> tuple[np.ndarray, float, Vector3 | None]:
    """Frame order, slice spacing and (for a sheared stack) the frame step.

    Refuses duplicate locations, irregular spacing and positions that do not
    lie on one straight line (several stacks, localizers mixed in).
    """
    positions = np.array([f.position for f in frames], dtype=float)
    distances = positions @ np.asarray(normal)
    order = np.argsort(distances, kind="stable")
    if len(frames) == 1:
        return order, _single_frame_spacing(frames[0]), None
    distances, positions = distances[order], positions[order]
    gaps = np.diff(distances)
    if gaps.min() < _DUPLICATE_MM:
        n_duplicates = int(np.count_nonzero(gaps < _DUPLICATE_MM))
        raise InputError(
            f"{n_duplicates} frame(s) share a position along the slice normal "
            "(several stacks, phases or echoes in one series?)"
        )
    spacing = float(distances[-1] - distances[0]) / (len(frames) - 1)
    tolerance = _position_tolerance_mm(spacing)
    if np.abs(gaps - spacing).max() > tolerance:
        raise InputError(
            f"irregular slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm"
        )
    step = (positions[-1] - positions[0]) / (len(frames) - 1)
    expected = positions[0] + np.arange(len(frames))[:, None] * step
    if np.linalg.norm(positions - expected, axis=1).max() > tolerance:
        raise InputError("frame positions do not lie on one line along the stack")
    sheared = np.linalg.norm(step - np.asarray(normal) * spacing) > tolerance / 10
    if sheared:
        logger.info("sheared (gantry-tilted) stack; frame step %s mm", np.round(step, 3))
    return order, spacing, (_vec(step) if sheared else None)


def _single_frame_spacing(frame: _Frame) -> float:
    """Extent of a one-frame volume: nothing to measure, so the slab it represents."""
    spacing = frame.thickness or frame.spacing_between_slices
    if spacing is None:
        raise InputError("a single image needs Slice Thickness or Spacing Between Slices")
    return spacing


def _decode(datasets: Sequence[Dataset], frames: Sequence[_Frame]) -> np.ndarray:
    """Decode each dataset once and write its rescaled frames into one array."""
    first = datasets[0]
    rows, columns = int(first.Rows), int(first.Columns)
    voxels = np.empty((len(frames), rows, columns), dtype=np.float32)
    destinations: dict[int, list[tuple[int, _Frame]]] = {}
    for target, frame in enumerate(frames):
        destinations.setdefault(frame.source_index, []).append((target, frame))
    for source_index, placements in destinations.items():
        pixels = _pixels(datasets[source_index], source_index)
        if pixels.shape[1:] != (rows, columns):
            raise InputError(f"image {source_index} decodes to shape {pixels.shape}")
        for target, frame in placements:
            out = voxels[target]
            np.multiply(pixels[frame.frame_number - 1], frame.slope, out=out, casting="unsafe")
            if frame.intercept:
                out += np.float32(frame.intercept)
    return voxels


def _pixels(ds: Dataset, index: int) -> np.ndarray:
    """Stored values of every frame as ``[frame, row, column]`` (no copy when native)."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None or "TransferSyntaxUID" not in file_meta:
        raise InputError(f"image {index} has no Transfer Syntax UID in its file meta")
    # A view (no copy) is possible only when no unused high bits must be masked off.
    view_only = ds.get("BitsStored") == ds.get("BitsAllocated")
    try:
        pixels = pixel_array(ds, raw=True, view_only=view_only)
    except DECODE_ERRORS as exc:
        raise InputError(
            f"image {index}: pixel data cannot be decoded "
            f"({file_meta.TransferSyntaxUID.name}): {type(exc).__name__}"
        ) from exc
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if pixels.ndim != 3 or pixels.shape[0] != _n_frames(ds):
        raise InputError(f"image {index} decodes to unexpected shape {pixels.shape}")
    return pixels
