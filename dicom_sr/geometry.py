"""Where the frames of the findings lie: source frames and patient coordinates.

Findings index their voxels ``[frame, row, column]`` in the order of
``Findings.source_sop_instance_uids`` (PS3.3 C.7.6.2.1.1 geometry, sorted
along the slice normal). A source is either a stack of single-frame images or
one enhanced multi-frame image (PS3.3 C.7.6.16); :class:`SourceFrames` maps
each findings frame to its source image, frame number and Image Position
(Patient), so the writers can reference frames and map voxel indices to
patient coordinates (SCOORD3D, PS3.3 C.18.9).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from dicom_sr.errors import SourceImagesError
from pipelines.findings import Findings

logger = logging.getLogger(__name__)


def functional_group(image: Dataset, frame_index: int, keyword: str) -> Dataset | None:
    """Return the first item of a functional group macro, per frame or shared."""
    for groups_keyword, index in (
        ("PerFrameFunctionalGroupsSequence", frame_index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = image.get(groups_keyword)
        if groups is None or len(groups) <= index:
            continue
        sequence = groups[index].get(keyword)
        if sequence:
            item: Dataset = sequence[0]
            return item
    return None


def frame_plane(image: Dataset, frame_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (position, orientation[6], pixel spacing[2]) of one frame.

    Top-level attributes for a single-frame image; the functional groups for a
    multi-frame one, falling back to top-level orientation and spacing.
    """
    position = image.get("ImagePositionPatient")
    orientation = image.get("ImageOrientationPatient")
    spacing = image.get("PixelSpacing")
    if int(image.get("NumberOfFrames") or 1) > 1 or position is None:
        plane = functional_group(image, frame_index, "PlanePositionSequence")
        orient = functional_group(image, frame_index, "PlaneOrientationSequence")
        measures = functional_group(image, frame_index, "PixelMeasuresSequence")
        position = plane.get("ImagePositionPatient") if plane is not None else None
        orientation = orient.get("ImageOrientationPatient") if orient is not None else orientation
        spacing = measures.get("PixelSpacing") if measures is not None else spacing
    if position is None or orientation is None or spacing is None:
        raise SourceImagesError(
            f"source image {image.get('SOPInstanceUID')} frame {frame_index + 1} lacks "
            "Image Position/Orientation (Patient) or Pixel Spacing"
        )
    return (
        np.asarray(position, dtype=float),
        np.asarray(orientation, dtype=float),
        np.asarray(spacing, dtype=float),
    )


@dataclass(frozen=True, eq=False)
class SourceFrames:
    """The source frame behind each findings frame, with its geometry.

    Parameters
    ----------
    images : tuple[pydicom.dataset.Dataset, ...]
        The source image of each findings frame (the same dataset for every
        frame of a multi-frame source).
    frame_numbers : tuple[int, ...] | None
        1-based frame number in the source image of each findings frame;
        ``None`` for single-frame sources.
    positions : numpy.ndarray
        ``[frame, 3]`` Image Position (Patient) in mm, or ``None`` when the
        source has no patient coordinate system.
    orientation : numpy.ndarray | None
        Image Orientation (Patient): row direction cosines then column ones.
    pixel_spacing : numpy.ndarray | None
        Pixel Spacing (between rows, between columns), mm.
    """

    images: tuple[Dataset, ...]
    frame_numbers: tuple[int, ...] | None
    positions: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: np.ndarray | None

    @property
    def is_multiframe(self) -> bool:
        """bool: whether the source is one multi-frame image."""
        return self.frame_numbers is not None

    @property
    def has_patient_geometry(self) -> bool:
        """bool: whether frames have Image Position/Orientation (Patient)."""
        return self.positions is not None

    def to_patient(self, points: np.ndarray) -> np.ndarray:
        """Map ``[n, 3]`` (frame, row, column) voxel indices to patient mm (LPS).

        Voxel centres map onto Image Position (Patient) of their frame plus
        the in-plane steps (PS3.3 Equation C.7.6.2.1-1); fractional frame
        indices are interpolated linearly between frame positions, and
        indices beyond the first or last frame extrapolated.
        """
        if self.positions is None or self.orientation is None or self.pixel_spacing is None:
            raise SourceImagesError("the source images have no patient coordinate system")
        points = np.atleast_2d(np.asarray(points, dtype=float))
        frames = np.arange(len(self.positions), dtype=float)
        if len(frames) == 1:
            origin = np.repeat(self.positions[:1], len(points), axis=0)
        else:
            origin = np.stack(
                [_interp(points[:, 0], frames, self.positions[:, axis]) for axis in range(3)],
                axis=1,
            )
        row_direction, column_direction = self.orientation[:3], self.orientation[3:]
        patient: np.ndarray = (
            origin
            + points[:, 1:2] * self.pixel_spacing[0] * column_direction
            + points[:, 2:3] * self.pixel_spacing[1] * row_direction
        )
        return patient

    def reference(self, frame: int) -> tuple[Dataset, int | None]:
        """Return (source image, 1-based frame number or ``None``) of a findings frame."""
        numbers = self.frame_numbers
        return self.images[frame], (numbers[frame] if numbers is not None else None)


def _interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Linear interpolation that extrapolates beyond both ends."""
    inner = np.interp(x, xp, fp)
    low = fp[0] + (x - xp[0]) * (fp[1] - fp[0])
    high = fp[-1] + (x - xp[-1]) * (fp[-1] - fp[-2])
    values: np.ndarray = np.where(x < xp[0], low, np.where(x > xp[-1], high, inner))
    return values


def source_frames(source_images: Sequence[Dataset], findings: Findings) -> SourceFrames:
    """Resolve the source frame of every findings frame.

    For a multi-frame source the frame numbers are
    ``findings.source_frame_numbers``; when a pipeline leaves them ``None``,
    the frames are sorted along the slice normal as the volume loader sorts
    them (a warning is logged, as that guess needs distinct positions).

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        Already checked by :func:`dicom_sr.sources.check_source_images`.
    findings : pipelines.findings.Findings
        The findings.

    Returns
    -------
    SourceFrames
        One entry per findings frame.
    """
    n_frames = len(findings.source_sop_instance_uids)
    first = source_images[0]
    multiframe = int(first.get("NumberOfFrames") or 1) > 1 or (
        len(source_images) == 1 and n_frames > 1
    )
    if not multiframe:
        images = tuple(source_images)
        numbers: tuple[int, ...] | None = None
        planes = [_try_plane(image, 0) for image in images]
    else:
        images = (first,) * n_frames
        numbers = _multiframe_numbers(first, findings)
        planes = [_try_plane(first, number - 1) for number in numbers]
    if any(plane is None for plane in planes):
        return SourceFrames(images, numbers, None, None, None)
    positions = np.stack([plane[0] for plane in planes if plane is not None])
    orientation, spacing = planes[0][1], planes[0][2]  # type: ignore[index]
    return SourceFrames(images, numbers, positions, orientation, spacing)


def _try_plane(
    image: Dataset, frame_index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    try:
        return frame_plane(image, frame_index)
    except SourceImagesError:
        return None


def _multiframe_numbers(image: Dataset, findings: Findings) -> tuple[int, ...]:
    """Frame numbers of a multi-frame source, given or sorted along the normal."""
    n_source = int(image.get("NumberOfFrames") or 1)
    numbers = findings.source_frame_numbers
    if numbers is None:
        numbers = _sorted_frame_numbers(image)
        logger.warning(
            "findings of %s give no source_frame_numbers for multi-frame %s; "
            "assuming frames sorted along the slice normal",
            findings.pipeline_name,
            image.SOPInstanceUID,
        )
    if len(numbers) != len(findings.source_sop_instance_uids):
        raise SourceImagesError(
            f"findings have {len(findings.source_sop_instance_uids)} frames, "
            f"multi-frame source has {n_source}"
        )
    if any(not 1 <= n <= n_source for n in numbers) or len(set(numbers)) != len(numbers):
        raise SourceImagesError(
            f"source frame numbers {numbers[:5]}... are not frames of the source"
        )
    return tuple(int(n) for n in numbers)


def _sorted_frame_numbers(image: Dataset) -> tuple[int, ...]:
    n_source = int(image.get("NumberOfFrames") or 1)
    planes = [frame_plane(image, index) for index in range(n_source)]
    orientation = planes[0][1]
    normal = np.cross(orientation[:3], orientation[3:])
    distances = [float(np.dot(plane[0], normal)) for plane in planes]
    return tuple(int(i) + 1 for i in np.argsort(distances, kind="stable"))
