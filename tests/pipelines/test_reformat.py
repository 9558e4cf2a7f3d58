"""reformat: exact geometry of MPRs and MIPs; a voxel lands where it should."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bundles import make_volume

from pipelines.errors import InputError
from pipelines.findings import DerivedSeries
from pipelines.reformat import ReformatParameters, ReformatPipeline, reformat, thick_slab_mip
from pipelines.volume import Volume


def _position(series: DerivedSeries, index: tuple[int, int, int]) -> np.ndarray:
    f, r, c = index
    return (
        np.asarray(series.origin)
        + f * series.spacing[0] * np.asarray(series.slice_direction)
        + r * series.spacing[1] * np.asarray(series.column_direction)
        + c * series.spacing[2] * np.asarray(series.row_direction)
    )


def _axial(
    row_direction: tuple[float, float, float] = (1.0, 0.0, 0.0),
) -> tuple[Volume, np.ndarray]:
    voxels = np.full((20, 30, 40), -1000.0, dtype=np.float32)
    voxels[7, 11, 13] = 1000.0
    volume = make_volume(
        voxels, (2.5, 0.7, 0.8), origin=(-10.0, -20.0, 30.0), row_direction=row_direction
    )
    point = (volume.affine @ np.array([7, 11, 13, 1.0]))[:3]
    return volume, point


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("row_direction", [(1.0, 0.0, 0.0), (-1.0, 0.0, 0.0)], ids=["L", "R"])
def test_a_voxel_lands_at_its_patient_position(
    plane: str, row_direction: tuple[float, float, float]
) -> None:
    volume, point = _axial(row_direction)
    series = reformat(volume, plane)
    hot = np.unravel_index(np.argmax(series.voxels), series.voxels.shape)
    assert series.voxels[hot] == 1000.0 and np.count_nonzero(series.voxels == 1000.0) == 1
    np.testing.assert_allclose(_position(series, hot), point, atol=1e-9)  # type: ignore[arg-type]
    assert series.voxels.size == volume.voxels.size  # exact re-indexing, nothing lost


def test_coronal_and_sagittal_orientation_and_spacing() -> None:
    volume, _ = _axial()
    coronal = reformat(volume, "coronal")
    assert coronal.row_direction == (1.0, 0.0, 0.0) and coronal.column_direction == (0.0, 0.0, -1.0)
    assert coronal.slice_direction == (0.0, 1.0, 0.0)
    assert coronal.spacing == (0.7, 2.5, 0.8) and coronal.voxels.shape == (30, 20, 40)
    sagittal = reformat(volume, "sagittal")
    assert sagittal.row_direction == (0.0, 1.0, 0.0) and sagittal.slice_direction == (
        -1.0,
        0.0,
        0.0,
    )
    assert sagittal.spacing == (0.8, 2.5, 0.7) and sagittal.voxels.shape == (40, 20, 30)
    # first row of a coronal image is the most superior slice
    assert coronal.origin[2] == pytest.approx(30.0 + 19 * 2.5)


def test_thick_slab_mip_geometry() -> None:
    volume, point = _axial()
    coronal = reformat(volume, "coronal")
    mip = thick_slab_mip(coronal, slab_mm=3.5)  # 5 planes of 0.7 mm
    assert mip.slice_thickness == pytest.approx(3.5)
    assert mip.spacing[0] == pytest.approx(3.5) and mip.voxels.shape == (6, 20, 40)
    hot = np.unravel_index(np.argmax(mip.voxels), mip.voxels.shape)
    centre = _position(mip, hot)  # type: ignore[arg-type]
    np.testing.assert_allclose(centre[[0, 2]], point[[0, 2]], atol=1e-9)  # in-plane exact
    assert abs(centre[1] - point[1]) <= 3.5 / 2  # within the slab
    assert mip.derivation.value == "113078"


def test_oblique_stack_is_interpolated_onto_the_grid() -> None:
    """A stack rotated 20 degrees about z: a smooth blob's peak lands within a voxel."""
    angle = math.radians(20)
    row = (math.cos(angle), math.sin(angle), 0.0)
    column = (-math.sin(angle), math.cos(angle), 0.0)
    f, r, c = np.meshgrid(np.arange(24), np.arange(40), np.arange(40), indexing="ij")
    blob = np.exp(-(((f - 12) * 2.0) ** 2 + (r - 15.0) ** 2 + (c - 22.0) ** 2) / (2 * 3.0**2))
    volume = make_volume(1000 * blob, (2.0, 1.0, 1.0), row_direction=row, column_direction=column)
    point = (volume.affine @ np.array([12, 15, 22, 1.0]))[:3]
    series = reformat(volume, "coronal")
    hot = np.unravel_index(np.argmax(series.voxels), series.voxels.shape)
    assert np.linalg.norm(_position(series, hot) - point) <= 1.5  # type: ignore[arg-type]


def test_pipeline_returns_the_configured_series() -> None:
    volume, _ = _axial()
    findings = ReformatPipeline(ReformatParameters(slab_mm=5.0)).run(volume)
    descriptions = [s.description for s in findings.derived_series]
    assert descriptions == [
        "Coronal MPR 0.7 mm",
        "Sagittal MPR 0.8 mm",
        "Axial MIP 5 mm",
        "Coronal MIP 4.9 mm",
    ]
    assert findings.source_sop_instance_uids == volume.sop_instance_uids


def test_unknown_plane_is_refused() -> None:
    with pytest.raises(InputError, match="unknown reformat plane"):
        ReformatParameters(planes=("oblique",))


def test_planar_image_is_refused() -> None:
    volume = make_volume(np.zeros((2, 4, 4)), modality="CT", planar=True)
    with pytest.raises(InputError, match="planar"):
        ReformatPipeline().run(volume)
