"""The volume value object that every loader returns and every pipeline reads.

A leaf module: :mod:`pipelines.volume` (slice stacks and enhanced multi-frame
images) and :mod:`pipelines.planar` (projection and ultrasound images) both
build a :class:`Volume`; pipelines import it from :mod:`pipelines.volume`,
which re-exports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from pipelines.errors import InputError

Vector3 = tuple[float, float, float]

#: What pydicom's pixel data handlers raise for data they cannot decode.
DECODE_ERRORS = (
    NotImplementedError,
    ValueError,
    RuntimeError,
    AttributeError,
    KeyError,
    TypeError,
)


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image in patient coordinates (PS3.3 C.7.6.2.1.1, LPS axes).

    Parameters
    ----------
    voxels : numpy.ndarray
        ``float32`` array ``[frame, row, column]`` in modality units: Hounsfield
        units for CT (after Rescale Slope / Intercept), the rescaled stored
        values otherwise. Made read-only on construction.
    spacing : tuple[float, float, float]
        ``(slice, row, column)`` spacing in mm. The row spacing is Pixel Spacing
        [0] (between rows), the column spacing Pixel Spacing [1]; the slice
        spacing is measured between frame positions along the normal.
    origin : tuple[float, float, float]
        Image Position (Patient) of frame 0: the centre of its first voxel, mm.
    row_direction, column_direction : tuple[float, float, float]
        Unit vectors of Image Orientation (Patient): the direction of
        increasing column index and of increasing row index.
    slice_direction : tuple[float, float, float]
        ``row_direction x column_direction``; frames are sorted along it.
    sop_instance_uids : tuple[str, ...]
        The SOP Instance UID each frame comes from, in frame order.
    source_frame_numbers : tuple[int, ...]
        1-based frame number of each frame within its instance (1 for a
        single-frame image).
    source_indices : tuple[int, ...]
        Index of each frame's dataset in the sequence given to
        :func:`load_volume`.
    modality : str
        Modality (0008,0060) of the series, e.g. ``"CT"``.
    series_instance_uid : str
        Series Instance UID (0020,000E).
    frame_step : tuple[float, float, float] | None
        Displacement in mm from one frame's origin to the next. It differs from
        ``slice_direction * spacing[0]`` for a gantry-tilted (sheared) stack;
        ``None`` means no shear.
    sop_class_uid : str | None
        SOP Class UID (0008,0016) shared by the source images.
    header : Mapping[str, Any]
        Selected attributes of the first source image as plain Python values
        (see :mod:`pipelines.header`), e.g. the PET Units, Decay Correction and
        Radiopharmaceutical Information that SUV needs, and
        ``"AcquisitionDateTimes"``: each frame's acquisition date and time in
        frame order. Read-only; empty when a test builds a Volume by hand.
    planar : bool
        ``True`` for a projection or planar image without patient geometry
        (CR, DX, MG, US, XA, ...; see :mod:`pipelines.planar`): ``origin`` and
        the directions are nominal (identity), only the row and column spacing
        is physical, and several frames are a time series (cine), not slices.
    """

    voxels: np.ndarray
    spacing: Vector3
    origin: Vector3
    row_direction: Vector3
    column_direction: Vector3
    slice_direction: Vector3
    sop_instance_uids: tuple[str, ...]
    source_frame_numbers: tuple[int, ...]
    source_indices: tuple[int, ...]
    modality: str
    series_instance_uid: str
    frame_step: Vector3 | None = None
    sop_class_uid: str | None = None
    header: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    planar: bool = False

    def __post_init__(self) -> None:
        if self.voxels.ndim != 3:
            raise InputError(f"volume voxels must be 3-D, got shape {self.voxels.shape}")
        if self.voxels.dtype != np.float32:
            raise InputError(f"volume voxels must be float32, got {self.voxels.dtype}")
        n_frames = self.voxels.shape[0]
        per_frame = (self.sop_instance_uids, self.source_frame_numbers, self.source_indices)
        if any(len(values) != n_frames for values in per_frame):
            raise InputError(f"volume has {n_frames} frames but per-frame references differ")
        if len(self.spacing) != 3 or any(not s > 0 for s in self.spacing):
            raise InputError(f"volume spacing must be three positive values, got {self.spacing}")
        self.voxels.flags.writeable = False
        if not isinstance(self.header, MappingProxyType):
            object.__setattr__(self, "header", MappingProxyType(dict(self.header)))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(frames, rows, columns)``."""
        n_frames, n_rows, n_columns = self.voxels.shape
        return int(n_frames), int(n_rows), int(n_columns)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (the product of the spacings, mm^3 / 1000)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping ``(frame, row, column, 1)`` to patient LPS mm.

        Column 0 is the frame step (slice spacing along the normal, or the
        sheared step of a tilted stack), column 1 the row step (column
        direction x row spacing), column 2 the column step (row direction x
        column spacing), column 3 the origin (PS3.3 C.7.6.2.1.1, Equation
        C.7.6.2.1-1 extended to three dimensions).
        """
        step = (
            np.asarray(self.frame_step, dtype=float)
            if self.frame_step is not None
            else np.asarray(self.slice_direction, dtype=float) * self.spacing[0]
        )
        matrix = np.eye(4)
        matrix[:3, 0] = step
        matrix[:3, 1] = np.asarray(self.column_direction, dtype=float) * self.spacing[1]
        matrix[:3, 2] = np.asarray(self.row_direction, dtype=float) * self.spacing[2]
        matrix[:3, 3] = self.origin
        return matrix
