"""prior-compare: a known transform of a phantom is recovered."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bundles import make_volume
from pipelines.errors import InputError
from pipelines.prior_compare import PriorComparePipeline, PriorSeries
from pipelines.registration import RegistrationParameters, register
from pipelines.volume import Volume

BLOBS = (  # centre (LPS mm), sigma (mm), amplitude
    ((0.0, 0.0, 0.0), 22.0, 400.0),
    ((18.0, -10.0, 8.0), 7.0, 600.0),
    ((-15.0, 12.0, -6.0), 9.0, -300.0),
    ((5.0, 20.0, 15.0), 6.0, 500.0),
    ((-8.0, -18.0, 12.0), 5.0, 700.0),
)


def _phantom(points: np.ndarray) -> np.ndarray:
    """A smooth asymmetric intensity at patient points ``[..., 3]``."""
    value = np.zeros(points.shape[:-1])
    for centre, sigma, amplitude in BLOBS:
        d2 = ((points - np.asarray(centre)) ** 2).sum(-1)
        value += amplitude * np.exp(-d2 / (2 * sigma**2))
    return value


def _rigid(angle_deg: float, translation: tuple[float, float, float]) -> np.ndarray:
    a = math.radians(angle_deg)
    matrix = np.eye(4)
    matrix[:3, :3] = [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
    matrix[:3, 3] = translation
    return matrix


def _sample(shape: tuple[int, int, int], spacing: tuple[float, float, float], origin: tuple[float, float, float],
            to_phantom: np.ndarray, warp: object = None) -> Volume:
    volume = make_volume(np.zeros(shape), spacing, origin=origin)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    points = index @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    if callable(warp):
        points = warp(points)
    points = points @ to_phantom[:3, :3].T + to_phantom[:3, 3]
    return make_volume(_phantom(points), spacing, origin=origin)


def _max_point_error(found: np.ndarray, truth: np.ndarray) -> float:
    grid = np.array([[x, y, z, 1.0] for x in (-30, 30) for y in (-30, 30) for z in (-20, 20)])
    return float(np.abs(grid @ found.T - grid @ truth.T)[:, :3].max())


def test_rigid_transform_is_recovered() -> None:
    """Prior = the phantom moved by S (prior -> current); the matrix found is S."""
    truth = _rigid(8.0, (6.0, -4.0, 3.0))  # prior mm -> current mm
    fixed = _sample((32, 40, 40), (2.0, 2.0, 2.0), (-40.0, -40.0, -32.0), np.eye(4))
    # a prior point q shows what the current image shows at S q
    moving = _sample((28, 36, 36), (2.5, 2.2, 2.2), (-38.0, -42.0, -35.0), truth)
    result = register(fixed, moving, deformable=False)
    assert _max_point_error(result.matrix, truth) < 1.0
    assert result.ncc_after > 0.99 > result.ncc_before


def test_deformable_improves_on_affine() -> None:
    def bump(points: np.ndarray) -> np.ndarray:
        d2 = ((points - np.array([10.0, 0.0, 0.0])) ** 2).sum(-1, keepdims=True)
        return points + np.array([4.0, 0.0, 0.0]) * np.exp(-d2 / (2 * 12.0**2))

    fixed = _sample((32, 40, 40), (2.0, 2.0, 2.0), (-40.0, -40.0, -32.0), np.eye(4))
    moving = _sample((32, 40, 40), (2.0, 2.0, 2.0), (-40.0, -40.0, -32.0), np.eye(4), warp=bump)
    parameters = RegistrationParameters(rigid_iterations=40, affine_iterations=40)
    affine = register(fixed, moving, deformable=False, parameters=parameters)
    deformable = register(fixed, moving, deformable=True, parameters=parameters)
    assert deformable.ncc_after > affine.ncc_after
    assert deformable.displacement is not None and deformable.displacement.shape == (3, *fixed.shape)


def test_pipeline_hook_returns_a_registration() -> None:
    truth = _rigid(0.0, (4.0, 0.0, 0.0))
    fixed = _sample((24, 32, 32), (2.0, 2.0, 2.0), (-32.0, -32.0, -24.0), np.eye(4))
    moving = _sample((24, 32, 32), (2.0, 2.0, 2.0), (-32.0, -32.0, -24.0), truth)
    pipeline = PriorComparePipeline(deformable=False)
    prior = PriorSeries(moving, "1.2.3", "1.2.3.4", "1.2.3.5")
    findings = pipeline.run_with_prior(fixed, prior)
    (registration,) = findings.registrations
    assert registration.prior_series_instance_uid == "1.2.3.4"
    assert _max_point_error(np.array(registration.matrix), truth) < 1.0
    with pytest.raises(InputError, match="needs the prior"):
        pipeline.run(fixed)
