"""Value encodings shared by the derived-image and registration writers.

* Decimal String (DS, PS3.5 6.2) values of at most 16 characters.
* Pixel data: modality values (HU for CT) as signed 16-bit stored values
  with the Rescale Slope / Intercept that give them back (PS3.3 C.11.1.1.2).
* A VOI window (PS3.3 C.11.2): the source's, else the data's 1st-99th percentile.
* Body Part Examined and Laterality of the General Series module (PS3.3 C.7.3.1).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

from dicom_sr.equipment import set_general_equipment
from dicom_sr.errors import EncodingError
from dicom_sr.geometry import functional_group
from dicom_sr.identity import DeviceIdentity, ResultIdentity

logger = logging.getLogger(__name__)

_INT16_MIN, _INT16_MAX = -32768, 32767
#: Value ranges at least this wide are rounded to integers rather than rescaled:
#: the rounding error (0.5) is then below 1/4096 of the range (12-bit precision).
_ROUNDING_RANGE = 2048.0
_ZERO = 1e-10


def ds_values(values: Iterable[float]) -> list[DSfloat]:
    """Return ``values`` as DS values of at most 16 characters (near-zero as 0)."""
    return [DSfloat(0.0 if abs(float(v)) < _ZERO else float(v), auto_format=True) for v in values]


@dataclass(frozen=True, eq=False)
class StoredPixels:
    """Signed 16-bit stored values and the rescale that maps them to modality values."""

    values: np.ndarray  # int16 [frame, row, column]
    slope: float
    intercept: float


def encode_pixels(voxels: np.ndarray, *, round_to_integers: bool) -> StoredPixels:
    """Encode modality values as int16 stored values with Rescale Slope / Intercept.

    Values that fit in int16 keep slope 1 and intercept 0: exactly when they
    are integers, rounded to the nearest integer when ``round_to_integers``
    (CT: HU are integers by convention) or when their range is at least 2048
    wide. Anything else is scaled linearly onto the full int16 range.

    Raises
    ------
    EncodingError
        When a value is not finite.
    """
    values = np.asarray(voxels, dtype=np.float64)
    if not np.isfinite(values).all():
        raise EncodingError("derived voxels contain values that are not finite")
    low, high = float(values.min()), float(values.max())
    rounded = np.round(values)
    fits = low >= _INT16_MIN - 0.5 and high <= _INT16_MAX + 0.5
    integral = bool(np.allclose(values, rounded, rtol=0.0, atol=1e-3))
    if fits and (integral or round_to_integers or high - low >= _ROUNDING_RANGE):
        stored = np.clip(rounded, _INT16_MIN, _INT16_MAX).astype(np.int16)
        return StoredPixels(stored, 1.0, 0.0)
    slope = (high - low) / (_INT16_MAX - _INT16_MIN) if high > low else 1.0
    intercept = low - _INT16_MIN * slope
    stored = np.clip(np.round((values - intercept) / slope), _INT16_MIN, _INT16_MAX)
    logger.debug("derived pixels rescaled: slope %g, intercept %g", slope, intercept)
    return StoredPixels(stored.astype(np.int16), float(slope), float(intercept))


def source_window(source: Dataset) -> tuple[list[float], list[float], str | None] | None:
    """The source's Window Center / Width (all values) and explanation, if it has one."""
    holder: Dataset | None = source
    if "WindowCenter" not in source or "WindowWidth" not in source:
        holder = functional_group(source, 0, "FrameVOILUTSequence")
    if holder is None or "WindowCenter" not in holder or "WindowWidth" not in holder:
        return None
    centers = _as_list(holder.WindowCenter)
    widths = _as_list(holder.WindowWidth)
    if len(centers) != len(widths) or any(w < 1 for w in widths):
        return None
    explanation = holder.get("WindowCenterWidthExplanation")
    return (
        centers,
        widths,
        (str(explanation) if explanation is not None and len(centers) == 1 else None),
    )


def data_window(voxels: np.ndarray) -> tuple[float, float]:
    """(center, width) covering the 1st to 99th percentile of ``voxels``."""
    low, high = np.percentile(voxels, [1.0, 99.0])
    return float(low + high) / 2.0, max(float(high - low), 1.0)


def copy_body_part(ds: Dataset, source: Dataset) -> None:
    """Body Part Examined and Laterality (Type 2C) of the General Series module.

    Both are copied from the source; without a body part, Laterality is
    unknown and present but empty, as the condition asks.
    """
    if "BodyPartExamined" in source:
        ds.BodyPartExamined = source.BodyPartExamined
    if "Laterality" in source:
        ds.Laterality = source.Laterality
    elif "BodyPartExamined" not in source:
        ds.Laterality = ""


def _as_list(value: object) -> list[float]:
    """A DS value or multi-value as floats."""
    if isinstance(value, (str, int, float)):
        return [float(value)]
    return [float(v) for v in value]  # type: ignore[attr-defined]


def result_skeleton(
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: str,
    source: Dataset,
    identity: ResultIdentity,
    device: DeviceIdentity,
    now: dt.datetime,
) -> Dataset:
    """The modules every hand-built result object shares.

    File meta, SOP Common (with creation date/time), Patient/Study
    placeholders (``finish_result`` copies the source's exactly), the series
    (UID, number, description, Modality, body part), the source's Frame of
    Reference, and the node as General Equipment.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, sop_instance_uid
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "", "", ""
    ds.StudyInstanceUID = source.StudyInstanceUID
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.StudyID = "", "", "", ""
    ds.AccessionNumber = ""
    ds.Modality = modality
    copy_body_part(ds, source)
    ds.SeriesInstanceUID = identity.series_instance_uid
    ds.SeriesNumber = identity.series_number
    ds.SeriesDescription = identity.series_description
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "")
    set_general_equipment(ds, device)
    return ds
