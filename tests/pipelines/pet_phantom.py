"""A synthetic PET series (PET Image Storage) with known SUVs.

:func:`make_pet_series` writes single-frame PT images of a uniform
background with hot spheres, each of a known body-weight SUV, with the PET
tags SUV needs (Units BQML, Decay Correction START, Corrected Image
ATTN/DECY, Radiopharmaceutical Information, Patient's Weight). Activity is
``SUV * decayed dose / weight`` Bq/mL, stored as 16-bit values with a
per-slice Rescale Slope, so SUVs are exact to 1e-5 (quantisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
F18_HALF_LIFE_S = 6586.2


@dataclass(frozen=True)
class HotSphere:
    """A sphere of uniform SUV: centre (mm, in frame/row/column axes) and radius (mm)."""

    center_mm: tuple[float, float, float]
    radius_mm: float
    suv: float


@dataclass(frozen=True)
class PetPhantom:
    """The study set-up: timing, dose, weight, geometry, contents."""

    shape: tuple[int, int, int] = (40, 48, 48)
    spacing: tuple[float, float, float] = (3.0, 4.0, 4.0)  # slice, row, column (mm)
    background_suv: float = 1.0
    spheres: tuple[HotSphere, ...] = field(
        default_factory=lambda: (
            HotSphere((60.0, 96.0, 60.0), 16.0, 8.0),
            HotSphere((60.0, 96.0, 140.0), 12.0, 4.0),
        )
    )
    weight_kg: float = 75.0
    dose_bq: float = 370e6
    half_life_s: float = F18_HALF_LIFE_S
    injection: str = "20240315100000"  # DT
    series_date: str = "20240315"
    series_time: str = "110000"  # one hour after injection

    def decayed_dose(self) -> float:
        """Dose at the series time (START decay reference)."""
        return self.dose_bq * 2.0 ** (-3600.0 / self.half_life_s)

    def suv_map(self) -> np.ndarray:
        """Expected SUV of every voxel ``[frame, row, column]``."""
        grids = np.meshgrid(
            *[np.arange(n) * s for n, s in zip(self.shape, self.spacing, strict=True)],
            indexing="ij",
        )
        suv = np.full(self.shape, self.background_suv)
        for sphere in self.spheres:
            d2 = sum((g - c) ** 2 for g, c in zip(grids, sphere.center_mm, strict=True))
            suv[d2 <= sphere.radius_mm**2] = sphere.suv
        return suv

    def sphere_mask(self, index: int) -> np.ndarray:
        """Voxels of sphere ``index``."""
        sphere = self.spheres[index]
        grids = np.meshgrid(
            *[np.arange(n) * s for n, s in zip(self.shape, self.spacing, strict=True)],
            indexing="ij",
        )
        d2 = sum((g - c) ** 2 for g, c in zip(grids, sphere.center_mm, strict=True))
        mask: np.ndarray = d2 <= sphere.radius_mm**2
        return mask


def make_pet_series(phantom: PetPhantom | None = None) -> list[Dataset]:
    """Single-frame PT images of ``phantom``, frame 0 at z = 0, 1 mm LPS axes."""
    phantom = phantom or PetPhantom()
    activity = phantom.suv_map() * phantom.decayed_dose() / (phantom.weight_kg * 1000.0)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    return [
        _image(k, activity[k], phantom, series_uid, study_uid, frame_uid)
        for k in range(phantom.shape[0])
    ]


def _image(
    k: int,
    activity: np.ndarray,
    phantom: PetPhantom,
    series_uid: str,
    study_uid: str,
    frame_uid: str,
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = PET_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "PT"
    ds.PatientWeight = phantom.weight_kg
    ds.SeriesDate = phantom.series_date
    ds.SeriesTime = phantom.series_time
    ds.AcquisitionDate = phantom.series_date
    ds.AcquisitionTime = phantom.series_time
    ds.Units = "BQML"
    ds.DecayCorrection = "START"
    ds.CorrectedImage = ["ATTN", "DECY", "SCAT"]
    item = Dataset()
    item.Radiopharmaceutical = "Fluorodeoxyglucose F^18^"
    item.RadiopharmaceuticalStartDateTime = phantom.injection
    item.RadionuclideTotalDose = phantom.dose_bq
    item.RadionuclideHalfLife = phantom.half_life_s
    ds.RadiopharmaceuticalInformationSequence = Sequence([item])
    ds.ImagePositionPatient = [0.0, 0.0, k * phantom.spacing[0]]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [phantom.spacing[1], phantom.spacing[2]]
    ds.SliceThickness = phantom.spacing[0]
    slope = float(activity.max()) / 65535.0
    ds.RescaleSlope = f"{slope:.10g}"[:16]
    slope = float(ds.RescaleSlope)
    ds.RescaleIntercept = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = activity.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.round(activity / slope).astype(np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
