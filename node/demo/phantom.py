"""A synthetic chest CT with known organ volumes, for the demo and end-to-end tests.

The phantom is an elliptic cylinder of soft tissue with a fat layer, two lung
ellipsoids (with vessels and a known share of emphysema), a spine and rib-like
bone slabs, and a patient table outside the body. Voxels are sampled at their
centres, so the true masks are exact and the true volumes are voxel counts
times the voxel volume. The images are valid single-frame CT Image Storage
instances (PS3.3 A.3) in Explicit VR Little Endian.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from scipy import ndimage

logger = logging.getLogger(__name__)

HU_AIR = -1000.0
HU_FAT = -100.0
HU_SOFT_TISSUE = 40.0
HU_LUNG = -850.0
HU_EMPHYSEMA = -980.0
HU_BONE = 700.0
HU_TABLE = 100.0
RESCALE_INTERCEPT = -1024.0
_STORED_MAX = 4095  # Bits Stored 12


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic CT series and its ground truth.

    Parameters
    ----------
    datasets : list[pydicom.dataset.Dataset]
        One CT Image Storage instance per slice, in acquisition order (head
        first, Instance Number 1..n), with file meta information.
    true_volumes_ml : dict[str, float]
        Exact volumes of ``"body"``, ``"lungs"`` and ``"bone"`` in mL.
    true_laa950_percent : float
        Share of lung voxels below -950 HU (the emphysema voxels), in %.
    """

    datasets: list[Dataset]
    true_volumes_ml: dict[str, float]
    true_laa950_percent: float

    @property
    def study_instance_uid(self) -> str:
        """Study Instance UID shared by all slices."""
        return str(self.datasets[0].StudyInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        """Series Instance UID shared by all slices."""
        return str(self.datasets[0].SeriesInstanceUID)


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in patient LPS mm, centred on the isocentre."""

    z: np.ndarray  # per slice, ascending along +z (superior)
    y: np.ndarray  # per row (posterior is +y)
    x: np.ndarray  # per column (patient left is +x)

    @classmethod
    def make(
        cls,
        n_slices: int,
        rows: int,
        columns: int,
        pixel_spacing: tuple[float, float],
        slice_spacing: float,
    ) -> _Grid:
        def axis(n: int, step: float) -> np.ndarray:
            return ((np.arange(n) - (n - 1) / 2.0) * step).astype(np.float32)

        return cls(
            z=axis(n_slices, slice_spacing),
            y=axis(rows, pixel_spacing[0]),
            x=axis(columns, pixel_spacing[1]),
        )


def make_chest_phantom(
    n_slices: int = 64,
    rows: int = 128,
    columns: int = 128,
    pixel_spacing: tuple[float, float] = (2.0, 2.0),
    slice_thickness: float = 2.5,
    seed: int = 0,
    patient_id: str = "AINODE-PHANTOM-001",
    patient_name: str = "PHANTOM^CHEST",
    emphysema_fraction: float = 0.12,
    noise_hu: float = 8.0,
    study_datetime: dt.datetime | None = None,
) -> Phantom:
    """Make a synthetic chest CT series with known volumes.

    Shapes scale with the field of view (``rows x pixel_spacing`` and so on),
    so any matrix of at least 32 x 32 x 8 gives a plausible chest. Slices are
    contiguous: the spacing between slices equals ``slice_thickness``.

    Parameters
    ----------
    n_slices, rows, columns : int
        Matrix size.
    pixel_spacing : tuple[float, float]
        Pixel Spacing (0028,0030): row spacing, column spacing in mm.
    slice_thickness : float
        Slice Thickness (0018,0050) and spacing between slices, mm.
    seed : int
        Seeds the noise and the emphysema pattern (UIDs are always new).
    patient_id, patient_name : str
        Patient ID and Patient's Name of the fictitious patient.
    emphysema_fraction : float
        Share of lung parenchyma set to -980 HU, 0 to 0.9.
    noise_hu : float
        Standard deviation of the Gaussian noise added to every voxel.
    study_datetime : datetime.datetime | None
        Study date and time; now when ``None``.

    Returns
    -------
    Phantom
        The datasets and the exact volumes.
    """
    if n_slices < 8 or rows < 32 or columns < 32:
        raise ValueError("the phantom needs at least 8 slices of 32 x 32 pixels")
    if not 0.0 <= emphysema_fraction <= 0.9:
        raise ValueError(f"emphysema_fraction must lie in [0, 0.9], got {emphysema_fraction}")
    if slice_thickness <= 0 or min(pixel_spacing) <= 0:
        raise ValueError("spacings must be positive")
    rng = np.random.default_rng(seed)
    grid = _Grid.make(n_slices, rows, columns, pixel_spacing, slice_thickness)
    body, fat, table = _body_masks(grid)
    lungs, vessels = _lung_masks(grid)
    bone = _bone_mask(grid)
    emphysema = _emphysema_mask(grid, lungs & ~vessels, emphysema_fraction, rng)
    hu = _paint(body, fat, table, lungs, vessels, emphysema, bone)
    stored = _to_stored(hu, noise_hu, rng)
    voxel_ml = float(slice_thickness * pixel_spacing[0] * pixel_spacing[1]) / 1000.0
    n_lung = int(np.count_nonzero(lungs))
    truth = {
        "body": float(np.count_nonzero(body)) * voxel_ml,
        "lungs": n_lung * voxel_ml,
        "bone": float(np.count_nonzero(bone)) * voxel_ml,
    }
    laa = 100.0 * float(np.count_nonzero(emphysema)) / n_lung
    header = _SeriesHeader.make(patient_id, patient_name, study_datetime or dt.datetime.now())
    datasets = [
        _slice_dataset(header, grid, stored, k, pixel_spacing, slice_thickness)
        for k in range(n_slices - 1, -1, -1)  # head first, as a scanner sends them
    ]
    logger.info(
        "chest phantom %dx%dx%d: %s",
        n_slices,
        rows,
        columns,
        {k: round(v, 1) for k, v in truth.items()},
    )
    return Phantom(datasets=datasets, true_volumes_ml=truth, true_laa950_percent=laa)


def _half_axes(grid: _Grid) -> tuple[float, float, float]:
    """Half-extent of the field of view along x, y, z in mm."""

    def half(axis: np.ndarray) -> float:
        return float(axis[-1] - axis[0]) / 2.0 + float(axis[1] - axis[0]) / 2.0

    return half(grid.x), half(grid.y), half(grid.z)


def _body_radius(grid: _Grid) -> np.ndarray:
    """Normalised elliptic radius of the body cross-section, ``[row, column]``."""
    half_x, half_y, _ = _half_axes(grid)
    a, b = 0.86 * half_x, 0.62 * half_y
    return np.sqrt((grid.x[None, :] / a) ** 2 + (grid.y[:, None] / b) ** 2)


def _body_masks(grid: _Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body (everything inside the skin), its fat layer, and the table."""
    n = grid.z.size
    radius = _body_radius(grid)
    body2d = radius <= 1.0
    fat2d = body2d & (radius > 0.93)
    _, half_y, _ = _half_axes(grid)
    table_row = (grid.y[:, None] > 0.70 * half_y) & (grid.y[:, None] < 0.76 * half_y)
    table2d = table_row & (np.abs(grid.x[None, :]) < 0.9 * _half_axes(grid)[0]) & ~body2d

    def stack(mask2d: np.ndarray) -> np.ndarray:
        return np.broadcast_to(mask2d, (n, *mask2d.shape))

    return stack(body2d), stack(fat2d), stack(table2d)


def _ellipsoid(
    grid: _Grid, centre: tuple[float, float, float], half: tuple[float, float, float]
) -> np.ndarray:
    cx, cy, cz = centre
    ax, ay, az = half
    inside: np.ndarray = (
        ((grid.z[:, None, None] - cz) / az) ** 2
        + ((grid.y[None, :, None] - cy) / ay) ** 2
        + ((grid.x[None, None, :] - cx) / ax) ** 2
    ) <= 1.0
    return inside


def _lung_masks(grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """Two lung ellipsoids and the vessels inside them (part of the lungs)."""
    half_x, half_y, half_z = _half_axes(grid)
    a, b = 0.86 * half_x, 0.62 * half_y
    lungs = np.zeros((grid.z.size, grid.y.size, grid.x.size), dtype=bool)
    vessels = np.zeros_like(lungs)
    for side in (-1.0, 1.0):
        centre = (side * 0.40 * a, -0.10 * b, 0.0)
        half = (0.30 * a, 0.50 * b, 0.80 * half_z)
        lungs |= _ellipsoid(grid, centre, half)
        vessels |= _vessels(grid, centre, half)
    return lungs, vessels & lungs


def _vessels(
    grid: _Grid, centre: tuple[float, float, float], half: tuple[float, float, float]
) -> np.ndarray:
    """Three tubes along z, well inside one lung (holes in each axial slice)."""
    cx, cy, _ = centre
    ax, ay, az = half
    radius = max(3.0, 1.6 * float(max(grid.x[1] - grid.x[0], grid.y[1] - grid.y[0])))
    in_z = np.abs(grid.z) <= 0.55 * az
    tubes = np.zeros((grid.y.size, grid.x.size), dtype=bool)
    for fx, fy in ((0.0, 0.0), (0.35, -0.35), (-0.35, 0.35)):
        tubes |= (
            (grid.x[None, :] - cx - fx * ax) ** 2 + (grid.y[:, None] - cy - fy * ay) ** 2
        ) <= radius**2
    vessels: np.ndarray = in_z[:, None, None] & tubes[None]
    return vessels


def _bone_mask(grid: _Grid) -> np.ndarray:
    """A spine (full length) and rib-like elliptic rings in slabs along z."""
    _, half_y, half_z = _half_axes(grid)
    b = 0.62 * half_y
    radius = _body_radius(grid)
    ring2d = (radius >= 0.82) & (radius <= 0.90)
    spine2d = (grid.x[None, :] ** 2 + (grid.y[:, None] - 0.62 * b) ** 2) <= (0.15 * b) ** 2
    period = 2.0 * half_z / 6.0
    rib_slab = np.mod(grid.z + half_z, period) < 0.4 * period
    bone: np.ndarray = (rib_slab[:, None, None] & ring2d[None]) | spine2d[None]
    return bone


def _emphysema_mask(
    grid: _Grid, parenchyma: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Clustered low-attenuation regions, more in the upper zones."""
    if fraction <= 0.0:
        return np.zeros_like(parenchyma)
    shape = parenchyma.shape
    coarse_shape = tuple(max(2, s // 4) for s in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), 1.0)
    coarse /= coarse.std() or 1.0
    field = ndimage.zoom(
        coarse,
        [s / c for s, c in zip(shape, coarse_shape, strict=True)],
        order=1,
        grid_mode=True,
        mode="nearest",
    )[: shape[0], : shape[1], : shape[2]]
    _, _, half_z = _half_axes(grid)
    field += (0.8 * grid.z / half_z)[:, None, None]  # upper-zone predominance
    values = field[parenchyma]
    threshold = np.quantile(values, 1.0 - fraction)
    emphysema: np.ndarray = parenchyma & (field > threshold)
    return emphysema


def _paint(
    body: np.ndarray,
    fat: np.ndarray,
    table: np.ndarray,
    lungs: np.ndarray,
    vessels: np.ndarray,
    emphysema: np.ndarray,
    bone: np.ndarray,
) -> np.ndarray:
    """Hounsfield units of the noiseless phantom; later tissues overwrite earlier."""
    hu = np.full(lungs.shape, HU_AIR, dtype=np.float32)
    for mask, value in (
        (table, HU_TABLE),
        (body, HU_SOFT_TISSUE),
        (fat, HU_FAT),
        (lungs, HU_LUNG),
        (emphysema, HU_EMPHYSEMA),
        (vessels, HU_SOFT_TISSUE),
        (bone, HU_BONE),
    ):
        hu[np.broadcast_to(mask, hu.shape)] = value
    return hu


def _to_stored(hu: np.ndarray, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Add noise and convert to unsigned stored values (Rescale Intercept -1024)."""
    if noise_hu > 0:
        hu += rng.standard_normal(size=hu.shape, dtype=np.float32) * np.float32(noise_hu)
    stored = np.rint(hu - RESCALE_INTERCEPT)
    np.clip(stored, 0, _STORED_MAX, out=stored)
    return stored.astype(np.uint16)


@dataclass(frozen=True)
class _SeriesHeader:
    """Attributes shared by every slice of the series."""

    patient_id: str
    patient_name: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    date: str
    time: str

    @classmethod
    def make(cls, patient_id: str, patient_name: str, when: dt.datetime) -> _SeriesHeader:
        return cls(
            patient_id=patient_id,
            patient_name=patient_name,
            study_instance_uid=generate_uid(),
            series_instance_uid=generate_uid(),
            frame_of_reference_uid=generate_uid(),
            date=when.strftime("%Y%m%d"),
            time=when.strftime("%H%M%S"),
        )


def _slice_dataset(
    header: _SeriesHeader,
    grid: _Grid,
    stored: np.ndarray,
    k: int,
    pixel_spacing: tuple[float, float],
    slice_thickness: float,
) -> Dataset:
    """One CT Image Storage instance for slice ``k`` (0 = most inferior)."""
    ds = Dataset()
    _patient_study_series(ds, header)
    instance_number = grid.z.size - k
    sop_instance_uid = generate_uid()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceNumber = instance_number
    ds.InstanceCreationDate, ds.InstanceCreationTime = header.date, header.time
    ds.ContentDate, ds.ContentTime = header.date, header.time
    ds.AcquisitionDate, ds.AcquisitionTime = header.date, header.time
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionNumber = 1
    ds.ImagePositionPatient = [_ds(grid.x[0]), _ds(grid.y[0]), _ds(grid.z[k])]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [_ds(pixel_spacing[0]), _ds(pixel_spacing[1])]
    ds.SliceThickness = _ds(slice_thickness)
    ds.SliceLocation = _ds(grid.z[k])
    _ct_image_pixels(ds, stored[k])
    ds.file_meta = _file_meta(sop_instance_uid)
    return ds


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters."""
    return f"{float(value):.6g}"


def _patient_study_series(ds: Dataset, header: _SeriesHeader) -> None:
    """Patient, General Study, General Series, Frame of Reference, Equipment modules."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic phantom, no real patient"
    ds.StudyInstanceUID = header.study_instance_uid
    ds.StudyDate, ds.StudyTime = header.date, header.time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "PHANTOM1"
    ds.AccessionNumber = "PH0001"
    ds.StudyDescription = "CT CHEST PHANTOM"
    ds.Modality = "CT"
    ds.SeriesInstanceUID = header.series_instance_uid
    ds.SeriesNumber = 2
    ds.SeriesDate, ds.SeriesTime = header.date, header.time
    ds.SeriesDescription = "Chest phantom 2.5 mm"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "ainode"
    ds.ManufacturerModelName = "Synthetic chest phantom"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "ainode-phantom 1"
    ds.InstitutionName = "ainode test site"
    ds.StationName = "PHANTOM"


def _ct_image_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Image Pixel, CT Image and VOI LUT modules (PS3.3 C.7.6.3, C.8.2.1, C.11.2)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = _ds(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.KVP = "120"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = 200
    ds.ConvolutionKernel = "STANDARD"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OW"


def _file_meta(sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "AINODE_PHANTOM"
    return meta
