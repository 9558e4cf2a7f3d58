"""load_volume: sorting, geometry, modality values, decoding and refusals."""

from __future__ import annotations

import copy
import random

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import pixel_array
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipelines.errors import InputError
from pipelines.volume import Volume, load_volume


def _read(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path)


def _slice(
    position: tuple[float, float, float],
    pixels: np.ndarray,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    series_uid: str = "1.2.3.4",
    pixel_spacing: tuple[float, float] = (0.5, 0.75),
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> Dataset:
    """A minimal single-frame CT image with native pixel data."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.3.5"
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(pixel_spacing)
    ds.SliceThickness = 9.0  # deliberately not the spacing
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _stack(
    n: int,
    step: tuple[float, float, float],
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    shape: tuple[int, int] = (6, 8),
) -> list[Dataset]:
    """``n`` slices whose pixels all equal 1000 + slice index."""
    return [
        _slice(tuple(10.0 + k * s for s in step), np.full(shape, 1000 + k), orientation)  # type: ignore[arg-type]
        for k in range(n)
    ]


def test_shuffled_slices_are_sorted_along_the_normal() -> None:
    datasets = _stack(7, (0.0, 0.0, 2.5))
    shuffled = datasets[:]
    random.Random(3).shuffle(shuffled)
    volume = load_volume(shuffled)
    assert volume.shape == (7, 6, 8)
    assert volume.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in datasets)
    assert [shuffled[i] for i in volume.source_indices] == datasets
    assert volume.source_frame_numbers == (1,) * 7
    # stored 1000 + k, intercept -1024
    np.testing.assert_array_equal(volume.voxels[:, 0, 0], np.arange(7) - 24.0)
    assert volume.origin == (10.0, 10.0, 10.0)
    assert volume.slice_direction == (0.0, 0.0, 1.0)


def test_descending_positions_and_spacing_come_from_positions() -> None:
    datasets = _stack(5, (0.0, 0.0, -1.25))  # head first, as scanners send them
    volume = load_volume(datasets)
    assert volume.spacing == pytest.approx((1.25, 0.5, 0.75))  # not SliceThickness 9
    assert volume.source_indices == (4, 3, 2, 1, 0)
    assert volume.origin == pytest.approx((10.0, 10.0, 5.0))
    assert volume.voxel_volume_ml == pytest.approx(1.25 * 0.5 * 0.75 / 1000)
    assert volume.frame_step is None


def test_affine_maps_indices_to_positions_for_an_oblique_sagittal_stack() -> None:
    orientation = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal: normal = row x column = (-1, 0, 0)
    datasets = _stack(4, (-3.0, 0.0, 0.0), orientation)[::-1]
    volume = load_volume(datasets)
    assert volume.source_indices == (3, 2, 1, 0)  # given in reverse order
    assert volume.slice_direction == pytest.approx((-1.0, 0.0, 0.0))
    assert volume.spacing[0] == pytest.approx(3.0)
    affine = volume.affine
    for frame, index in enumerate(volume.source_indices):
        expected = np.array([float(v) for v in datasets[index].ImagePositionPatient])
        np.testing.assert_allclose(affine @ [frame, 0, 0, 1], [*expected, 1.0])
    # row index 2 moves 2 x row spacing along the column direction (0, 0, -1)
    np.testing.assert_allclose(affine @ [0, 2, 0, 1] - affine @ [0, 0, 0, 1], [0, 0, -1.0, 0])
    # column index 2 moves 2 x column spacing along the row direction (0, 1, 0)
    np.testing.assert_allclose(affine @ [0, 0, 2, 1] - affine @ [0, 0, 0, 1], [0, 1.5, 0, 0])


def test_gantry_tilted_stack_keeps_the_sheared_step() -> None:
    tilt = np.deg2rad(20.0)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(-np.sin(tilt)))
    datasets = _stack(6, (0.0, 0.0, 5.0), orientation)  # table moves along z only
    volume = load_volume(datasets)
    assert volume.spacing[0] == pytest.approx(5.0 * np.cos(tilt), rel=1e-4)
    assert volume.frame_step == pytest.approx((0.0, 0.0, 5.0))
    for frame in range(6):
        np.testing.assert_allclose(
            volume.affine @ [frame, 0, 0, 1], [10.0, 10.0, 10.0 + 5.0 * frame, 1.0], atol=1e-6
        )


def test_voxels_are_read_only_float32() -> None:
    volume = load_volume(_stack(2, (0.0, 0.0, 1.0)))
    assert volume.voxels.dtype == np.float32
    with pytest.raises(ValueError):
        volume.voxels[0, 0, 0] = 1.0


def test_rescale_slope_and_intercept_apply_per_slice() -> None:
    first = _slice((0.0, 0.0, 0.0), np.full((4, 4), 10), slope=2.0, intercept=5.0)
    second = _slice((0.0, 0.0, 1.0), np.full((4, 4), 10), slope=0.5, intercept=-1.0)
    volume = load_volume([second, first])
    np.testing.assert_array_equal(volume.voxels[:, 0, 0], [25.0, 4.0])


def test_real_ct_image_in_hounsfield_units() -> None:
    ds = _read("CT_small.dcm")
    volume = load_volume([ds])
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume.voxels[0], expected.astype(np.float32))
    assert volume.modality == "CT"
    assert volume.series_instance_uid == ds.SeriesInstanceUID
    assert volume.sop_class_uid == CTImageStorage
    assert volume.spacing == pytest.approx((5.0, 0.661468, 0.661468))  # one image: Slice Thickness
    assert -1100 < volume.voxels.min() < -500 and 500 < volume.voxels.max() < 3000


def test_real_mr_image_is_loaded_without_rescale() -> None:
    ds = _read("MR_small.dcm")
    volume = load_volume([ds])
    np.testing.assert_array_equal(volume.voxels[0], ds.pixel_array.astype(np.float32))
    assert volume.modality == "MR"


def test_real_multi_slice_ct_series_shuffled() -> None:
    """Five real CT slices (pydicom dicomdirtests, reduced to 16 x 16 pixels)."""
    paths = get_testdata_files("dicomdirtests/98892001/CT5N/*")
    datasets = [pydicom.dcmread(p) for p in sorted(paths)]
    random.Random(1).shuffle(datasets)
    volume = load_volume(datasets)
    assert volume.shape == (5, 16, 16)
    assert volume.spacing[0] == pytest.approx(2.5)
    z = [float(datasets[i].ImagePositionPatient[2]) for i in volume.source_indices]
    assert z == sorted(z)
    for frame, index in enumerate(volume.source_indices):
        ds = datasets[index]
        expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(volume.voxels[frame], expected)


def test_real_series_with_a_gap_is_refused() -> None:
    """Real head CT thumbnails: three contiguous slices and one 200 mm away."""
    datasets = [pydicom.dcmread(p) for p in get_testdata_files("dicomdirtests/77654033/CT2/*")]
    with pytest.raises(InputError, match="irregular slice spacing"):
        load_volume(datasets)


def test_real_images_with_differing_orientations_are_refused() -> None:
    datasets = [pydicom.dcmread(p) for p in get_testdata_files("dicomdirtests/98892001/CT2N/*")]
    with pytest.raises(InputError, match="differing Image Orientation"):
        load_volume(datasets)


def test_real_images_from_several_series_are_refused() -> None:
    datasets = [pydicom.dcmread(p) for p in get_testdata_files("dicomdirtests/98892003/MR2/*")]
    with pytest.raises(InputError, match="SeriesInstanceUID"):
        load_volume(datasets)


def test_real_enhanced_ct_frames_are_sorted() -> None:
    """Enhanced CT: geometry and rescale from the functional groups."""
    ds = _read("eCT_Supplemental.dcm")
    volume = load_volume([ds])
    stored = pixel_array(ds)
    assert volume.shape == (2, 512, 512)
    # normal = (-1,0,0) x (0,1,0) = (0,0,-1): frame 2 (z = -149) comes first
    assert volume.source_frame_numbers == (2, 1)
    assert volume.source_indices == (0, 0)
    assert volume.sop_instance_uids == (ds.SOPInstanceUID,) * 2
    assert volume.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    assert volume.origin == pytest.approx((99.5, -301.5, -149.0))
    np.testing.assert_array_equal(volume.voxels[0], stored[1] - 1024.0)
    np.testing.assert_array_equal(volume.voxels[1], stored[0] - 1024.0)


def _with_functional_groups(ds: Dataset, step_mm: float = 1.5) -> Dataset:
    """Real enhanced MR pixels given the geometry the test file lacks."""
    ds = copy.deepcopy(ds)
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures = Dataset()
    measures.PixelSpacing = [0.9, 0.8]
    measures.SliceThickness = 3.0
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(int(ds.NumberOfFrames)):
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, -k * step_mm]  # frame 1 highest
        item = Dataset()
        item.PlanePositionSequence = Sequence([position])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    return ds


@pytest.mark.parametrize(
    "name",
    [
        "emri_small.dcm",
        "emri_small_big_endian.dcm",
        "emri_small_RLE.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
    ],
)
def test_enhanced_mr_multi_frame_in_every_transfer_syntax(name: str) -> None:
    reference = pixel_array(_read("emri_small.dcm"))
    volume = load_volume([_with_functional_groups(_read(name))])
    n_frames = reference.shape[0]
    assert volume.shape == reference.shape
    assert volume.source_frame_numbers == tuple(range(n_frames, 0, -1))
    assert volume.spacing == pytest.approx((1.5, 0.9, 0.8))
    np.testing.assert_array_equal(volume.voxels, reference[::-1].astype(np.float32))


def test_enhanced_mr_without_functional_groups_is_refused() -> None:
    with pytest.raises(InputError, match="Functional Groups"):
        load_volume([_read("emri_small.dcm")])


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("693_J2KR.dcm", "693_UNCR.dcm"),  # JPEG 2000 lossless, real head CT
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 lossless
        ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE lossless
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
        ("MR_small_bigendian.dcm", "MR_small.dcm"),
        ("MR_small_implicit.dcm", "MR_small.dcm"),
    ],
)
def test_compressed_single_frames_decode_to_the_uncompressed_values(
    compressed: str, reference: str
) -> None:
    got = load_volume([_read(compressed)])
    want = load_volume([_read(reference)])
    np.testing.assert_array_equal(got.voxels, want.voxels)
    assert got.spacing == want.spacing


def test_jpeg_lossless_real_ct() -> None:
    """JPEG Lossless, Non-Hierarchical, First-Order Prediction (a real neck CT)."""
    ds = _read("bad_sequence.dcm")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
    volume = load_volume([ds])
    assert volume.shape == (1, 512, 512)
    assert -1100 < float(volume.voxels.min()) < -900
    assert 800 < float(volume.voxels.max()) < 2000  # vertebra
    assert -50 < float(np.median(volume.voxels)) < 150  # soft tissue


def test_jpeg_lossless_process_14_with_geometry() -> None:
    ds = _read("JPEG-LL.dcm")
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SliceThickness = 1
    volume = load_volume([ds])
    np.testing.assert_array_equal(volume.voxels[0], pixel_array(ds).astype(np.float32))


# Refusals -----------------------------------------------------------------


def test_no_images() -> None:
    with pytest.raises(InputError, match="no images"):
        load_volume([])


def test_no_pixel_data() -> None:
    datasets = _stack(3, (0.0, 0.0, 1.0))
    del datasets[1].PixelData
    with pytest.raises(InputError, match="image 1 has no pixel data"):
        load_volume(datasets)


@pytest.mark.parametrize(
    ("keyword", "message"),
    [
        ("ImagePositionPatient", "Image Position"),
        ("ImageOrientationPatient", "Image Orientation"),
        ("PixelSpacing", "Pixel Spacing"),
    ],
)
def test_missing_geometry(keyword: str, message: str) -> None:
    datasets = _stack(3, (0.0, 0.0, 1.0))
    delattr(datasets[2], keyword)
    with pytest.raises(InputError, match=message):
        load_volume(datasets)


def test_malformed_geometry() -> None:
    datasets = _stack(2, (0.0, 0.0, 1.0))
    datasets[0].ImagePositionPatient = [0.0, 0.0]
    with pytest.raises(InputError, match="3 finite values"):
        load_volume(datasets)


def test_differing_orientations() -> None:
    datasets = _stack(3, (0.0, 0.0, 1.0))
    datasets[1].ImageOrientationPatient = [1, 0, 0, 0, 0.99, 0.141]
    with pytest.raises(InputError, match="differing Image Orientation"):
        load_volume(datasets)


def test_duplicate_positions() -> None:
    datasets = _stack(3, (0.0, 0.0, 1.0))
    datasets[2].ImagePositionPatient = datasets[0].ImagePositionPatient
    with pytest.raises(InputError, match="share a position"):
        load_volume(datasets)


def test_positions_off_one_line() -> None:
    datasets = _stack(4, (0.0, 0.0, 1.0))
    datasets[2].ImagePositionPatient = [30.0, 10.0, 12.0]
    with pytest.raises(InputError, match="one line"):
        load_volume(datasets)


def test_mixed_rows_and_columns() -> None:
    datasets = _stack(2, (0.0, 0.0, 1.0))
    datasets.append(_slice((10.0, 10.0, 12.0), np.zeros((6, 9))))
    with pytest.raises(InputError, match="differ in size"):
        load_volume(datasets)


def test_colour_images_are_refused() -> None:
    with pytest.raises(InputError, match="not monochrome"):
        load_volume([_read("SC_rgb.dcm")])


def test_missing_transfer_syntax() -> None:
    datasets = _stack(2, (0.0, 0.0, 1.0))
    del datasets[0].file_meta.TransferSyntaxUID
    with pytest.raises(InputError, match="Transfer Syntax"):
        load_volume(datasets)


def test_single_image_without_thickness() -> None:
    ds = _stack(1, (0.0, 0.0, 1.0))[0]
    del ds.SliceThickness
    with pytest.raises(InputError, match="Slice Thickness"):
        load_volume([ds])


def test_messages_carry_no_patient_data() -> None:
    ds = _read("CT_small.dcm")
    del ds.PixelSpacing
    with pytest.raises(InputError) as info:
        load_volume([ds])
    for value in (str(ds.PatientName), str(ds.PatientID), str(ds.SOPInstanceUID)):
        assert value not in str(info.value)


def test_volume_validates_its_arrays() -> None:
    with pytest.raises(InputError, match="float32"):
        Volume(
            voxels=np.zeros((1, 2, 2)),
            spacing=(1.0, 1.0, 1.0),
            origin=(0.0, 0.0, 0.0),
            row_direction=(1.0, 0.0, 0.0),
            column_direction=(0.0, 1.0, 0.0),
            slice_direction=(0.0, 0.0, 1.0),
            sop_instance_uids=("1",),
            source_frame_numbers=(1,),
            source_indices=(0,),
            modality="CT",
            series_instance_uid="1.2",
        )
