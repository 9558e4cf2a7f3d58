"""Fixtures for the dicom_sr writer tests: source series, findings, identities, dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicom_sr import AlgorithmIdentity, DeviceIdentity, ResultIdentity
from pipelines.findings import (
    Code,
    Findings,
    Measurement,
    Segment,
    SegmentDescription,
)

N_FRAMES, N_ROWS, N_COLUMNS = 12, 64, 64

ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Altered Structure")
BODY = Code("38266002", "SCT", "Entire body")
LUNG = Code("39607008", "SCT", "Lung")
LESION = Code("52988006", "SCT", "Lesion")
VOLUME = Code("118565006", "SCT", "Volume")
MILLILITER = Code("mL", "UCUM", "milliliter")
ATTENUATION = Code("112031", "DCM", "Attenuation Coefficient")
HOUNSFIELD = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
MEAN = Code("373098007", "SCT", "Mean")

PIPELINE_NAME, PIPELINE_VERSION = "ct-anatomy", "1.2.0"


def _ct_slice(index: int, study: str, series: str, frame_of_reference: str) -> Dataset:
    """One CT Image Storage instance with every module of the CT Image IOD."""
    sop_instance_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240102"
    ds.StudyTime, ds.SeriesTime, ds.ContentTime = "101500", "101600", "101600"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = "CT"
    ds.Manufacturer = "Synthetic Scanners"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = "Chest 2.5mm"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "PID0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "2.5"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = "S1"
    ds.SeriesNumber = 2
    ds.InstanceNumber = index + 1
    ds.AcquisitionNumber = 1
    ds.ImagePositionPatient = [-40.0, -40.0, -100.0 + 2.5 * index]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = -100.0 + 2.5 * index
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = N_ROWS, N_COLUMNS
    ds.PixelSpacing = [1.25, 1.25]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.PixelData = np.full((N_ROWS, N_COLUMNS), 1000 + index, dtype=np.int16).tobytes()
    return ds


@pytest.fixture
def ct_series() -> list[Dataset]:
    """A synthetic 12-slice 64x64 axial CT series, sorted along the slice normal."""
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    return [_ct_slice(i, study, series, frame_of_reference) for i in range(N_FRAMES)]


@pytest.fixture
def ct_small() -> list[Dataset]:
    """pydicom's real single-slice CT test file (CT_small.dcm, shipped with pydicom)."""
    path = get_testdata_file("CT_small.dcm", download=False)
    if not isinstance(path, str):
        pytest.fail("pydicom's test file CT_small.dcm is missing")
    return [pydicom.dcmread(path)]


def make_masks(n_frames: int, rows: int, columns: int) -> dict[str, np.ndarray]:
    """Body (every frame), lungs (frames 2..9 only) and a lesion (frames 5..6)."""
    r, c = np.mgrid[:rows, :columns]
    ellipse = ((r - rows / 2) / (rows * 0.45)) ** 2 + ((c - columns / 2) / (columns * 0.4)) ** 2
    lung_plane = ((r - rows / 2) ** 2 + (c - columns * 0.3) ** 2 < (rows * 0.15) ** 2) | (
        (r - rows / 2) ** 2 + (c - columns * 0.7) ** 2 < (rows * 0.15) ** 2
    )
    body = np.broadcast_to(ellipse <= 1.0, (n_frames, rows, columns)).copy()
    lungs = np.zeros((n_frames, rows, columns), dtype=bool)
    lungs[2 : min(10, n_frames)] = lung_plane
    lesion = np.zeros((n_frames, rows, columns), dtype=bool)
    lesion[n_frames // 2 - 1 : n_frames // 2 + 1, rows // 2 - 3 : rows // 2 + 2, 16:20] = True
    return {"body": body, "lungs": lungs, "lesion": lesion}


def make_findings(
    source_images: list[Dataset], n_segments: int = 3, *, series_measurement: bool = True
) -> Findings:
    """Findings with ``n_segments`` of body, lungs, lesion and their measurements."""
    first = source_images[0]
    masks = make_masks(len(source_images), int(first.Rows), int(first.Columns))
    descriptions = [
        SegmentDescription(
            1, "Body", ANATOMICAL_STRUCTURE, BODY, "body", color_rgb=(177, 122, 101)
        ),
        SegmentDescription(
            2, "Lungs", ANATOMICAL_STRUCTURE, LUNG, "lungs", color_rgb=(0, 151, 206)
        ),
        SegmentDescription(
            3,
            "Lesion",
            ABNORMAL_STRUCTURE,
            LESION,
            "lesion-1",
            anatomic_region=LUNG,
            color_rgb=(255, 0, 0),
        ),
    ][:n_segments]
    segments = tuple(Segment(d, masks[d.tracking_id.split("-")[0]]) for d in descriptions)
    measurements = [Measurement(VOLUME, 1234.5, MILLILITER, segment_number=1)]
    if n_segments >= 2:
        measurements += [
            Measurement(VOLUME, 3456.123456789012, MILLILITER, segment_number=2),
            Measurement(ATTENUATION, -812.5, HOUNSFIELD, segment_number=2, derivation=MEAN),
        ]
    if series_measurement:
        measurements.append(Measurement(ATTENUATION, -120.0, HOUNSFIELD, derivation=MEAN))
    return Findings(
        pipeline_name=PIPELINE_NAME,
        pipeline_version=PIPELINE_VERSION,
        source_sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in source_images),
        segments=segments,
        measurements=tuple(measurements),
    )


@pytest.fixture
def seg_identity() -> ResultIdentity:
    return ResultIdentity(
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=901,
        series_description="ainode ct-anatomy segmentation",
    )


@pytest.fixture
def sr_identity() -> ResultIdentity:
    return ResultIdentity(
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=902,
        series_description="ainode ct-anatomy measurements",
    )


@pytest.fixture
def device() -> DeviceIdentity:
    return DeviceIdentity(
        software_versions="0.1.0",
        device_serial_number="node-0001",
        institution_name="Test Hospital",
        device_name="AINODE1",
    )


@pytest.fixture
def algorithm() -> AlgorithmIdentity:
    return AlgorithmIdentity(
        name=PIPELINE_NAME,
        version=PIPELINE_VERSION,
        source="ainode project",
        parameters={"spacing": "1.5mm"},
        model_checksum="sha256:0123abcd",
    )


#: Warnings of dicom3tools 2022 that are conformant usage: Device UID (0018,1002)
#: inside the Contributing Equipment Sequence, as IHE AIR asks for the
#: algorithm's identity, which this dciodvfy's IOD tables do not list there.
#: Any other extra attribute still shows up with its own warning.
KNOWN_WARNINGS = (
    "(0x0018,0x1002) UI Device UID",
    "contains attributes not present in standard DICOM IOD - this is a Standard Extended SOP Class",
)


def _known_warning(line: str) -> bool:
    return any(known in line for known in KNOWN_WARNINGS)


@pytest.fixture(scope="session")
def dciodvfy() -> Callable[[Dataset, Path], list[str]]:
    """Save a dataset as a DICOM file, run ``dciodvfy`` on it and return its warnings.

    Fails the test on any line starting with ``Error``.
    """
    executable = shutil.which("dciodvfy")
    if executable is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")

    def verify(dataset: Dataset, path: Path) -> list[str]:
        dataset.save_as(path, enforce_file_format=True)
        completed = subprocess.run(
            [executable, str(path)], capture_output=True, text=True, timeout=300, check=False
        )
        lines = [ln for ln in (completed.stdout + completed.stderr).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("Error")]
        assert not errors, "\n".join(lines)
        return [ln for ln in lines if ln.startswith("Warning") and not _known_warning(ln)]

    return verify


@pytest.fixture
def build_findings() -> Callable[..., Findings]:
    """The :func:`make_findings` factory: ``build_findings(images, n_segments=3)``."""
    return make_findings
