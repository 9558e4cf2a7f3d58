"""ct-anatomy on the synthetic chest phantom (known answers) and on real CT."""

from __future__ import annotations

import copy
import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.sr.coding import Code as DicomCode
from pydicom.uid import generate_uid

from node.demo.phantom import Phantom, make_chest_phantom
from pipelines import codes
from pipelines.ct_anatomy import CtAnatomyPipeline
from pipelines.errors import InputError
from pipelines.findings import Code, Findings
from pipelines.volume import Volume, load_volume


@pytest.fixture(scope="module")
def pipeline() -> CtAnatomyPipeline:
    instance = CtAnatomyPipeline()
    instance.initialize()
    return instance


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_chest_phantom()


def _read(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path)


def _by_label(findings: Findings) -> dict[str, dict[str, float]]:
    """``{label: {concept meaning: value}}``."""
    labels = {s.description.number: s.description.label for s in findings.segments}
    table: dict[str, dict[str, float]] = {label: {} for label in labels.values()}
    for m in findings.measurements:
        assert m.segment_number is not None
        table[labels[m.segment_number]][m.concept.meaning] = m.value
    return table


# The phantom ----------------------------------------------------------------


def test_phantom_is_one_valid_ct_series(phantom: Phantom) -> None:
    datasets = phantom.datasets
    assert len(datasets) == 64
    assert len({ds.SOPInstanceUID for ds in datasets}) == 64
    assert {ds.SeriesInstanceUID for ds in datasets} == {phantom.series_instance_uid}
    assert {ds.StudyInstanceUID for ds in datasets} == {phantom.study_instance_uid}
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, 65))
    first = datasets[0]
    assert first.SOPClassUID == pydicom.uid.CTImageStorage
    assert str(first.PatientName) == "PHANTOM^CHEST"
    assert first.PatientID == "AINODE-PHANTOM-001"
    assert float(first.RescaleIntercept) == -1024.0 and float(first.RescaleSlope) == 1.0
    buffer = BytesIO()
    first.save_as(buffer, enforce_file_format=True)
    again = pydicom.dcmread(BytesIO(buffer.getvalue()))
    assert again.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    np.testing.assert_array_equal(again.pixel_array, first.pixel_array)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
def test_phantom_passes_dciodvfy(phantom: Phantom, tmp_path: Path) -> None:
    path = tmp_path / "slice.dcm"
    phantom.datasets[10].save_as(path, enforce_file_format=True)
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    report = result.stdout + result.stderr
    assert "Error" not in report, report


def test_phantom_truth_is_consistent(phantom: Phantom) -> None:
    truth = phantom.true_volumes_ml
    assert set(truth) == {"body", "lungs", "bone"}
    assert 0 < truth["bone"] < truth["lungs"] < truth["body"]
    assert 10.0 < phantom.true_laa950_percent < 13.0


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"seed": 7, "emphysema_fraction": 0.30, "noise_hu": 15.0},
        {
            "n_slices": 40,
            "rows": 96,
            "columns": 112,
            "pixel_spacing": (2.5, 2.2),
            "slice_thickness": 4.0,
            "emphysema_fraction": 0.0,
        },
    ],
)
def test_phantom_volumes_and_emphysema_index(
    pipeline: CtAnatomyPipeline, options: dict[str, object]
) -> None:
    phantom = make_chest_phantom(**options)  # type: ignore[arg-type]
    findings = pipeline.run(load_volume(phantom.datasets))
    measured = _by_label(findings)
    assert list(measured) == ["Body", "Lungs", "Bone"]
    for label, key in (("Body", "body"), ("Lungs", "lungs"), ("Bone", "bone")):
        assert measured[label]["Volume"] == pytest.approx(phantom.true_volumes_ml[key], rel=0.03)
    laa = measured["Lungs"][codes.LAA950.meaning]
    assert laa == pytest.approx(phantom.true_laa950_percent, abs=1.0)
    assert -990 < measured["Lungs"]["Attenuation Coefficient"] < -800
    assert 600 < measured["Bone"]["Attenuation Coefficient"] < 800
    assert findings.notes == ()


def test_phantom_findings_are_complete(pipeline: CtAnatomyPipeline, phantom: Phantom) -> None:
    volume = load_volume(phantom.datasets)
    findings = pipeline.run(volume)
    assert findings.pipeline_name == "ct-anatomy" and findings.pipeline_version == "1.0.0"
    assert findings.source_sop_instance_uids == volume.sop_instance_uids
    descriptions = [s.description for s in findings.segments]
    assert [d.number for d in descriptions] == [1, 2, 3]
    assert [d.tracking_id for d in descriptions] == ["body", "lungs", "bone"]
    assert [d.property_type for d in descriptions] == [codes.ENTIRE_BODY, codes.LUNG, codes.BONE]
    assert len({d.color_rgb for d in descriptions}) == 3
    for segment in findings.segments:
        assert segment.mask.shape == volume.shape and segment.mask.any()
    body, lungs, bone = (s.mask for s in findings.segments)
    assert not (lungs & ~body).any() and not (bone & ~body).any()
    assert not (lungs & bone).any()
    units = {(m.concept, m.unit) for m in findings.measurements}
    assert (codes.VOLUME, codes.MILLILITER) in units
    assert (codes.ATTENUATION_COEFFICIENT, codes.HOUNSFIELD_UNIT) in units
    assert (codes.LAA950, codes.PERCENT) in units
    means = [m for m in findings.measurements if m.concept == codes.ATTENUATION_COEFFICIENT]
    assert all(m.derivation == codes.MEAN for m in means)


# Real CT --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["693_UNCR.dcm", "693_J2KR.dcm"])
def test_real_head_ct_gives_body_skull_and_intracranial_space(
    pipeline: CtAnatomyPipeline, name: str
) -> None:
    """A real head CT slice (5 mm) at the level of the lateral ventricles."""
    volume = load_volume([_read(name)])
    findings = pipeline.run(volume)
    measured = _by_label(findings)
    assert list(measured) == ["Body", "Skull", "Intracranial space"]
    assert any("No lungs" in note for note in findings.notes)
    thickness_cm = volume.spacing[0] / 10.0
    body_area_cm2 = measured["Body"]["Volume"] / thickness_cm
    intracranial_area_cm2 = measured["Intracranial space"]["Volume"] / thickness_cm
    assert 120 < body_area_cm2 < 260  # an adult head, without the head holder
    assert 80 < intracranial_area_cm2 < 180
    assert 0.1 < measured["Skull"]["Volume"] / measured["Body"]["Volume"] < 0.35
    assert 500 < measured["Skull"]["Attenuation Coefficient"] < 1200
    assert 15 < measured["Intracranial space"]["Attenuation Coefficient"] < 50  # brain and CSF
    skull = findings.segments[1].description
    assert skull.property_type == codes.SKULL and skull.tracking_id == "skull"
    body_mask = findings.segments[0].mask[0]
    columns = np.flatnonzero(body_mask.any(axis=0))
    assert (columns[-1] - columns[0]) * volume.spacing[2] < 200  # mm: the head holder is not body


def test_real_head_ct_at_the_skull_base_excludes_sinus_air(pipeline: CtAnatomyPipeline) -> None:
    """A gantry-tilted real head CT slice through the skull base and mastoid air cells."""
    volume = load_volume([_read("J2K_pixelrep_mismatch.dcm")])
    findings = pipeline.run(volume)
    measured = _by_label(findings)
    assert list(measured) == ["Body", "Skull", "Intracranial space"]
    assert 0 < measured["Intracranial space"]["Attenuation Coefficient"] < 60
    intracranial = findings.segments[2].mask
    assert float(volume.voxels[intracranial].min()) > -100  # no air inside


def test_real_head_slices_stacked_into_a_volume(pipeline: CtAnatomyPipeline) -> None:
    """Five copies of a real head slice, 5 mm apart: 3-D volumes are five slabs."""
    single = _by_label(pipeline.run(load_volume([_read("693_UNCR.dcm")])))
    original = _read("693_UNCR.dcm")
    stack = []
    for k in range(5):
        ds = copy.deepcopy(original)
        ds.SOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [-122.5, -112.4, 47.0 + 5.0 * k]
        stack.append(ds)
    measured = _by_label(pipeline.run(load_volume(stack[::-1])))
    for label in ("Body", "Skull", "Intracranial space"):
        assert measured[label]["Volume"] == pytest.approx(5 * single[label]["Volume"], rel=1e-6)


def test_real_abdomen_ct_has_bone_but_no_lungs(pipeline: CtAnatomyPipeline) -> None:
    """A real abdominal slice with bowel gas: the gas is not lung, the spine is bone."""
    ds = _read("explicit_VR-UN.dcm")
    ds.SliceThickness = 1.0  # absent in the test file; needed for a one-image volume
    findings = pipeline.run(load_volume([ds]))
    measured = _by_label(findings)
    assert list(measured) == ["Body", "Bone"]
    assert 300 < measured["Bone"]["Attenuation Coefficient"] < 1200


# Synthetic edge cases -------------------------------------------------------


def _cylinder_volume(pocket_hu: float | None, shape: tuple[int, int, int] = (30, 80, 80)) -> Volume:
    """A soft-tissue cylinder (2.5 x 2 x 2 mm voxels), optionally with an 80 mL air pocket."""
    n, rows, columns = shape
    z, y, x = np.ogrid[:n, :rows, :columns]
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to((y - 40) ** 2 + (x - 40) ** 2 <= 35**2, shape)] = 40.0
    if pocket_hu is not None:
        pocket = ((z - 15) / 12.0) ** 2 + ((y - 40) / 13.0) ** 2 + ((x - 40) / 13.0) ** 2 <= 1.0
        hu[pocket] = pocket_hu
    return Volume(
        voxels=hu,
        spacing=(2.5, 2.0, 2.0),
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        sop_instance_uids=tuple(str(k) for k in range(n)),
        source_frame_numbers=(1,) * n,
        source_indices=tuple(range(n)),
        modality="CT",
        series_instance_uid="1.2.3",
        sop_class_uid=pydicom.uid.CTImageStorage,
    )


def test_pure_gas_pocket_is_not_lung(pipeline: CtAnatomyPipeline) -> None:
    findings = pipeline.run(_cylinder_volume(pocket_hu=-1000.0))
    assert [s.description.label for s in findings.segments] == ["Body"]
    assert any("No lungs" in note for note in findings.notes)
    assert any("No bone" in note for note in findings.notes)


def test_air_pocket_of_lung_density_is_lung(pipeline: CtAnatomyPipeline) -> None:
    volume = _cylinder_volume(pocket_hu=-850.0)
    findings = pipeline.run(volume)
    measured = _by_label(findings)
    assert list(measured) == ["Body", "Lungs"]
    expected = float(np.count_nonzero(volume.voxels == -850.0)) * volume.voxel_volume_ml
    assert measured["Lungs"]["Volume"] == pytest.approx(expected)
    assert measured["Lungs"][codes.LAA950.meaning] == 0.0


def test_empty_image_is_refused(pipeline: CtAnatomyPipeline) -> None:
    volume = _cylinder_volume(pocket_hu=None)
    empty = Volume(
        **{**volume.__dict__, "voxels": np.full(volume.shape, -1000.0, dtype=np.float32)}
    )
    with pytest.raises(InputError, match="no body"):
        pipeline.run(empty)


def test_mr_is_refused(pipeline: CtAnatomyPipeline) -> None:
    volume = load_volume([_read("MR_small.dcm")])
    with pytest.raises(InputError, match="modality MR"):
        pipeline.check_input(volume)
    with pytest.raises(InputError):
        pipeline.run(volume)


def test_pipeline_identity() -> None:
    assert CtAnatomyPipeline.name == "ct-anatomy"
    assert CtAnatomyPipeline.version == "1.0.0"
    assert CtAnatomyPipeline.accepts.modalities == frozenset({"CT"})
    assert CtAnatomyPipeline.accepts.min_frames == 1
    assert CtAnatomyPipeline.model_checksum is None


# Codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "official"),
    [
        (codes.ANATOMICAL_STRUCTURE, dicom_codes.SCT.AnatomicalStructure),
        (codes.TISSUE, dicom_codes.SCT.Tissue),
        (codes.ENTIRE_BODY, dicom_codes.SCT.EntireBody),
        (codes.LUNG, dicom_codes.SCT.Lung),
        (codes.BONE, dicom_codes.SCT.Bone),
        (codes.SKULL, dicom_codes.SCT.Skull),
        (codes.INTRACRANIAL, dicom_codes.SCT.Intracranial),
        (codes.BRAIN, dicom_codes.SCT.Brain),
        (codes.VOLUME, dicom_codes.SCT.Volume),
        (codes.MEAN, dicom_codes.SCT.Mean),
        (codes.ATTENUATION_COEFFICIENT, dicom_codes.DCM.AttenuationCoefficient),
        (codes.HOUNSFIELD_UNIT, dicom_codes.UCUM.HounsfieldUnit),
        (codes.PERCENT, dicom_codes.UCUM.Percent),
    ],
)
def test_codes_match_the_dicom_dictionary(ours: Code, official: DicomCode) -> None:
    assert (ours.value, ours.scheme, ours.meaning) == (
        official.value,
        official.scheme_designator,
        official.meaning,
    )


def test_local_codes_use_a_private_scheme() -> None:
    assert codes.LAA950.scheme.startswith("99")
    assert Code("mL", "UCUM", "milliliter") == codes.MILLILITER
