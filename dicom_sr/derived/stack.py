"""The source frames as a stack in patient coordinates, sorted along the slice normal.

Derived images and deformation grids are placed in the source's Frame of
Reference; both need every source frame's Image Position (Patient) (PS3.3
C.7.6.2), whether the source is a stack of single-frame images or one
enhanced multi-frame image (per-frame functional groups, PS3.3 C.7.6.16.2).
Frames are sorted along ``row x column`` as :func:`pipelines.volume.load_volume`
sorts them, so frame ``k`` of the stack is frame ``k`` of the volume a
pipeline computed on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from dicom_sr.errors import EncodingError, SourceImagesError
from dicom_sr.geometry import frame_plane

logger = logging.getLogger(__name__)

_ORIENTATION_ATOL = 1e-3


@dataclass(frozen=True, eq=False)
class SourceStack:
    """Source frames sorted along the slice normal, with their common geometry.

    Parameters
    ----------
    images : tuple[pydicom.dataset.Dataset, ...]
        The image holding each frame (the same dataset for a multi-frame source).
    frame_numbers : tuple[int | None, ...]
        1-based frame number of each frame in its image, ``None`` for single-frame images.
    positions : numpy.ndarray
        ``[frame, 3]`` Image Position (Patient), mm.
    row_direction, column_direction : numpy.ndarray
        Image Orientation (Patient): direction of increasing column and row index.
    pixel_spacing : numpy.ndarray
        Pixel Spacing: (between rows, between columns), mm.
    rows, columns : int
        Matrix size.
    frame_of_reference_uid : str
        Frame of Reference UID (0020,0052) shared by every source image.
    """

    images: tuple[Dataset, ...]
    frame_numbers: tuple[int | None, ...]
    positions: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    pixel_spacing: np.ndarray
    rows: int
    columns: int
    frame_of_reference_uid: str

    @property
    def normal(self) -> np.ndarray:
        """numpy.ndarray: ``row_direction x column_direction`` (the sorting axis)."""
        result: np.ndarray = np.cross(self.row_direction, self.column_direction)
        return result

    @property
    def slice_spacing(self) -> float:
        """float: median distance between consecutive frames along the normal (mm).

        For a single frame, its Slice Thickness (1 mm when it has none).
        """
        if len(self.positions) < 2:
            return float(self.images[0].get("SliceThickness") or 1.0)
        return float(np.median(np.diff(self.positions @ self.normal)))

    def check_regular(self) -> None:
        """Raise :class:`EncodingError` unless the frames form a regular, unsheared grid.

        A deformation grid (PS3.3 C.20.3.1.3) is an orthogonal lattice; a
        gantry-tilted or irregularly spaced stack is not one.
        """
        if len(self.positions) < 2:
            return
        spacing = self.slice_spacing
        tolerance = max(0.05, 0.02 * spacing)
        offsets = self.positions - self.positions[0]
        along = offsets @ self.normal
        expected = np.arange(len(self.positions)) * spacing
        in_plane = offsets - along[:, None] * self.normal
        if spacing <= 0 or np.abs(along - expected).max() > tolerance:
            raise EncodingError("source frames are not evenly spaced along the slice normal")
        if np.linalg.norm(in_plane, axis=1).max() > tolerance:
            raise EncodingError("source frames are sheared (gantry tilt); no orthogonal grid fits")


def source_stack(source_images: Sequence[Dataset]) -> SourceStack:
    """Collect the frames of ``source_images`` sorted along the slice normal.

    Raises
    ------
    SourceImagesError
        When there are no images, they lack patient geometry or a Frame of
        Reference, or their orientations or Frames of Reference differ.
    """
    if len(source_images) == 0:
        raise SourceImagesError("no source images given")
    frames_of_reference = {str(image.get("FrameOfReferenceUID", "")) for image in source_images}
    if len(frames_of_reference) != 1 or "" in frames_of_reference:
        raise SourceImagesError(
            f"source images need one Frame of Reference UID, got {sorted(frames_of_reference)}"
        )
    first = source_images[0]
    if len(source_images) == 1 and int(first.get("NumberOfFrames") or 1) > 1:
        entries: list[tuple[Dataset, int | None, np.ndarray, np.ndarray, np.ndarray]] = [
            (first, number, *frame_plane(first, number - 1))
            for number in range(1, int(first.NumberOfFrames) + 1)
        ]
    else:
        entries = [(image, None, *frame_plane(image, 0)) for image in source_images]
    orientation, spacing = entries[0][3], entries[0][4]
    for entry in entries[1:]:
        if not np.allclose(entry[3], orientation, atol=_ORIENTATION_ATOL):
            raise SourceImagesError("source frames differ in Image Orientation (Patient)")
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    order = np.argsort([float(entry[2] @ normal) for entry in entries], kind="stable")
    ordered = [entries[i] for i in order]
    return SourceStack(
        images=tuple(entry[0] for entry in ordered),
        frame_numbers=tuple(entry[1] for entry in ordered),
        positions=np.stack([entry[2] for entry in ordered]),
        row_direction=row,
        column_direction=column,
        pixel_spacing=spacing,
        rows=int(first.Rows),
        columns=int(first.Columns),
        frame_of_reference_uid=frames_of_reference.pop(),
    )
