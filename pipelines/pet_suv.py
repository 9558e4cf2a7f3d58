"""pet-suv: body-weight SUV, lesions and metabolic volumes of a PET series.

SUV (body weight) per QIBA FDG-PET/CT profile / the QIBA SUV pseudo-code
(PS3.3 C.8.9.1 PET Series, C.8.9.4 PET Image, C.8.9.2 PET Isotope modules)::

    SUVbw = activity concentration (Bq/mL) * weight (g) / decayed dose (Bq)

* Units (0054,1001) must be ``BQML``; Corrected Image (0028,0051) must hold
  ``ATTN`` and ``DECY``; Decay Correction (0054,1102) ``START`` or ``ADMIN``.
* Dose: Radionuclide Total Dose (0018,1074, Bq) of the first
  Radiopharmaceutical Information item, at Radiopharmaceutical Start DateTime
  (0018,1078), or Series Date + Radiopharmaceutical Start Time (0018,1072).
* ``START``: images are decay corrected to the scan start, the Series
  Date/Time - unless that is after the earliest Acquisition Date/Time
  (series re-created after the scan), then the earliest acquisition. The dose
  is decayed from injection to that time with Radionuclide Half Life
  (0018,1075, s). ``ADMIN``: images are corrected to the administration
  time; the dose is used as is.
* Patient's Weight (0010,1030, kg) must be present and positive.

Anything missing or inconsistent raises :class:`InputError` naming the
reason: never a wrong number.

Lesions: 26-connected components of SUV >= 2.5 of at least ``min_lesion_ml``,
the ``max_lesions`` with the highest SUVmax. Per lesion (TID 1411 style
measurements): SUVmax, SUVmean, SUVpeak (highest mean SUV in a 1 mL sphere,
radius 6.2 mm, centred on a lesion voxel; PERCIST), MTV at SUV 2.5 (the
lesion's volume), MTV at 41% of the lesion's SUVmax (the connected region at
or above that level holding the maximum), and TLG = SUVmean x MTV(2.5).
Whole-series: number of lesions, total MTV and total TLG.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from scipy import ndimage

from pipelines import codes
from pipelines.base import InputSpec, Pipeline
from pipelines.errors import InputError
from pipelines.findings import Code, Findings, Measurement, Segment, SegmentDescription
from pipelines.volume import Volume

logger = logging.getLogger(__name__)

SUVBW = Code("126401", "DCM", "SUVbw")
SUV_UNIT = Code("g/ml{SUVbw}", "UCUM", "Standardized Uptake Value body weight")
PEAK = Code("126031", "DCM", "Peak Value Within ROI")
MAXIMUM = Code("56851009", "SCT", "Maximum")
METABOLIC_VOLUME = Code("126032", "DCM", "Metabolic Volume")
MTV_41 = Code("MTV41", codes.LOCAL_SCHEME, "Metabolic volume at 41% of SUVmax")
TOTAL_LESION_GLYCOLYSIS = Code("126033", "DCM", "Total Lesion Glycolysis")
LESION_COUNT = Code("LESIONS", codes.LOCAL_SCHEME, "Number of lesions at SUV 2.5")
GRAM = Code("g", "UCUM", "gram")
COUNT = Code("{lesions}", "UCUM", "lesions")
MORPHOLOGICALLY_ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
LESION = Code("52988006", "SCT", "Lesion")

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
ENHANCED_PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.130"
_PEAK_RADIUS_MM = (3.0 / (4.0 * math.pi) * 1000.0) ** (1.0 / 3.0)  # 1 mL sphere: 6.2035 mm
_FULL_3D = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class PetSuvParameters:
    """Thresholds of the pet-suv pipeline.

    Parameters
    ----------
    threshold_suv : float
        Fixed lesion threshold (SUV 2.5).
    relative_threshold : float
        Fraction of the lesion SUVmax for the relative MTV (0.41).
    min_lesion_ml : float
        Smaller components are noise and dropped.
    max_lesions : int
        Most lesions reported, by SUVmax.
    """

    threshold_suv: float = 2.5
    relative_threshold: float = 0.41
    min_lesion_ml: float = 0.5
    max_lesions: int = 20


def suv_factor(header: Mapping[str, Any]) -> float:
    """The factor that turns Bq/mL into SUVbw, from the series header.

    Raises
    ------
    InputError
        With the reason when the header does not allow a correct SUV.
    """
    units = str(header.get("Units", "")).upper()
    if units != "BQML":
        raise InputError(f"PET Units must be BQML for SUV, got {units or 'missing'}")
    corrected = {str(v).upper() for v in _values(header.get("CorrectedImage"))}
    missing = {"ATTN", "DECY"} - corrected
    if missing:
        raise InputError(
            f"PET image is not corrected for {', '.join(sorted(missing))} (Corrected Image)"
        )
    weight_kg = _positive(header.get("PatientWeight"), "Patient's Weight")
    info = header.get("RadiopharmaceuticalInformationSequence") or ()
    if not info:
        raise InputError("Radiopharmaceutical Information Sequence is missing")
    item = info[0]
    dose = _positive(item.get("RadionuclideTotalDose"), "Radionuclide Total Dose")
    decay_correction = str(header.get("DecayCorrection", "")).upper()
    if decay_correction == "ADMIN":
        return weight_kg * 1000.0 / dose
    if decay_correction != "START":
        raise InputError(
            f"Decay Correction {decay_correction or 'missing'} is not supported (START or ADMIN)"
        )
    half_life = _positive(item.get("RadionuclideHalfLife"), "Radionuclide Half Life")
    elapsed = (_scan_start(header) - _injection(header, item)).total_seconds()
    if elapsed < 0:
        raise InputError("radiopharmaceutical start time is after the scan start")
    decayed = dose * math.pow(2.0, -elapsed / half_life)
    return weight_kg * 1000.0 / decayed


def _values(value: object) -> tuple[object, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _positive(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is missing") from exc
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{what} must be positive, got {number:g}")
    return number


def _parse_datetime(value: str, what: str) -> datetime:
    """A DICOM DT (or DA + TM) value, without time zone, to a datetime."""
    text = value.strip().split("+")[0].split("-")[0]
    main, _, fraction = text.partition(".")
    if len(main) < 12 or not main.isdigit():
        raise InputError(f"{what} is not a valid date and time")
    main = main.ljust(14, "0")
    try:
        moment = datetime.strptime(main[:14], "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise InputError(f"{what} is not a valid date and time") from exc
    if fraction:
        moment += timedelta(seconds=float(f"0.{fraction}"))
    return moment


def _scan_start(header: Mapping[str, Any]) -> datetime:
    date, time = header.get("SeriesDate"), header.get("SeriesTime")
    if not date or not time:
        raise InputError("Series Date / Series Time is missing (decay reference of START)")
    series = _parse_datetime(f"{date}{time}", "Series Date/Time")
    acquisitions = [
        _parse_datetime(str(v), "Acquisition Date/Time")
        for v in header.get("AcquisitionDateTimes", ())
        if v
    ]
    if acquisitions and min(acquisitions) < series:
        logger.info("series time after the first acquisition; using the earliest acquisition time")
        return min(acquisitions)
    return series


def _injection(header: Mapping[str, Any], item: Mapping[str, Any]) -> datetime:
    if item.get("RadiopharmaceuticalStartDateTime"):
        return _parse_datetime(
            str(item["RadiopharmaceuticalStartDateTime"]), "Radiopharmaceutical Start DateTime"
        )
    start, date = item.get("RadiopharmaceuticalStartTime"), header.get("SeriesDate")
    if not start or not date:
        raise InputError("radiopharmaceutical start time is missing")
    return _parse_datetime(f"{date}{start}", "Radiopharmaceutical Start Time")


@dataclass(frozen=True)
class _Lesion:
    mask: np.ndarray
    suv_max: float
    suv_mean: float
    suv_peak: float
    mtv_ml: float
    mtv41_ml: float

    @property
    def tlg(self) -> float:
        return self.suv_mean * self.mtv_ml


class PetSuvPipeline(Pipeline):
    """Body-weight SUV, PET lesions at SUV 2.5, SUVmax/mean/peak, MTV and TLG."""

    name = "pet-suv"
    version = "1.0.0"
    accepts = InputSpec(
        modalities=frozenset({"PT"}),
        sop_class_uids=frozenset({PET_IMAGE_STORAGE, ENHANCED_PET_IMAGE_STORAGE}),
        min_frames=3,
        dimensions=3,
    )
    model_checksum = None

    def __init__(self, parameters: PetSuvParameters | None = None) -> None:
        self.parameters = parameters or PetSuvParameters()

    def run(self, volume: Volume) -> Findings:
        """SUV lesions and measurements of ``volume`` (activity in Bq/mL).

        Raises
        ------
        InputError
            When the header does not allow a correct SUV (see :func:`suv_factor`).
        """
        self.check_input(volume)
        factor = suv_factor(volume.header)
        suv = volume.voxels.astype(np.float64) * factor
        lesions = _lesions(suv, volume, self.parameters)
        segments, measurements = [], []
        for number, lesion in enumerate(lesions, start=1):
            segments.append(Segment(_describe(number, self.parameters.threshold_suv), lesion.mask))
            measurements.extend(_measure(lesion, number))
        measurements.extend(_totals(lesions))
        notes = (
            f"SUVbw factor {factor:.6g} g/Bq (activity Bq/mL x factor = SUV)",
            f"{len(lesions)} lesion(s) at SUV >= {self.parameters.threshold_suv:g}, "
            f">= {self.parameters.min_lesion_ml:g} mL",
            f"global SUVmax {float(suv.max()):.3f}",
        )
        return Findings(
            pipeline_name=self.name,
            pipeline_version=self.version,
            source_sop_instance_uids=volume.sop_instance_uids,
            segments=tuple(segments),
            measurements=tuple(measurements),
            notes=notes,
        )


def _describe(number: int, threshold: float) -> SegmentDescription:
    return SegmentDescription(
        number=number,
        label=f"Lesion {number} (SUV >= {threshold:g})",
        category=MORPHOLOGICALLY_ABNORMAL,
        property_type=LESION,
        tracking_id=f"pet-lesion-{number}",
        color_rgb=(255, 64, 0),
    )


def _lesions(suv: np.ndarray, volume: Volume, p: PetSuvParameters) -> list[_Lesion]:
    labels, n = ndimage.label(suv >= p.threshold_suv, structure=_FULL_3D)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(suv), labels, index)
    maxima = ndimage.maximum(suv, labels, index)
    voxel_ml = volume.voxel_volume_ml
    keep = [k for k in np.argsort(-maxima) if sizes[k] * voxel_ml >= p.min_lesion_ml]
    kernel = _sphere_kernel(volume.spacing)
    slices = ndimage.find_objects(labels)
    lesions = []
    for k in keep[: p.max_lesions]:
        mask = labels == k + 1
        values = suv[mask]
        lesions.append(
            _Lesion(
                mask=mask,
                suv_max=float(values.max()),
                suv_mean=float(values.mean()),
                suv_peak=_peak(suv, mask, slices[k], kernel),
                mtv_ml=float(mask.sum()) * voxel_ml,
                mtv41_ml=_relative_volume(suv, mask, p.relative_threshold) * voxel_ml,
            )
        )
    return lesions


def _sphere_kernel(spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxels whose centres lie within the 1 mL sphere's radius of the centre voxel."""
    reach = [int(_PEAK_RADIUS_MM // s) for s in spacing]
    grids = np.meshgrid(
        *[np.arange(-r, r + 1) * s for r, s in zip(reach, spacing, strict=True)], indexing="ij"
    )
    kernel: np.ndarray = sum(g**2 for g in grids) <= _PEAK_RADIUS_MM**2
    return kernel


def _peak(suv: np.ndarray, mask: np.ndarray, box: tuple[slice, ...], kernel: np.ndarray) -> float:
    """Highest mean SUV in the 1 mL sphere centred on any voxel of ``mask``."""
    half = [k // 2 for k in kernel.shape]
    padded = tuple(
        slice(max(0, b.start - h), min(n, b.stop + h))
        for b, h, n in zip(box, half, suv.shape, strict=True)
    )
    region = suv[padded]
    inside = np.ones(region.shape)
    weights = kernel.astype(np.float64)
    sums = ndimage.correlate(region, weights, mode="constant", cval=0.0)
    counts = ndimage.correlate(inside, weights, mode="constant", cval=0.0)
    means = sums / counts  # a sphere cut by the image edge averages its voxels inside
    return float(means[mask[padded]].max())


def _relative_volume(suv: np.ndarray, mask: np.ndarray, fraction: float) -> float:
    """Voxel count of the region at or above ``fraction`` x SUVmax connected to the maximum."""
    peak_index = np.unravel_index(np.argmax(np.where(mask, suv, -np.inf)), suv.shape)
    level = fraction * float(suv[peak_index])
    labels, _ = ndimage.label(suv >= level, structure=_FULL_3D)
    return float(np.count_nonzero(labels == labels[peak_index]))


def _measure(lesion: _Lesion, number: int) -> list[Measurement]:
    def m(concept: Code, value: float, unit: Code, derivation: Code | None = None) -> Measurement:
        return Measurement(concept, value, unit, segment_number=number, derivation=derivation)

    return [
        m(SUVBW, lesion.suv_max, SUV_UNIT, MAXIMUM),
        m(SUVBW, lesion.suv_mean, SUV_UNIT, codes.MEAN),
        m(SUVBW, lesion.suv_peak, SUV_UNIT, PEAK),
        m(METABOLIC_VOLUME, lesion.mtv_ml, codes.MILLILITER),
        m(MTV_41, lesion.mtv41_ml, codes.MILLILITER),
        m(TOTAL_LESION_GLYCOLYSIS, lesion.tlg, GRAM),
    ]


def _totals(lesions: list[_Lesion]) -> list[Measurement]:
    return [
        Measurement(LESION_COUNT, float(len(lesions)), COUNT),
        Measurement(METABOLIC_VOLUME, sum(x.mtv_ml for x in lesions), codes.MILLILITER),
        Measurement(TOTAL_LESION_GLYCOLYSIS, sum(x.tlg for x in lesions), GRAM),
    ]
