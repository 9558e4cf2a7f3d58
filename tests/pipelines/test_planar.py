"""Every modality loads: planar CR / US (colour, palette, cine) and the series header."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from pipelines.errors import InputError
from pipelines.planar import select_frame
from pipelines.volume import load_volume


def _read(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path)


@pytest.mark.parametrize(
    ("name", "shape", "spacing_source"),
    [
        ("RG1_UNCR.dcm", (1, 1955, 1841), "nominal"),  # CR, Pixel Spacing 0\0
        ("RG3_UNCR.dcm", (1, 1760, 1760), "nominal"),
        ("US1_UNCR.dcm", (1, 480, 640), "nominal"),  # RGB
        ("OBXXXX1A.dcm", (1, 600, 800), "SequenceOfUltrasoundRegions"),  # palette colour
        ("OBXXXX1A_2frame.dcm", (2, 600, 800), "SequenceOfUltrasoundRegions"),  # cine
        ("gdcm-US-ALOKA-16.dcm", (1, 480, 640), "SequenceOfUltrasoundRegions"),
    ],
)
def test_planar_images_load_as_planar_volumes(
    name: str, shape: tuple[int, ...], spacing_source: str
) -> None:
    volume = load_volume([_read(name)])
    assert volume.planar and volume.shape == shape
    assert volume.header["SpacingSource"] == spacing_source
    assert volume.source_frame_numbers == tuple(range(1, shape[0] + 1))
    assert np.isfinite(volume.voxels).all() and volume.voxels.max() > volume.voxels.min()


def test_ultrasound_region_spacing_is_in_mm() -> None:
    volume = load_volume([_read("OBXXXX1A.dcm")])
    assert volume.spacing[1:] == pytest.approx((0.2622878766, 0.2622878766))


def test_compressed_planar_images_decode_to_the_uncompressed_values() -> None:
    np.testing.assert_array_equal(
        load_volume([_read("RG1_J2KR.dcm")]).voxels, load_volume([_read("RG1_UNCR.dcm")]).voxels
    )
    np.testing.assert_allclose(
        load_volume([_read("US1_J2KR.dcm")]).voxels,
        load_volume([_read("US1_UNCR.dcm")]).voxels,
        atol=1.0,
    )


def test_rgb_is_converted_to_luminance() -> None:
    ds = _read("US1_UNCR.dcm")
    rgb = ds.pixel_array.astype(np.float32)
    expected = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_allclose(load_volume([ds]).voxels[0], expected, rtol=1e-6)


def test_monochrome1_is_kept_and_flagged() -> None:
    volume = load_volume([_read("RG1_UNCR.dcm")])
    assert volume.header["PhotometricInterpretation"] == "MONOCHROME1"


def test_cine_frame_selection() -> None:
    volume = load_volume([_read("OBXXXX1A_2frame.dcm")])
    second = select_frame(volume, 1)
    assert second.shape == (1, 600, 800) and second.source_frame_numbers == (2,)
    np.testing.assert_array_equal(second.voxels[0], volume.voxels[1])
    with pytest.raises(InputError, match="outside"):
        select_frame(volume, 2)


def test_colour_secondary_capture_is_still_refused() -> None:
    with pytest.raises(InputError, match="not monochrome"):
        load_volume([_read("SC_rgb.dcm")])


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "eCT_Supplemental.dcm"])
def test_volumetric_modalities_still_load_with_a_header(name: str) -> None:
    volume = load_volume([_read(name)])
    assert not volume.planar
    assert volume.header["Modality"] == volume.modality
    assert len(volume.header["AcquisitionDateTimes"]) == volume.shape[0]


def test_header_is_read_only_and_has_no_patient_identifiers() -> None:
    volume = load_volume([_read("CT_small.dcm")])
    with pytest.raises(TypeError):
        volume.header["Modality"] = "MR"  # type: ignore[index]
    assert "PatientName" not in volume.header and "PatientID" not in volume.header
