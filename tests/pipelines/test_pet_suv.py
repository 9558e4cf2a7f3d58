"""pet-suv: exact SUVs of a synthetic PET phantom, and every refusal."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pet_phantom import HotSphere, PetPhantom, make_pet_series
from pydicom.dataset import Dataset

from pipelines import pet_suv
from pipelines.errors import InputError
from pipelines.findings import Findings
from pipelines.pet_suv import PetSuvPipeline
from pipelines.volume import load_volume

RTOL = 1e-4  # 16-bit quantisation of the stored activity


def _run(datasets: list[Dataset]) -> Findings:
    return PetSuvPipeline().run(load_volume(datasets))


def _values(findings: Findings, number: int | None) -> dict[str, float]:
    out = {}
    for m in findings.measurements:
        if m.segment_number == number:
            key = m.concept.meaning + (f" {m.derivation.meaning}" if m.derivation else "")
            out[key] = m.value
    return out


def test_suv_factor_is_weight_over_decayed_dose() -> None:
    phantom = PetPhantom()
    volume = load_volume(make_pet_series(phantom))
    expected = phantom.weight_kg * 1000.0 / phantom.decayed_dose()
    assert pet_suv.suv_factor(volume.header) == pytest.approx(expected, rel=1e-12)


def test_hot_spheres_have_their_exact_suvs() -> None:
    phantom = PetPhantom()
    findings = _run(make_pet_series(phantom))
    assert len(findings.segments) == 2
    voxel_ml = float(np.prod(phantom.spacing)) / 1000.0
    for number, sphere_index in ((1, 0), (2, 1)):  # sorted by SUVmax
        sphere = phantom.spheres[sphere_index]
        truth = phantom.sphere_mask(sphere_index)
        np.testing.assert_array_equal(findings.segment(number).mask, truth)
        values = _values(findings, number)
        assert values["SUVbw Maximum"] == pytest.approx(sphere.suv, rel=RTOL)
        assert values["SUVbw Mean"] == pytest.approx(sphere.suv, rel=RTOL)
        assert values["SUVbw Peak Value Within ROI"] == pytest.approx(sphere.suv, rel=RTOL)
        mtv = truth.sum() * voxel_ml
        assert values["Metabolic Volume"] == pytest.approx(mtv, rel=1e-12)
        assert values["Metabolic volume at 41% of SUVmax"] == pytest.approx(mtv, rel=1e-12)
        assert values["Total Lesion Glycolysis"] == pytest.approx(sphere.suv * mtv, rel=RTOL)
    totals = _values(findings, None)
    assert totals["Number of lesions at SUV 2.5"] == 2
    total_mtv = sum(phantom.sphere_mask(i).sum() for i in range(2)) * voxel_ml
    assert totals["Metabolic Volume"] == pytest.approx(total_mtv)
    assert findings.segment(1).description.property_type.meaning == "Lesion"


def test_suvpeak_is_below_max_for_a_small_hot_spot() -> None:
    """A lesion smaller than the 1 mL sphere: SUVpeak averages in the background."""
    phantom = PetPhantom(
        spheres=(HotSphere((60.0, 96.0, 96.0), 8.0, 10.0),),
        spacing=(2.0, 2.0, 2.0),
        shape=(60, 96, 96),
    )
    findings = _run(make_pet_series(phantom))
    values = _values(findings, 1)
    assert values["SUVbw Maximum"] == pytest.approx(10.0, rel=RTOL)
    # a 6.2 mm sphere on a 2 mm grid: centre voxel + neighbours within radius
    kernel = pet_suv._sphere_kernel((2.0, 2.0, 2.0))
    offsets = np.argwhere(kernel) - np.array(kernel.shape) // 2
    inside = sum(np.sum((o * 2.0) ** 2) <= 8.0**2 for o in offsets)
    expected = (10.0 * inside + 1.0 * (len(offsets) - inside)) / len(offsets)
    assert values["SUVbw Peak Value Within ROI"] == pytest.approx(expected, rel=RTOL)


def test_relative_threshold_grows_beyond_the_fixed_one() -> None:
    """A lesion of SUVmax 5 over background 2.2: 41% (2.05) takes in the background too."""
    phantom = PetPhantom(background_suv=2.2, spheres=(HotSphere((60.0, 96.0, 96.0), 12.0, 5.0),))
    values = _values(_run(make_pet_series(phantom)), 1)
    assert values["Metabolic volume at 41% of SUVmax"] == pytest.approx(
        np.prod(phantom.shape) * np.prod(phantom.spacing) / 1000.0
    )


def test_admin_decay_correction_uses_the_dose_as_is() -> None:
    datasets = make_pet_series()
    for ds in datasets:
        ds.DecayCorrection = "ADMIN"
    volume = load_volume(datasets)
    assert pet_suv.suv_factor(volume.header) == pytest.approx(75000.0 / 370e6)


def test_start_time_with_series_date() -> None:
    datasets = make_pet_series()
    for ds in datasets:
        item = ds.RadiopharmaceuticalInformationSequence[0]
        del item.RadiopharmaceuticalStartDateTime
        item.RadiopharmaceuticalStartTime = "100000"
    values = _values(_run(datasets), 1)
    assert values["SUVbw Maximum"] == pytest.approx(8.0, rel=RTOL)


def test_series_time_after_acquisition_uses_the_earliest_acquisition() -> None:
    """QIBA: a series re-created after the scan; decay to the first acquisition."""
    datasets = make_pet_series()
    for ds in datasets:
        ds.SeriesTime = "123000"
    values = _values(_run(datasets), 1)
    assert values["SUVbw Maximum"] == pytest.approx(8.0, rel=RTOL)


def _without(*path: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        target = ds
        for keyword in path[:-1]:
            target = target[keyword].value[0]
        delattr(target, path[-1])

    return edit


def _set(keyword: str, value: object) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        setattr(ds, keyword, value)

    return edit


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_set("Units", "CNTS"), "Units must be BQML"),
        (_without("Units"), "Units must be BQML for SUV, got missing"),
        (_without("PatientWeight"), "Patient's Weight is missing"),
        (_set("PatientWeight", 0), "Patient's Weight must be positive"),
        (
            _without("RadiopharmaceuticalInformationSequence", "RadionuclideTotalDose"),
            "Radionuclide Total Dose is missing",
        ),
        (
            _without("RadiopharmaceuticalInformationSequence", "RadionuclideHalfLife"),
            "Radionuclide Half Life is missing",
        ),
        (
            _without("RadiopharmaceuticalInformationSequence", "RadiopharmaceuticalStartDateTime"),
            "radiopharmaceutical start time is missing",
        ),
        (_without("RadiopharmaceuticalInformationSequence"), "Radiopharmaceutical Information"),
        (_set("DecayCorrection", "NONE"), "Decay Correction NONE is not supported"),
        (_set("CorrectedImage", ["ATTN"]), "not corrected for DECY"),
        (_without("SeriesTime"), "Series Date / Series Time is missing"),
        (_set("SeriesTime", "090000"), "start time is after the scan start"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_unusable_inputs_give_a_reason(edit: Callable[[Dataset], None], reason: str) -> None:
    datasets = make_pet_series(PetPhantom(shape=(4, 8, 8), spheres=()))
    for ds in datasets:
        edit(ds)
        if reason.startswith("start time is after"):
            ds.AcquisitionTime = "090000"
    with pytest.raises(InputError, match=reason):
        _run(datasets)


def test_ct_is_refused() -> None:
    datasets = make_pet_series(PetPhantom(shape=(4, 8, 8), spheres=()))
    volume = load_volume(datasets)
    with pytest.raises(InputError, match="modality"):
        PetSuvPipeline().check_input(type(volume)(**{**volume.__dict__, "modality": "CT"}))


def test_no_lesions_gives_zero_totals() -> None:
    findings = _run(make_pet_series(PetPhantom(spheres=())))
    assert findings.segments == ()
    assert _values(findings, None)["Number of lesions at SUV 2.5"] == 0
