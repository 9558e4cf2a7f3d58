"""Plain findings: what a pipeline returns.

These value objects are the contract between ``pipelines/`` (which computes
them) and ``dicom_sr/`` (which turns them into DICOM SEG / SR objects). They
hold no pydicom or highdicom objects, so a pipeline never writes DICOM and a
writer never needs torch.

Frame order: every voxel array in a finding is indexed ``[frame, row, column]``
where ``frame`` follows ``Findings.source_sop_instance_uids`` - the order of the
source images the pipeline was given after sorting along the slice normal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.errors import AinodeError


class FindingsError(AinodeError, ValueError):
    """A finding was constructed with inconsistent content."""


@dataclass(frozen=True)
class Code:
    """A coded concept (PS3.3 Section 8.8), as plain strings.

    Parameters
    ----------
    value : str
        Code Value, e.g. ``"39607008"``.
    scheme : str
        Coding Scheme Designator, e.g. ``"SCT"``, ``"DCM"``, ``"UCUM"``.
    meaning : str
        Code Meaning, e.g. ``"Lung"``.
    """

    value: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        if not self.value or not self.scheme or not self.meaning:
            raise FindingsError(f"incomplete code {self!r}")
        if len(self.meaning) > 64:
            raise FindingsError(f"code meaning longer than 64 characters: {self.meaning!r}")


@dataclass(frozen=True)
class SegmentDescription:
    """What one segment is (PS3.3 C.8.20.4, Segment Description Macro).

    Parameters
    ----------
    number : int
        Segment Number, 1-based, unique within a Findings.
    label : str
        Segment Label shown by viewers, e.g. ``"Lungs"``.
    category : Code
        Segmented Property Category, e.g. SCT 91723000 "Anatomical structure".
    property_type : Code
        Segmented Property Type, e.g. SCT 39607008 "Lung".
    tracking_id : str
        Stable identifier of the finding across results, e.g. ``"lungs"``.
    anatomic_region : Code | None
        Anatomic Region, where the type alone does not say where.
    color_rgb : tuple[int, int, int]
        Recommended display colour (sRGB 0-255); writers convert to CIELab.
    """

    number: int
    label: str
    category: Code
    property_type: Code
    tracking_id: str
    anatomic_region: Code | None = None
    color_rgb: tuple[int, int, int] = (255, 0, 0)

    def __post_init__(self) -> None:
        if self.number < 1:
            raise FindingsError(f"segment number must be >= 1, got {self.number}")
        if not self.label or not self.tracking_id:
            raise FindingsError("segment label and tracking_id are required")
        if any(not 0 <= c <= 255 for c in self.color_rgb):
            raise FindingsError(f"colour out of range: {self.color_rgb}")


@dataclass(frozen=True, eq=False)
class Segment:
    """One segment: its description and a binary mask ``[frame, row, column]``."""

    description: SegmentDescription
    mask: np.ndarray

    def __post_init__(self) -> None:
        if self.mask.ndim != 3:
            raise FindingsError(f"segment mask must be 3-D, got shape {self.mask.shape}")
        if self.mask.dtype != np.bool_:
            raise FindingsError(f"segment mask must be bool, got {self.mask.dtype}")


@dataclass(frozen=True)
class Measurement:
    """A numeric measurement (PS3.16 TID 300), optionally of one segment.

    Parameters
    ----------
    concept : Code
        What is measured, e.g. SCT 118565006 "Volume".
    value : float
        The value in ``unit``.
    unit : Code
        UCUM unit, e.g. ``Code("mL", "UCUM", "milliliter")``.
    segment_number : int | None
        The segment measured; ``None`` for a measurement of the whole series.
    derivation : Code | None
        How the value was derived, e.g. SCT 373098007 "Mean".
    """

    concept: Code
    value: float
    unit: Code
    segment_number: int | None = None
    derivation: Code | None = None

    def __post_init__(self) -> None:
        if self.unit.scheme != "UCUM":
            raise FindingsError(f"measurement unit must be UCUM, got {self.unit.scheme}")
        if not np.isfinite(self.value):
            raise FindingsError(f"measurement {self.concept.meaning} is not finite")


@dataclass(frozen=True)
class Findings:
    """Everything one pipeline run found in one series.

    Parameters
    ----------
    pipeline_name, pipeline_version : str
        The algorithm's identification (recorded in SEG and SR).
    source_sop_instance_uids : tuple[str, ...]
        The source images in frame order (see module docstring).
    segments : tuple[Segment, ...]
        Segments; their masks have ``len(source_sop_instance_uids)`` frames.
    measurements : tuple[Measurement, ...]
        Measurements; each ``segment_number`` names one of ``segments``.
    """

    pipeline_name: str
    pipeline_version: str
    source_sop_instance_uids: tuple[str, ...]
    segments: tuple[Segment, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n_frames = len(self.source_sop_instance_uids)
        numbers = [s.description.number for s in self.segments]
        if len(set(numbers)) != len(numbers):
            raise FindingsError(f"duplicate segment numbers {numbers}")
        for seg in self.segments:
            if seg.mask.shape[0] != n_frames:
                raise FindingsError(
                    f"segment {seg.description.label} has {seg.mask.shape[0]} frames, "
                    f"source has {n_frames}"
                )
        for m in self.measurements:
            if m.segment_number is not None and m.segment_number not in numbers:
                raise FindingsError(f"measurement refers to unknown segment {m.segment_number}")

    def segment(self, number: int) -> Segment:
        """Return the segment with Segment Number ``number``."""
        for seg in self.segments:
            if seg.description.number == number:
                return seg
        raise KeyError(number)
