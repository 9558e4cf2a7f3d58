"""Derived image series (MPR, MIP): conformance, exact geometry, HU, identity."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, generate_uid

from dicom_sr import EncodingError, ResultIdentity, write_results
from dicom_sr.derived import image_type_value3, write_derived_series
from node.demo.phantom import make_chest_phantom
from pipelines.findings import Code, DerivedSeries, Findings
from pipelines.reformat import (
    MAXIMUM_INTENSITY_PROJECTION,
    MULTIPLANAR_REFORMATTING,
    ReformatPipeline,
    reformat,
    thick_slab_mip,
)
from pipelines.volume import Volume, load_volume


def _identity(number: int) -> ResultIdentity:
    return ResultIdentity(
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=number,
        series_description=f"ainode reformat {number}",
    )


@pytest.fixture(scope="module")
def phantom_volume() -> tuple[list[pydicom.Dataset], Volume]:
    """A small chest phantom with anisotropic pixels (row 1.5 mm, column 2 mm)."""
    phantom = make_chest_phantom(
        n_slices=16, rows=48, columns=40, pixel_spacing=(1.5, 2.0), slice_thickness=2.5
    )
    volume = load_volume(phantom.datasets)
    return [phantom.datasets[i] for i in volume.source_indices], volume


@pytest.fixture
def reformat_algorithm():
    from dicom_sr import AlgorithmIdentity

    return AlgorithmIdentity(name=ReformatPipeline.name, version=ReformatPipeline.version)


def _locate(images: list[pydicom.Dataset], point: np.ndarray) -> tuple[int, int, int]:
    """(image index, row, column) of a patient point, from the written attributes only."""
    orientation = np.asarray(images[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    spacing = np.asarray(images[0].PixelSpacing, dtype=float)
    distances = [
        float((point - np.asarray(i.ImagePositionPatient, dtype=float)) @ normal) for i in images
    ]
    k = int(np.argmin(np.abs(distances)))
    assert abs(distances[k]) < 1e-3
    offset = point - np.asarray(images[k].ImagePositionPatient, dtype=float)
    row, column = offset @ col_dir / spacing[0], offset @ row_dir / spacing[1]
    assert abs(row - round(row)) < 1e-3 and abs(column - round(column)) < 1e-3
    return k, round(row), round(column)


@pytest.mark.parametrize("plane", ["coronal", "sagittal"])
def test_voxel_lands_at_its_patient_coordinate(
    tmp_path, dciodvfy, phantom_volume, plane, device, reformat_algorithm
):
    sources, volume = phantom_volume
    derived = reformat(volume, plane)
    identity = _identity(40)
    images = write_derived_series(sources, derived, identity, device, reformat_algorithm)
    assert len(images) == derived.voxels.shape[0]
    for index in (0, len(images) // 2):
        dciodvfy(images[index], tmp_path / f"{plane}{index}.dcm")
    back = [pydicom.dcmread(tmp_path / f"{plane}{len(images) // 2}.dcm")]
    assert back[0].SOPClassUID == CTImageStorage
    assert list(back[0].ImageType) == ["DERIVED", "SECONDARY", "REFORMATTED"]
    rng = np.random.default_rng(1)
    voxels = [
        (3, 10, 7),
        (12, 40, 33),
        *(tuple(rng.integers(0, n) for n in volume.shape) for _ in range(20)),
    ]
    for f, r, c in voxels:
        point = (volume.affine @ np.array([f, r, c, 1.0]))[:3]
        k, row, column = _locate(list(images), point)
        image = images[k]
        hu = image.pixel_array[row, column] * float(image.RescaleSlope) + float(
            image.RescaleIntercept
        )
        assert hu == volume.voxels[f, r, c], (f, r, c)


def test_hu_geometry_and_identity(phantom_volume, device, reformat_algorithm):
    sources, volume = phantom_volume
    derived = reformat(volume, "coronal")
    identity = _identity(41)
    images = write_derived_series(sources, derived, identity, device, reformat_algorithm)
    stack = np.stack(
        [i.pixel_array * float(i.RescaleSlope) + float(i.RescaleIntercept) for i in images]
    )
    np.testing.assert_array_equal(stack, derived.voxels)  # HU preserved exactly
    first, second = images[0], images[1]
    assert first.SOPInstanceUID == identity.sop_instance_uid
    assert {i.SeriesInstanceUID for i in images} == {identity.series_instance_uid}
    assert [int(i.InstanceNumber) for i in images] == list(range(1, len(images) + 1))
    assert first.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert (
        first.PatientName == sources[0].PatientName
        and first.StudyInstanceUID == sources[0].StudyInstanceUID
    )
    step = np.asarray(second.ImagePositionPatient, float) - np.asarray(
        first.ImagePositionPatient, float
    )
    np.testing.assert_allclose(
        step, np.asarray(derived.slice_direction) * derived.spacing[0], atol=1e-6
    )
    np.testing.assert_allclose([float(v) for v in first.PixelSpacing], derived.spacing[1:])
    assert float(first.SliceThickness) == pytest.approx(derived.slice_thickness)
    assert float(first.SpacingBetweenSlices) == pytest.approx(derived.spacing[0])
    assert first.DerivationCodeSequence[0].CodeValue == MULTIPLANAR_REFORMATTING.value
    assert first.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert first.Modality == "CT" and first.RescaleType == "HU"
    assert (first.WindowCenter, first.WindowWidth) == (
        sources[0].WindowCenter,
        sources[0].WindowWidth,
    )
    again = write_derived_series(sources, derived, identity, device, reformat_algorithm)
    assert [i.SOPInstanceUID for i in again] == [i.SOPInstanceUID for i in images]


def test_mip_image_type_and_sources(tmp_path, dciodvfy, phantom_volume, device, reformat_algorithm):
    sources, volume = phantom_volume
    mip = thick_slab_mip(reformat(volume, "axial"), slab_mm=10.0)
    images = write_derived_series(sources, mip, _identity(42), device, reformat_algorithm)
    dciodvfy(images[1], tmp_path / "mip.dcm")
    assert list(images[1].ImageType) == ["DERIVED", "SECONDARY", "MIP"]
    assert float(images[1].SliceThickness) == pytest.approx(10.0)
    # an axial 10 mm slab crosses exactly the 4 axial source slices (2.5 mm) it covers
    centre = float(images[1].ImagePositionPatient[2])
    referenced = {i.ReferencedSOPInstanceUID for i in images[1].SourceImageSequence}
    expected = {
        s.SOPInstanceUID for s in sources if abs(float(s.ImagePositionPatient[2]) - centre) < 5.0
    }
    assert referenced == expected and len(expected) == 4


def test_mr_and_other_sources(tmp_path, dciodvfy, ct_series, device, algorithm):
    derived = DerivedSeries(
        description="Axial MPR",
        voxels=np.linspace(0.0, 1.0, 3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8),
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        spacing=(2.5, 1.25, 1.25),
        slice_thickness=2.5,
        derivation=MULTIPLANAR_REFORMATTING,
    )
    for modality, sop_class in (("MR", MRImageStorage), ("PT", SecondaryCaptureImageStorage)):
        sources = [copy.deepcopy(ds) for ds in ct_series]
        for ds in sources:
            ds.Modality = modality
        images = write_derived_series(sources, derived, _identity(43), device, algorithm)
        assert images[0].SOPClassUID == sop_class
        dciodvfy(images[0], tmp_path / f"{modality}.dcm")
        values = np.stack(
            [
                i.pixel_array * float(i.get("RescaleSlope", 1))
                + float(i.get("RescaleIntercept", 0))
                for i in images
            ]
        )
        np.testing.assert_allclose(values, derived.voxels, atol=1e-4)  # rescaled, not rounded


def test_image_type_from_derivation():
    assert image_type_value3(MAXIMUM_INTENSITY_PROJECTION) == "MIP"
    assert image_type_value3(Code("113079", "DCM", "Minimum intensity projection")) == "MINIP"
    assert image_type_value3(Code("X1", "99LOCAL", "Thick maximum intensity projection")) == "MIP"
    assert image_type_value3(MULTIPLANAR_REFORMATTING) == "REFORMATTED"


def test_bad_geometry_refused(ct_series, device, algorithm):
    derived = DerivedSeries(
        description="Skewed",
        voxels=np.zeros((2, 4, 4), dtype=np.float32),
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.6, 0.8, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        spacing=(1.0, 1.0, 1.0),
        slice_thickness=1.0,
        derivation=MULTIPLANAR_REFORMATTING,
    )
    with pytest.raises(EncodingError, match="orthonormal"):
        write_derived_series(ct_series, derived, _identity(44), device, algorithm)


def test_write_results_writes_each_derived_series(
    phantom_volume, seg_identity, sr_identity, device, reformat_algorithm
):
    sources, volume = phantom_volume
    findings = ReformatPipeline().run(volume)
    assert isinstance(findings, Findings) and len(findings.derived_series) == 4
    derived_identity = _identity(60)
    results = write_results(
        sources,
        findings,
        seg_identity,
        sr_identity,
        device,
        reformat_algorithm,
        identities={"derived": derived_identity},
    )
    series = list(dict.fromkeys(r.SeriesInstanceUID for r in results))
    assert len(series) == 4 and series[0] == derived_identity.series_instance_uid
    assert results[0].SOPInstanceUID == derived_identity.sop_instance_uid
    numbers = sorted({int(r.SeriesNumber) for r in results})
    assert numbers == [60, 61, 62, 63]
    assert (
        results[0].SeriesDescription
        == f"{findings.derived_series[0].description} (ainode reformat 60)"
    )
    assert len(results) == sum(d.voxels.shape[0] for d in findings.derived_series)
    # without a "derived" identity: name-based from the SEG identity, numbers base + 10 + i
    fallback = write_results(
        sources, findings, seg_identity, sr_identity, device, reformat_algorithm
    )
    again = write_results(sources, findings, seg_identity, sr_identity, device, reformat_algorithm)
    assert [r.SOPInstanceUID for r in fallback] == [r.SOPInstanceUID for r in again]
    assert sorted({int(r.SeriesNumber) for r in fallback}) == [911, 912, 913, 914]
