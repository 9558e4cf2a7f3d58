"""reformat: coronal and sagittal multiplanar reformats and thick-slab MIPs.

The 3D lab's everyday work on an axial CT or MR series, as derived series
(:class:`~pipelines.findings.DerivedSeries`) with exact geometry:

* **MPR** (DCM 113072 "Multiplanar reformatting"): the volume resampled on a
  grid whose image plane is coronal (rows along patient inferior, columns
  along patient left: Image Orientation (Patient) ``1\\0\\0\\0\\0\\-1``,
  frames from anterior to posterior) or sagittal (``0\\1\\0\\0\\0\\-1``, frames
  from patient left to right), covering the source's extent.
* **Thick-slab MIP** (DCM 113078 "Maximum intensity projection"): the maximum
  over ``slab_mm`` of consecutive planes, one slab every ``slab_step_mm``.

Each output axis takes the spacing of the source axis closest to it. When
every output axis is a source axis (up to sign) - any axial, coronal or
sagittal acquisition without gantry tilt - the reformat is a pure
re-indexing, exact to the voxel and the value; otherwise (oblique or tilted
stacks) it is trilinear interpolation (``scipy.ndimage.map_coordinates``),
voxels outside the source taking the source minimum.

Geometry of a derived series (PS3.3 C.7.6.2): ``origin`` is the centre of the
first voxel of frame 0; voxel ``(f, r, c)`` lies at
``origin + f * spacing[0] * slice_direction + r * spacing[1] *
column_direction + c * spacing[2] * row_direction``. A MIP frame's origin is
the centre of its slab.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipelines.base import InputSpec, Pipeline
from pipelines.errors import InputError
from pipelines.findings import Code, DerivedSeries, Findings
from pipelines.volume import Volume

logger = logging.getLogger(__name__)

MULTIPLANAR_REFORMATTING = Code("113072", "DCM", "Multiplanar reformatting")
MAXIMUM_INTENSITY_PROJECTION = Code("113078", "DCM", "Maximum intensity projection")

Vector3 = tuple[float, float, float]
#: Image plane of each reformat: (row direction, column direction) in LPS.
PLANES: dict[str, tuple[Vector3, Vector3]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
_ALIGNED_ATOL = 1e-6
_CHUNK_VOXELS = 4_000_000  # interpolated output voxels per map_coordinates call


@dataclass(frozen=True)
class ReformatParameters:
    """Which reformats to make.

    Parameters
    ----------
    planes : tuple[str, ...]
        MPR planes, of ``"axial"``, ``"coronal"``, ``"sagittal"``.
    mip_planes : tuple[str, ...]
        Planes of the thick-slab MIPs.
    slab_mm : float
        MIP slab thickness.
    slab_step_mm : float | None
        Distance between MIP slab centres (``None``: ``slab_mm``, contiguous slabs).
    """

    planes: tuple[str, ...] = ("coronal", "sagittal")
    mip_planes: tuple[str, ...] = ("axial", "coronal")
    slab_mm: float = 10.0
    slab_step_mm: float | None = None

    def __post_init__(self) -> None:
        unknown = (set(self.planes) | set(self.mip_planes)) - set(PLANES)
        if unknown:
            raise InputError(f"unknown reformat plane(s) {sorted(unknown)}")
        if self.slab_mm <= 0 or (self.slab_step_mm is not None and self.slab_step_mm <= 0):
            raise InputError("slab thickness and step must be positive")


class ReformatPipeline(Pipeline):
    """Coronal / sagittal MPR and thick-slab MIPs of a CT or MR volume."""

    name = "reformat"
    version = "1.0.0"
    accepts = InputSpec(modalities=frozenset({"CT", "MR"}), min_frames=2, dimensions=3)
    model_checksum = None

    def __init__(self, parameters: ReformatParameters | None = None) -> None:
        self.parameters = parameters or ReformatParameters()

    def run(self, volume: Volume) -> Findings:
        """The configured reformats of ``volume`` as derived series."""
        self.check_input(volume)
        if volume.planar:
            raise InputError("reformat needs a volume in patient coordinates, not a planar image")
        p = self.parameters
        series: list[DerivedSeries] = []
        cache: dict[str, DerivedSeries] = {}
        for plane in dict.fromkeys((*p.planes, *p.mip_planes)):
            cache[plane] = reformat(volume, plane)
        series.extend(cache[plane] for plane in p.planes)
        series.extend(
            thick_slab_mip(cache[plane], p.slab_mm, p.slab_step_mm) for plane in p.mip_planes
        )
        return Findings(
            pipeline_name=self.name,
            pipeline_version=self.version,
            source_sop_instance_uids=volume.sop_instance_uids,
            derived_series=tuple(series),
        )


def reformat(volume: Volume, plane: str) -> DerivedSeries:
    """Resample ``volume`` on the grid of ``plane`` covering its extent."""
    row, column = (np.asarray(v) for v in PLANES[plane])
    normal = np.cross(row, column)
    source = volume.affine
    axes = np.stack([normal, column, row])  # output (frame, row, column) directions
    spacing = _output_spacing(source, axes)
    corners = _corner_positions(source, volume.shape)
    projections = corners @ axes.T  # [8, 3]
    low, high = projections.min(axis=0), projections.max(axis=0)
    shape = tuple(
        int(np.floor((h - lo) / s + 1e-6)) + 1 for lo, h, s in zip(low, high, spacing, strict=True)
    )
    origin = low @ axes
    target = np.eye(4)
    target[:3, :3] = (axes * np.asarray(spacing)[:, None]).T
    target[:3, 3] = origin
    index_map = np.linalg.inv(source) @ target  # output index -> source index
    voxels = _resample(volume.voxels, index_map, shape)
    return DerivedSeries(
        description=f"{plane.capitalize()} MPR {spacing[0]:.3g} mm",
        voxels=voxels,
        origin=_vec(origin),
        row_direction=_vec(row),
        column_direction=_vec(column),
        slice_direction=_vec(normal),
        spacing=(spacing[0], spacing[1], spacing[2]),
        slice_thickness=spacing[0],
        derivation=MULTIPLANAR_REFORMATTING,
    )


def thick_slab_mip(
    series: DerivedSeries, slab_mm: float, step_mm: float | None = None
) -> DerivedSeries:
    """Maximum over slabs of ``slab_mm`` along the frames of ``series``."""
    spacing = series.spacing[0]
    n_frames = series.voxels.shape[0]
    width = min(n_frames, max(1, int(round(slab_mm / spacing))))
    step = max(1, int(round((step_mm or slab_mm) / spacing)))
    starts = list(range(0, n_frames - width + 1, step))
    voxels = np.stack([series.voxels[s : s + width].max(axis=0) for s in starts])
    normal = np.asarray(series.slice_direction)
    first_centre = np.asarray(series.origin) + normal * spacing * (width - 1) / 2.0
    plane = series.description.split(" ")[0]
    return DerivedSeries(
        description=f"{plane} MIP {width * spacing:.3g} mm",
        voxels=voxels,
        origin=_vec(first_centre),
        row_direction=series.row_direction,
        column_direction=series.column_direction,
        slice_direction=series.slice_direction,
        spacing=(step * spacing, series.spacing[1], series.spacing[2]),
        slice_thickness=width * spacing,
        derivation=MAXIMUM_INTENSITY_PROJECTION,
    )


def _output_spacing(source: np.ndarray, axes: np.ndarray) -> tuple[float, float, float]:
    """For each output axis, the length of the source step most aligned with it."""
    steps = source[:3, :3].T  # rows: source index steps in mm
    lengths = np.linalg.norm(steps, axis=1)
    cosines = np.abs(axes @ (steps / lengths[:, None]).T)  # [output, source]
    chosen = cosines.argmax(axis=1)
    return float(lengths[chosen[0]]), float(lengths[chosen[1]]), float(lengths[chosen[2]])


def _corner_positions(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    corners = np.array(
        [
            [f, r, c, 1.0]
            for f in (0, shape[0] - 1)
            for r in (0, shape[1] - 1)
            for c in (0, shape[2] - 1)
        ]
    )
    result: np.ndarray = (corners @ affine.T)[:, :3]
    return result


def _resample(voxels: np.ndarray, index_map: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Values at output indices; exact re-indexing when the map is a signed permutation."""
    linear, offset = index_map[:3, :3], index_map[:3, 3]
    rounded = np.round(linear)
    if (
        np.allclose(linear, rounded, atol=_ALIGNED_ATOL)
        and np.allclose(offset, np.round(offset), atol=1e-4)
        and np.all(np.abs(rounded).sum(axis=0) == 1)
    ):
        return _reindex(voxels, rounded.astype(int), np.round(offset).astype(int), shape)
    logger.info("oblique reformat: trilinear interpolation")
    out = np.empty(shape, dtype=np.float32)
    fill = float(voxels.min())
    frames_per_chunk = max(1, _CHUNK_VOXELS // (shape[1] * shape[2]))
    grid_rc = np.indices(shape[1:], dtype=np.float64).reshape(2, -1)
    for start in range(0, shape[0], frames_per_chunk):
        frames = np.arange(start, min(shape[0], start + frames_per_chunk), dtype=np.float64)
        index = np.concatenate(
            [
                np.repeat(frames, grid_rc.shape[1])[None],
                np.tile(grid_rc, len(frames)),
            ]
        )
        coordinates = linear @ index + offset[:, None]
        out[start : start + len(frames)] = ndimage.map_coordinates(
            voxels, coordinates, order=1, mode="constant", cval=fill
        ).reshape(len(frames), *shape[1:])
    return out


def _reindex(
    voxels: np.ndarray, permutation: np.ndarray, offset: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """``out[o] = voxels[P @ o + t]`` for a signed permutation ``P`` (a transposed view, copied)."""
    source_axes = [int(np.flatnonzero(permutation[:, k])[0]) for k in range(3)]
    signs = [int(permutation[source_axes[k], k]) for k in range(3)]
    view = np.transpose(voxels, source_axes)
    index = []
    for k in range(3):
        start = int(offset[source_axes[k]])
        if signs[k] > 0:
            index.append(slice(start, start + shape[k]))
        else:
            stop = start - shape[k]
            index.append(slice(start, stop if stop >= 0 else None, -1))
    result = np.ascontiguousarray(view[tuple(index)], dtype=np.float32)
    if result.shape != tuple(shape):
        raise InputError(f"reformat grid {shape} does not fit the source ({result.shape})")
    return result


def _vec(values: np.ndarray) -> Vector3:
    return float(values[0]), float(values[1]), float(values[2])
