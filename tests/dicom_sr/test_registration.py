"""Spatial Registration objects (rigid and deformable): conformance, matrices, references."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeformableSpatialRegistrationStorage,
    SpatialRegistrationStorage,
    generate_uid,
)

from dicom_sr import EncodingError, ResultIdentity, write_results
from dicom_sr.registration import (
    matrix_type,
    write_deformable_registration,
    write_spatial_registration,
)
from dicom_sr.registration.writer import grid_steps
from pipelines.findings import Findings, Registration
from tests.dicom_sr.conftest import N_COLUMNS, N_FRAMES, N_ROWS, _ct_slice


def _identity(number: int) -> ResultIdentity:
    return ResultIdentity(
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=number,
        series_description="ainode prior-compare registration",
    )


def _rigid(angle: float = 0.1, translation=(5.0, -3.0, 2.0)) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.eye(4)
    matrix[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    matrix[:3, 3] = translation
    return matrix


@pytest.fixture
def prior_series(ct_series):
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    return [_ct_slice(i, study, series, frame_of_reference) for i in range(N_FRAMES)]


def _registration(prior, matrix, deformation=None) -> Registration:
    return Registration(
        prior_study_instance_uid=str(prior[0].StudyInstanceUID),
        prior_series_instance_uid=str(prior[0].SeriesInstanceUID),
        prior_frame_of_reference_uid=str(prior[0].FrameOfReferenceUID),
        matrix=tuple(tuple(float(v) for v in row) for row in matrix),
        deformation=deformation,
    )


def _matrix_of(item) -> np.ndarray:
    matrix = item.MatrixRegistrationSequence[0].MatrixSequence[0]
    return np.asarray(matrix.FrameOfReferenceTransformationMatrix, dtype=float).reshape(4, 4)


def test_spatial_registration(tmp_path, dciodvfy, ct_series, prior_series, device, algorithm):
    matrix = _rigid()
    identity = _identity(930)
    ds = write_spatial_registration(
        ct_series,
        _registration(prior_series, matrix),
        identity,
        device,
        algorithm,
        prior_images=prior_series,
    )
    dciodvfy(ds, tmp_path / "reg.dcm")
    back = pydicom.dcmread(tmp_path / "reg.dcm")
    assert back.SOPClassUID == SpatialRegistrationStorage and back.Modality == "REG"
    assert back.SOPInstanceUID == identity.sop_instance_uid
    assert back.FrameOfReferenceUID == ct_series[0].FrameOfReferenceUID
    assert back.PatientID == ct_series[0].PatientID
    assert back.StudyInstanceUID == ct_series[0].StudyInstanceUID
    current, prior = back.RegistrationSequence
    assert current.FrameOfReferenceUID == ct_series[0].FrameOfReferenceUID
    np.testing.assert_array_equal(_matrix_of(current), np.eye(4))
    assert prior.FrameOfReferenceUID == prior_series[0].FrameOfReferenceUID
    np.testing.assert_allclose(_matrix_of(prior), matrix, atol=1e-9)  # prior -> current
    assert (
        prior.MatrixRegistrationSequence[0]
        .MatrixSequence[0]
        .FrameOfReferenceTransformationMatrixType
        == "RIGID"
    )
    assert [r.ReferencedSOPInstanceUID for r in prior.ReferencedImageSequence] == [
        p.SOPInstanceUID for p in prior_series
    ]
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_series[0].SeriesInstanceUID
    other = back.StudiesContainingOtherReferencedInstancesSequence[0]
    assert other.StudyInstanceUID == prior_series[0].StudyInstanceUID
    assert other.ReferencedSeriesSequence[0].SeriesInstanceUID == prior_series[0].SeriesInstanceUID


def test_spatial_registration_without_prior_images(
    tmp_path, dciodvfy, ct_series, prior_series, device, algorithm
):
    matrix = _rigid()
    matrix[:3, :3] *= [[1.0, 1.02, 0.97]]  # no longer a rotation
    ds = write_spatial_registration(
        ct_series, _registration(prior_series, matrix), _identity(931), device, algorithm
    )
    dciodvfy(ds, tmp_path / "affine.dcm")
    prior = pydicom.dcmread(tmp_path / "affine.dcm").RegistrationSequence[1]
    assert "ReferencedImageSequence" not in prior
    assert (
        prior.MatrixRegistrationSequence[0]
        .MatrixSequence[0]
        .FrameOfReferenceTransformationMatrixType
        == "AFFINE"
    )


def test_matrix_types():
    assert matrix_type(np.eye(4)) == "RIGID"
    assert matrix_type(_rigid(0.7)) == "RIGID"
    scaled = _rigid(0.3)
    scaled[:3, :3] *= 1.1
    assert matrix_type(scaled) == "RIGID_SCALE"
    mirrored = np.diag([-1.0, 1.0, 1.0, 1.0])
    assert matrix_type(mirrored) == "AFFINE"


def test_deformable_registration(tmp_path, dciodvfy, ct_series, prior_series, device, algorithm):
    matrix = _rigid()
    rng = np.random.default_rng(0)
    field = rng.normal(size=(3, N_FRAMES, N_ROWS, N_COLUMNS)).astype(np.float32)
    identity = _identity(932)
    ds = write_deformable_registration(
        ct_series, _registration(prior_series, matrix, field), identity, device, algorithm
    )
    dciodvfy(ds, tmp_path / "dreg.dcm")
    back = pydicom.dcmread(tmp_path / "dreg.dcm")
    assert back.SOPClassUID == DeformableSpatialRegistrationStorage and back.Modality == "REG"
    current, prior = back.DeformableRegistrationSequence
    assert current.SourceFrameOfReferenceUID == ct_series[0].FrameOfReferenceUID
    assert prior.SourceFrameOfReferenceUID == prior_series[0].FrameOfReferenceUID
    pre = prior.PreDeformationMatrixRegistrationSequence[0]
    pre_matrix = np.asarray(pre.FrameOfReferenceTransformationMatrix, dtype=float).reshape(4, 4)
    np.testing.assert_allclose(pre_matrix, np.linalg.inv(matrix), atol=1e-8)  # current -> prior
    grid = prior.DeformableRegistrationGridSequence[0]
    steps = grid_steps((N_FRAMES, N_ROWS, N_COLUMNS), (2.5, 1.25, 1.25))
    assert steps == (1, 2, 2)
    dims = [int(v) for v in grid.GridDimensions]
    assert dims == [N_COLUMNS // 2, N_ROWS // 2, N_FRAMES]
    np.testing.assert_allclose([float(v) for v in grid.GridResolution], [2.5, 2.5, 2.5])
    np.testing.assert_allclose(
        [float(v) for v in grid.ImagePositionPatient], ct_series[0].ImagePositionPatient
    )
    vectors = np.frombuffer(grid.VectorGridData, dtype="<f4").reshape(dims[2], dims[1], dims[0], 3)
    np.testing.assert_array_equal(vectors, np.moveaxis(field[:, ::1, ::2, ::2], 0, -1))
    # the sample point of a grid node in the prior is inv(matrix) @ p + u(p)
    k, j, i = 5, 7, 9
    node = np.asarray(grid.ImagePositionPatient, float) + np.array([i * 2.5, j * 2.5, k * 2.5])
    sample = (pre_matrix @ np.append(node, 1.0))[:3] + vectors[k, j, i]
    expected = (np.linalg.inv(matrix) @ np.append(node, 1.0))[:3] + field[:, k, 2 * j, 2 * i]
    np.testing.assert_allclose(sample, expected, atol=1e-5)


def test_deformable_needs_matching_grid(ct_series, prior_series, device, algorithm):
    field = np.zeros((3, N_FRAMES, N_ROWS, N_COLUMNS - 1), dtype=np.float32)
    with pytest.raises(EncodingError, match="shape"):
        write_deformable_registration(
            ct_series,
            _registration(prior_series, _rigid(), field),
            _identity(933),
            device,
            algorithm,
        )
    with pytest.raises(EncodingError, match="no deformation"):
        write_deformable_registration(
            ct_series, _registration(prior_series, _rigid()), _identity(933), device, algorithm
        )


def test_same_frame_of_reference_refused(ct_series, device, algorithm):
    with pytest.raises(EncodingError, match="Frame of Reference"):
        write_spatial_registration(
            ct_series, _registration(ct_series, _rigid()), _identity(934), device, algorithm
        )


def test_grid_is_capped():
    assert grid_steps((300, 512, 512), (0.5, 0.5, 0.5)) == (6, 6, 6)
    steps = grid_steps((2000, 2048, 2048), (3.0, 3.0, 3.0))
    count = np.prod([-(-n // s) for n, s in zip((2000, 2048, 2048), steps, strict=True)])
    assert count <= 2_000_000


def test_write_results_writes_registrations(
    ct_series, prior_series, seg_identity, sr_identity, device, algorithm
):
    field = np.zeros((3, N_FRAMES, N_ROWS, N_COLUMNS), dtype=np.float32)
    findings = Findings(
        pipeline_name=algorithm.name,
        pipeline_version=algorithm.version,
        source_sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in ct_series),
        registrations=(_registration(prior_series, _rigid(), field),),
    )
    reg_identity = _identity(940)
    sr, rigid, deformable = write_results(
        ct_series,
        findings,
        seg_identity,
        sr_identity,
        device,
        algorithm,
        identities={"reg": reg_identity},
        prior_images=prior_series,
    )
    assert sr.Modality == "SR"
    assert rigid.SOPClassUID == SpatialRegistrationStorage
    assert rigid.SOPInstanceUID == reg_identity.sop_instance_uid
    assert deformable.SOPClassUID == DeformableSpatialRegistrationStorage
    assert (
        deformable.SeriesInstanceUID == rigid.SeriesInstanceUID == reg_identity.series_instance_uid
    )
    assert [int(rigid.InstanceNumber), int(deformable.InstanceNumber)] == [1, 2]
    # a retry re-sends the same objects
    again = write_results(
        ct_series,
        findings,
        seg_identity,
        sr_identity,
        device,
        algorithm,
        identities={"reg": reg_identity},
        prior_images=prior_series,
    )
    assert [d.SOPInstanceUID for d in again] == [
        sr.SOPInstanceUID,
        rigid.SOPInstanceUID,
        deformable.SOPInstanceUID,
    ]
    # no "reg" identity: the registration is reported in the SR only
    (report,) = write_results(ct_series, findings, seg_identity, sr_identity, device, algorithm)
    assert report.Modality == "SR"
