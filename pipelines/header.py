"""Selected header attributes of a series as plain Python values.

Pipelines receive a :class:`~pipelines.volume.Volume`, not datasets, so the
few attributes an analysis needs besides the pixels travel in
``Volume.header``: a read-only mapping from DICOM keyword to a plain value
(``str``, ``float``, ``int``, a tuple of them, or for a sequence a tuple of
such mappings). Only the attributes listed here are copied; patient
identifiers never are.

``"AcquisitionDateTimes"`` holds each frame's acquisition date and time
(``YYYYMMDDHHMMSS.FFFFFF``, as in a DT value), in frame order: Acquisition
DateTime (0008,002A), else Acquisition Date + Time (0008,0022 / 0008,0032),
or for an enhanced image the Frame Acquisition DateTime of its Frame Content
functional group (PS3.3 C.7.6.16.2.2); ``""`` where unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import IS, DSdecimal, DSfloat

#: Attributes copied from the first image of the series.
HEADER_KEYWORDS = (
    "Modality",
    "SOPClassUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "SeriesDescription",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "ImageType",
    "PhotometricInterpretation",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "StudyDate",
    "StudyTime",
    "PatientWeight",
    "PatientSize",
    "SliceThickness",
    # PET Series / Image modules (PS3.3 C.8.9.1, C.8.9.4)
    "Units",
    "DecayCorrection",
    "CorrectedImage",
    "DecayFactor",
    "FrameReferenceTime",
    "SUVType",
    "RadiopharmaceuticalInformationSequence",
)

#: Attributes copied from the items of Radiopharmaceutical Information Sequence.
RADIOPHARMACEUTICAL_KEYWORDS = (
    "Radiopharmaceutical",
    "RadiopharmaceuticalStartTime",
    "RadiopharmaceuticalStartDateTime",
    "RadionuclideTotalDose",
    "RadionuclideHalfLife",
    "RadionuclidePositronFraction",
)


def plain(value: object) -> Any:
    """A pydicom element value as a plain Python value (recursively)."""
    if isinstance(value, DicomSequence):
        return tuple(_items(item, RADIOPHARMACEUTICAL_KEYWORDS) for item in value)
    if isinstance(value, (MultiValue, list, tuple)):
        return tuple(plain(v) for v in value)
    if isinstance(value, (DSfloat, DSdecimal)):
        return float(value)
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    return str(value)


def _items(ds: Dataset, keywords: Sequence[str]) -> Mapping[str, Any]:
    return MappingProxyType(
        {k: plain(ds.get(k)) for k in keywords if k in ds and ds.get(k) not in (None, "")}
    )


def series_header(
    datasets: Sequence[Dataset],
    source_indices: Sequence[int],
    frame_numbers: Sequence[int] | None = None,
) -> Mapping[str, Any]:
    """The header of a series: :data:`HEADER_KEYWORDS` of the first image and per-frame times.

    Parameters
    ----------
    datasets : Sequence[pydicom.dataset.Dataset]
        The series as given to :func:`~pipelines.volume.load_volume`.
    source_indices : Sequence[int]
        For each frame in frame order, the index of its dataset.
    frame_numbers : Sequence[int] | None
        For each frame in frame order, its 1-based number within its dataset.
    """
    first = datasets[0]
    values: dict[str, Any] = dict(_items(first, HEADER_KEYWORDS))
    numbers = frame_numbers if frame_numbers is not None else [1] * len(source_indices)
    per_dataset = [_acquisition_datetime(ds) for ds in datasets]
    values["AcquisitionDateTimes"] = tuple(
        _frame_datetime(datasets[i], n) or per_dataset[i]
        for i, n in zip(source_indices, numbers, strict=True)
    )
    return MappingProxyType(values)


def _acquisition_datetime(ds: Dataset) -> str:
    if ds.get("AcquisitionDateTime"):
        return str(ds.AcquisitionDateTime)
    date, time = ds.get("AcquisitionDate"), ds.get("AcquisitionTime")
    if date and time:
        return f"{date}{time}"
    return ""


def _frame_datetime(ds: Dataset, frame_number: int) -> str:
    """Frame Acquisition DateTime of one frame of an enhanced image, or ``""``."""
    groups = ds.get("PerFrameFunctionalGroupsSequence")
    if not groups or frame_number > len(groups):
        return ""
    content = groups[frame_number - 1].get("FrameContentSequence")
    if not content:
        return ""
    return str(content[0].get("FrameAcquisitionDateTime", "") or "")
