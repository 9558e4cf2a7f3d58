"""prior-compare: a known transform of a phantom is recovered."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from bundles import make_volume

from pipelines.ct_anatomy import CtAnatomyPipeline
from pipelines.errors import InputError
from pipelines.findings import Findings
from pipelines.prior_compare import PriorComparePipeline, PriorSeries, volume_change
from pipelines.registration import RegistrationParameters, register
from pipelines.volume import Volume, load_volume

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


def _sample(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    to_phantom: np.ndarray,
    warp: object = None,
) -> Volume:
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
    assert deformable.displacement is not None and deformable.displacement.shape == (
        3,
        *fixed.shape,
    )


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


# -- volumes now vs prior (CT) ----------------------------------------------------------------

FAST_RIGID = RegistrationParameters(rigid_iterations=80, affine_iterations=0)


def _by_concept(findings: Findings) -> dict[tuple[str, str], float]:
    labels = {s.description.number: s.description.label for s in findings.segments}
    return {
        (labels[m.segment_number], m.concept.meaning): m.value
        for m in findings.measurements
        if m.segment_number is not None
    }


def _chest(**options: object) -> Volume:
    from node.demo.phantom import make_chest_phantom

    return load_volume(make_chest_phantom(**options).datasets)  # type: ignore[arg-type]


def test_shifted_chest_recovers_translation_and_unchanged_volumes() -> None:
    """Current = the prior's pixels moved by (5, -3, 2) mm.

    The matrix is that shift, and no volume changes.
    """
    prior = _chest(n_slices=32, rows=96, columns=96, seed=1)
    shift = np.array([5.0, -3.0, 2.0])
    current = dataclasses.replace(
        prior, origin=tuple(float(v) for v in np.asarray(prior.origin) + shift)
    )
    pipeline = PriorComparePipeline(deformable=False, parameters=FAST_RIGID)
    findings = pipeline.run_with_prior(current, PriorSeries(prior, "1.2.3", "1.2.3.4", "1.2.3.5"))
    (registration,) = findings.registrations
    truth = np.eye(4)
    truth[:3, 3] = shift
    assert _max_point_error(np.array(registration.matrix), truth) < 1.0
    rows = _by_concept(findings)
    assert {s.description.label for s in findings.segments} == {"Body", "Lungs", "Bone"}
    for label in ("Body", "Lungs", "Bone"):
        assert rows[(label, "Volume of prior")] == pytest.approx(rows[(label, "Volume")], rel=1e-9)
        assert rows[(label, "Change in volume")] == pytest.approx(0.0, abs=1e-6)
        assert rows[(label, "Percent change in volume")] == pytest.approx(0.0, abs=1e-6)


def test_volume_change_is_reported_per_structure() -> None:
    """A larger current chest: the change adds up.

    Each row equals ct-anatomy on either series.
    """
    prior = _chest(n_slices=28, rows=96, columns=96, seed=1)
    current = _chest(n_slices=36, rows=112, columns=112, seed=2)
    pipeline = PriorComparePipeline(
        deformable=False,
        parameters=RegistrationParameters(
            levels_mm=(6.0,), rigid_iterations=5, affine_iterations=0
        ),
    )
    findings = pipeline.run_with_prior(current, PriorSeries(prior, "1.2.3", "1.2.3.4", "1.2.3.5"))
    rows = _by_concept(findings)
    now, before = (
        _by_concept(CtAnatomyPipeline().run(current)),
        _by_concept(CtAnatomyPipeline().run(prior)),
    )
    for label in ("Body", "Lungs", "Bone"):
        assert rows[(label, "Volume")] == now[(label, "Volume")]
        assert rows[(label, "Volume of prior")] == before[(label, "Volume")]
        change = now[(label, "Volume")] - before[(label, "Volume")]
        assert change > 0
        assert rows[(label, "Change in volume")] == pytest.approx(change)
        assert rows[(label, "Percent change in volume")] == pytest.approx(
            100 * change / before[(label, "Volume")]
        )
    codes_used = {(m.concept.scheme, m.concept.value) for m in findings.measurements}
    assert {
        ("SCT", "118565006"),
        ("99AINODE", "PRIORVOL"),
        ("99AINODE", "VOLCHG"),
        ("99AINODE", "VOLCHGPCT"),
    } <= codes_used
    assert findings.segments and len(findings.segments[0].mask) == len(
        findings.source_sop_instance_uids
    )


def test_mr_is_registered_only() -> None:
    fixed = _sample((24, 32, 32), (2.0, 2.0, 2.0), (-32.0, -32.0, -24.0), np.eye(4))
    fixed = dataclasses.replace(fixed, modality="MR")
    findings = PriorComparePipeline(deformable=False, parameters=FAST_RIGID).run_with_prior(
        fixed, PriorSeries(fixed, "1.2.3", "1.2.3.4", "1.2.3.5")
    )
    assert findings.registrations and not findings.segments and not findings.measurements
    assert any("CT only" in note for note in findings.notes)


def test_volume_change_rows() -> None:
    prior_ml, change, percent = volume_change(110.0, 100.0, 3)
    assert (prior_ml.value, change.value, percent.value) == (
        100.0,
        pytest.approx(10.0),
        pytest.approx(10.0),
    )
    assert {m.segment_number for m in (prior_ml, change, percent)} == {3}
    assert percent.unit.value == "%" and change.unit.value == "mL"
