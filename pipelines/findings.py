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
class Classification:
    """A qualitative evaluation (PS3.16 TID 1500 qualitative evaluations), e.g. from a classifier.

    Parameters
    ----------
    concept : Code
        What is evaluated, e.g. SCT 404684003 "Clinical finding".
    value : Code
        The class found, e.g. SCT 36118008 "Pneumothorax".
    probability : float | None
        The model's probability or confidence for ``value`` in [0, 1].
    segment_number : int | None
        The segment the evaluation is about, if any.
    """

    concept: Code
    value: Code
    probability: float | None = None
    segment_number: int | None = None

    def __post_init__(self) -> None:
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise FindingsError(f"probability must be in [0, 1], got {self.probability}")


@dataclass(frozen=True)
class Detection:
    """A detected object: an axis-aligned box in voxel coordinates, with a score.

    Boxes are ``(frame, row, column)`` index coordinates of the source volume,
    ``box_min`` inclusive and ``box_max`` exclusive; writers map them to
    patient coordinates (SCOORD3D) with the source geometry.
    """

    finding: Code
    score: float
    box_min: tuple[float, float, float]
    box_max: tuple[float, float, float]
    tracking_id: str
    label: str

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise FindingsError(f"detection score must be in [0, 1], got {self.score}")
        if any(hi <= lo for lo, hi in zip(self.box_min, self.box_max, strict=True)):
            raise FindingsError(f"empty detection box {self.box_min}..{self.box_max}")


@dataclass(frozen=True, eq=False)
class DerivedSeries:
    """A new image series computed from the source (reformat, MIP), with its own geometry.

    ``voxels`` are ``[frame, row, column]`` in the source's modality units
    (HU for CT); ``origin`` is the patient position (mm, LPS) of the first
    voxel of frame 0; directions are unit vectors in LPS; ``spacing`` is
    (between frames, between rows, between columns) in mm.
    """

    description: str
    voxels: np.ndarray
    origin: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    slice_direction: tuple[float, float, float]
    spacing: tuple[float, float, float]
    slice_thickness: float
    derivation: Code

    def __post_init__(self) -> None:
        if self.voxels.ndim != 3:
            raise FindingsError(f"derived series must be 3-D, got shape {self.voxels.shape}")


@dataclass(frozen=True)
class Registration:
    """A spatial registration of a prior study onto the current one (PS3.3 C.20).

    ``matrix`` is the 4x4 affine that maps prior patient coordinates (mm) to
    current patient coordinates; ``deformation`` optionally holds a dense
    displacement field ``[3, frame, row, column]`` in mm on the current grid.
    """

    prior_study_instance_uid: str
    prior_series_instance_uid: str
    prior_frame_of_reference_uid: str
    matrix: tuple[tuple[float, float, float, float], ...]
    deformation: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if len(self.matrix) != 4 or any(len(row) != 4 for row in self.matrix):
            raise FindingsError("registration matrix must be 4x4")


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
    classifications: tuple[Classification, ...] = ()
    detections: tuple[Detection, ...] = ()
    derived_series: tuple[DerivedSeries, ...] = ()
    registrations: tuple[Registration, ...] = ()
    key_frames: tuple[int, ...] = ()
    source_frame_numbers: tuple[int, ...] | None = None

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
        referring: tuple[Measurement | Classification, ...] = (
            *self.measurements,
            *self.classifications,
        )
        for m in referring:
            if m.segment_number is not None and m.segment_number not in numbers:
                raise FindingsError(
                    f"{type(m).__name__} refers to unknown segment {m.segment_number}"
                )
        if any(not 0 <= k < n_frames for k in self.key_frames):
            raise FindingsError(f"key frames {self.key_frames} outside 0..{n_frames - 1}")
        if self.source_frame_numbers is not None and len(self.source_frame_numbers) != n_frames:
            raise FindingsError("source_frame_numbers must give one frame number per source frame")

    def segment(self, number: int) -> Segment:
        """Return the segment with Segment Number ``number``."""
        for seg in self.segments:
            if seg.description.number == number:
                return seg
        raise KeyError(number)
