"""ct-anatomy: weight-free body, lung, bone and intracranial segmentation of CT.

Classical Hounsfield-unit segmentation with morphology and connected
components (scipy.ndimage), no trained model:

1. Body: voxels above -500 HU, the largest 3-D connected component, holes
   filled slice by slice so that the lungs and airways lie inside it.
2. Lungs: voxels below -400 HU inside the body, in at most the two largest
   connected components that are at least ``min_lung_ml`` large, do not touch
   the image border and are not pure gas (mean above -950 HU, which excludes
   bowel and sinus gas); vessels, as small in-plane holes, are filled in.
3. Bone: voxels of at least 300 HU inside the body, without specks smaller
   than ``min_bone_ml``. Contrast-enhanced vessels above 300 HU are counted as
   bone: a known limitation of a threshold.
4. Intracranial space (head CT only: no lungs, and the bone encloses a soft
   tissue cavity): the inside of the skull, filled slice by slice, minus bone.

Measurements (PS3.16 TID 1419 concepts) per segment: volume in mL and mean
attenuation in HU; for the lungs also the emphysema index %LAA-950 (share of
lung voxels below -950 HU).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipelines import codes
from pipelines.base import InputSpec, Pipeline
from pipelines.errors import InputError
from pipelines.findings import Code, Findings, Measurement, Segment, SegmentDescription
from pipelines.volume import Volume

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"

Box = tuple[slice, slice, slice]

_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)
_FULL_3D = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class CtAnatomyParameters:
    """Thresholds of the ct-anatomy pipeline (HU, mL, mm).

    Parameters
    ----------
    body_hu : float
        Voxels above this are body (skin, fat, tissue, bone).
    air_hu : float
        Voxels below this, inside the body, are lung candidates.
    bone_hu : float
        Voxels at or above this, inside the body, are bone.
    laa_hu : float
        Lung voxels below this count as low attenuation (%LAA-950).
    min_lung_ml : float
        Smallest lung component kept.
    max_gas_mean_hu : float
        A candidate whose mean is at or below this is gas, not lung.
    max_vessel_area_mm2 : float
        In-plane holes in the lung mask up to this area are vessels, filled in.
    min_bone_ml : float
        Bone components smaller than this are noise and dropped.
    min_intracranial_ml : float
        Smallest intracranial cavity reported.
    skull_closing_mm : float
        In-plane closing radius that bridges small gaps in the skull.
    intracranial_min_hu : float
        Voxels of the cavity at or below this (air, fat) are not intracranial.
    intracranial_mean_hu : tuple[float, float]
        Range the mean of a cavity must lie in to be intracranial soft tissue.
    """

    body_hu: float = -500.0
    air_hu: float = -400.0
    bone_hu: float = 300.0
    laa_hu: float = -950.0
    min_lung_ml: float = 50.0
    max_gas_mean_hu: float = -950.0
    max_vessel_area_mm2: float = 200.0
    min_bone_ml: float = 0.1
    min_intracranial_ml: float = 10.0
    skull_closing_mm: float = 2.0
    intracranial_min_hu: float = -100.0
    intracranial_mean_hu: tuple[float, float] = (-20.0, 100.0)


@dataclass(frozen=True)
class _Kind:
    """How one kind of segment is described."""

    label: str
    category: Code
    property_type: Code
    tracking_id: str
    color_rgb: tuple[int, int, int]


_BODY = _Kind("Body", codes.ANATOMICAL_STRUCTURE, codes.ENTIRE_BODY, "body", (177, 122, 101))
_LUNGS = _Kind("Lungs", codes.ANATOMICAL_STRUCTURE, codes.LUNG, "lungs", (128, 174, 228))
_BONE = _Kind("Bone", codes.TISSUE, codes.BONE, "bone", (241, 214, 145))
_SKULL = _Kind("Skull", codes.ANATOMICAL_STRUCTURE, codes.SKULL, "skull", (241, 214, 145))
_INTRACRANIAL = _Kind(
    "Intracranial space",
    codes.ANATOMICAL_STRUCTURE,
    codes.INTRACRANIAL,
    "intracranial",
    (216, 101, 79),
)


@dataclass(frozen=True, eq=False)
class _Masks:
    """Segment masks within the body's bounding box (``None``: not found)."""

    box: Box
    body: np.ndarray
    lungs: np.ndarray | None
    bone: np.ndarray | None
    intracranial: np.ndarray | None


class CtAnatomyPipeline(Pipeline):
    """Body, lungs, bone and (head CT) intracranial space from Hounsfield units."""

    name = "ct-anatomy"
    version = "1.0.0"
    accepts = InputSpec(
        modalities=frozenset({"CT"}),
        sop_class_uids=frozenset(
            {
                CT_IMAGE_STORAGE,
                ENHANCED_CT_IMAGE_STORAGE,
                LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
            }
        ),
        min_frames=1,
        dimensions=3,
    )
    model_checksum = None

    def __init__(self, parameters: CtAnatomyParameters | None = None) -> None:
        self.parameters = parameters or CtAnatomyParameters()

    def run(self, volume: Volume) -> Findings:
        """Segment and measure ``volume`` (Hounsfield units).

        Raises
        ------
        InputError
            When no voxel lies above the body threshold (an empty image).
        """
        self.check_input(volume)
        masks = _segment(volume, self.parameters)
        notes: list[str] = []
        kinds: list[tuple[_Kind, np.ndarray]] = [(_BODY, masks.body)]
        if masks.lungs is not None:
            kinds.append((_LUNGS, masks.lungs))
        else:
            notes.append(
                f"No lungs: no air-filled region of lung density of at least "
                f"{self.parameters.min_lung_ml:g} mL inside the body; no lung segment written."
            )
        if masks.bone is not None:
            kinds.append((_SKULL if masks.intracranial is not None else _BONE, masks.bone))
        else:
            notes.append(
                f"No bone: no voxels of at least {self.parameters.bone_hu:g} HU in the body."
            )
        if masks.intracranial is not None:
            kinds.append((_INTRACRANIAL, masks.intracranial))
            notes.append(
                "Head CT: intracranial space = inside of the skull, slice by slice, minus bone."
            )
        return self._findings(volume, masks.box, kinds, tuple(notes))

    def _findings(
        self,
        volume: Volume,
        box: Box,
        kinds: list[tuple[_Kind, np.ndarray]],
        notes: tuple[str, ...],
    ) -> Findings:
        hu = volume.voxels[box]
        segments: list[Segment] = []
        measurements: list[Measurement] = []
        for number, (kind, mask) in enumerate(kinds, start=1):
            segments.append(
                Segment(description=_describe(kind, number), mask=_full(mask, box, volume))
            )
            measurements.extend(_measure(hu, mask, number, volume.voxel_volume_ml))
            if kind is _LUNGS:
                measurements.append(_laa(hu, mask, number, self.parameters.laa_hu))
        return Findings(
            pipeline_name=self.name,
            pipeline_version=self.version,
            source_sop_instance_uids=volume.sop_instance_uids,
            segments=tuple(segments),
            measurements=tuple(measurements),
            notes=notes,
            source_frame_numbers=volume.source_frame_numbers,
        )


def _describe(kind: _Kind, number: int) -> SegmentDescription:
    return SegmentDescription(
        number=number,
        label=kind.label,
        category=kind.category,
        property_type=kind.property_type,
        tracking_id=kind.tracking_id,
        color_rgb=kind.color_rgb,
    )


def _full(mask: np.ndarray, box: Box, volume: Volume) -> np.ndarray:
    """``mask`` (inside ``box``) placed in a full-size ``[frame, row, column]`` array."""
    full = np.zeros(volume.shape, dtype=bool)
    full[box] = mask
    return full


def _measure(hu: np.ndarray, mask: np.ndarray, number: int, voxel_ml: float) -> list[Measurement]:
    """Volume (mL) and mean attenuation (HU) of one segment (TID 1419 rows)."""
    count = int(np.count_nonzero(mask))
    mean = float(np.sum(hu, where=mask, dtype=np.float64)) / count
    return [
        Measurement(
            concept=codes.VOLUME,
            value=count * voxel_ml,
            unit=codes.MILLILITER,
            segment_number=number,
        ),
        Measurement(
            concept=codes.ATTENUATION_COEFFICIENT,
            value=mean,
            unit=codes.HOUNSFIELD_UNIT,
            segment_number=number,
            derivation=codes.MEAN,
        ),
    ]


def _laa(hu: np.ndarray, lungs: np.ndarray, number: int, threshold_hu: float) -> Measurement:
    """%LAA-950: the share of lung voxels below ``threshold_hu``, in percent."""
    low = int(np.count_nonzero((hu < threshold_hu) & lungs))
    percent = 100.0 * low / int(np.count_nonzero(lungs))
    return Measurement(
        concept=codes.LAA950, value=percent, unit=codes.PERCENT, segment_number=number
    )


def _segment(volume: Volume, p: CtAnatomyParameters) -> _Masks:
    """Run the four segmentation steps; masks are cropped to the body."""
    hu = volume.voxels
    body_full = _largest_component(hu > p.body_hu)
    if body_full is None:
        raise InputError(f"no body found: no voxels above {p.body_hu:g} HU")
    box = _bounding_box(body_full)
    body = _fill_holes_per_slice(body_full[box])
    del body_full
    hu_box = hu[box]
    voxel_ml = volume.voxel_volume_ml
    lungs = _lungs(hu_box, body, box, volume, p)
    bone = _bone(hu_box, body, voxel_ml, p)
    intracranial = None
    if lungs is None and bone is not None:
        intracranial = _intracranial(hu_box, bone, volume, p)
    return _Masks(box=box, body=body, lungs=lungs, bone=bone, intracranial=intracranial)


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 6-connected component of ``mask``, or ``None`` if empty."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    result: np.ndarray = labels == int(sizes.argmax())
    return result


def _bounding_box(mask: np.ndarray) -> Box:
    """The smallest box holding every True voxel of a non-empty ``mask``."""
    bounds = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        bounds.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return bounds[0], bounds[1], bounds[2]


def _background_labels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label the background of each slice; mark labels that reach the slice edge.

    Returns the labels (0 on ``mask``) and a lookup ``outside[label]``.
    """
    labels, n = ndimage.label(~mask, structure=_IN_PLANE)
    outside = np.zeros(n + 1, dtype=bool)
    for face in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        outside[np.unique(face)] = True
    outside[0] = False
    return labels, outside


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every in-plane hole filled (binary_fill_holes per slice)."""
    labels, outside = _background_labels(mask)
    filled: np.ndarray = ~outside[labels]
    return filled


def _fill_small_holes_per_slice(mask: np.ndarray, max_pixels: int) -> np.ndarray:
    """``mask`` with in-plane holes of at most ``max_pixels`` filled."""
    labels, outside = _background_labels(mask)
    areas = np.bincount(labels.ravel(), minlength=outside.size)
    fill = ~outside & (areas <= max_pixels)
    fill[0] = True
    result: np.ndarray = fill[labels]
    return result


def _lungs(
    hu: np.ndarray, body: np.ndarray, box: Box, volume: Volume, p: CtAnatomyParameters
) -> np.ndarray | None:
    """Up to two lung components of air inside the body, vessels filled in."""
    candidates = body & (hu < p.air_hu)
    labels, n = ndimage.label(candidates)
    if n == 0:
        return None
    index = labels[candidates]
    sizes = np.bincount(index, minlength=n + 1)
    sums = np.bincount(index, weights=hu[candidates], minlength=n + 1)
    del index
    min_voxels = math.ceil(p.min_lung_ml / volume.voxel_volume_ml)
    at_border = _labels_at_image_border(labels, box, volume.shape)
    chosen: list[int] = []
    for label in np.argsort(sizes[1:])[::-1] + 1:
        if sizes[label] < min_voxels or len(chosen) == 2:
            break
        if at_border[label] or sums[label] / sizes[label] <= p.max_gas_mean_hu:
            continue
        chosen.append(int(label))
    if not chosen:
        return None
    lungs = labels == chosen[0]
    for label in chosen[1:]:
        lungs |= labels == label
    del labels
    return _fill_vessels(lungs, volume, p)


def _labels_at_image_border(
    labels: np.ndarray, box: Box, shape: tuple[int, int, int]
) -> np.ndarray:
    """Lookup ``at_border[label]``: the label reaches the image's row/column edge."""
    at_border = np.zeros(int(labels.max()) + 1, dtype=bool)
    rows, columns = box[1], box[2]
    faces = []
    if rows.start == 0:
        faces.append(labels[:, 0, :])
    if rows.stop == shape[1]:
        faces.append(labels[:, -1, :])
    if columns.start == 0:
        faces.append(labels[:, :, 0])
    if columns.stop == shape[2]:
        faces.append(labels[:, :, -1])
    for face in faces:
        at_border[np.unique(face)] = True
    at_border[0] = False
    return at_border


def _fill_vessels(lungs: np.ndarray, volume: Volume, p: CtAnatomyParameters) -> np.ndarray:
    """Fill small in-plane holes (vessels, airway walls) within the lungs' box."""
    pixel_mm2 = volume.spacing[1] * volume.spacing[2]
    max_pixels = int(p.max_vessel_area_mm2 / pixel_mm2)
    if max_pixels < 1:
        return lungs
    box = _bounding_box(lungs)
    lungs[box] = _fill_small_holes_per_slice(lungs[box], max_pixels)
    return lungs


def _bone(
    hu: np.ndarray, body: np.ndarray, voxel_ml: float, p: CtAnatomyParameters
) -> np.ndarray | None:
    """Voxels of at least ``bone_hu`` in the body, without specks."""
    bone = body & (hu >= p.bone_hu)
    if not bone.any():
        return None
    labels, n = ndimage.label(bone, structure=_FULL_3D)
    index = labels[bone]
    del labels
    sizes = np.bincount(index, minlength=n + 1)
    keep = sizes >= math.ceil(p.min_bone_ml / voxel_ml)
    keep[0] = False
    bone[bone] = keep[index]
    return bone if bone.any() else None


def _intracranial(
    hu: np.ndarray, bone: np.ndarray, volume: Volume, p: CtAnatomyParameters
) -> np.ndarray | None:
    """The soft-tissue cavity enclosed by the skull, or ``None`` if there is none."""
    iterations = round(p.skull_closing_mm / min(volume.spacing[1], volume.spacing[2]))
    closed = bone
    if iterations > 0:
        closed = ndimage.binary_closing(bone, structure=_IN_PLANE, iterations=iterations)
        closed |= bone
    cavity = _fill_holes_per_slice(closed)
    cavity &= ~closed
    cavity &= hu > p.intracranial_min_hu  # no air: sinuses, mastoid cells
    del closed
    largest = _largest_component(cavity)
    del cavity
    if largest is None:
        return None
    cavity = largest
    count = int(np.count_nonzero(cavity))
    mean = float(np.sum(hu, where=cavity, dtype=np.float64)) / count
    low, high = p.intracranial_mean_hu
    if count * volume.voxel_volume_ml < p.min_intracranial_ml or not low <= mean <= high:
        logger.debug(
            "bone-enclosed cavity of %d voxels, mean %.0f HU: not intracranial", count, mean
        )
        return None
    return cavity
