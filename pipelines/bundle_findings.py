"""A bundle network's output on the source grid, as plain :class:`Findings`.

Segmentation: one segment per non-background label that is found, with its
volume (mL) and, for CT, its mean attenuation (HU). Classification: the most
probable label's codes and probability, every label's probability in the
notes. Detection: boxes ``(frame, row, column)`` on the source grid, best
score first, those under the threshold or empty left out. Every result notes
the precision the network ran at.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines import codes
from pipelines.bundle_spec import BundleSpec
from pipelines.errors import PipelineError
from pipelines.findings import (
    Classification,
    Detection,
    Findings,
    Measurement,
    Segment,
    SegmentDescription,
)
from pipelines.volume import Volume

_PALETTE = (
    (221, 130, 101),
    (144, 238, 144),
    (111, 184, 210),
    (216, 101, 79),
    (183, 156, 220),
    (241, 214, 145),
    (250, 250, 210),
    (128, 174, 128),
    (188, 65, 28),
    (145, 60, 66),
)


class FindingsBuilder:
    """Findings of one bundle (its registry name, version and spec) at one precision."""

    def __init__(self, name: str, version: str, spec: BundleSpec, precision: str) -> None:
        self.name = name
        self.version = version
        self.spec = spec
        self.precision = precision

    def segmentation(self, volume: Volume, label_volume: np.ndarray) -> Findings:
        """Segments and measurements from a label volume on the source frames."""
        spec = self.spec
        segments: list[Segment] = []
        measurements: list[Measurement] = []
        notes: list[str] = [f"precision {self.precision}"]
        for channel, label in enumerate(spec.labels):
            if spec.is_background(channel):
                continue
            mask = label_volume == channel
            count = int(np.count_nonzero(mask))
            if count == 0:
                notes.append(f"{label}: not found")
                continue
            number = len(segments) + 1
            segments.append(Segment(self._description(number, channel, label), mask))
            measurements.extend(_segment_measurements(volume, mask, count, number))
        return self._findings(
            volume, segments=tuple(segments), measurements=tuple(measurements), notes=tuple(notes)
        )

    def _description(self, number: int, channel: int, label: str) -> SegmentDescription:
        label_codes = self.spec.codes[label]
        return SegmentDescription(
            number=number,
            label=label[:64],
            category=label_codes.category,
            property_type=label_codes.property_type,
            tracking_id=slug(label),
            anatomic_region=label_codes.region,
            color_rgb=_PALETTE[(channel - 1) % len(_PALETTE)],
        )

    def classification(self, volume: Volume, probabilities: Sequence[float]) -> Findings:
        """The most probable label, one probability per label of the spec."""
        spec = self.spec
        if len(probabilities) != len(spec.labels):
            raise PipelineError(
                f"bundle {self.name}: network gives {len(probabilities)} classes, "
                f"metadata names {len(spec.labels)}"
            )
        best = int(np.argmax(probabilities))
        label_codes = spec.codes[spec.labels[best]]
        classification = Classification(
            concept=label_codes.category,
            value=label_codes.property_type,
            probability=min(1.0, max(0.0, float(probabilities[best]))),
        )
        notes = tuple(
            f"{label}: p={p:.4f}" for label, p in zip(spec.labels, probabilities, strict=True)
        )
        return self._findings(
            volume, classifications=(classification,), notes=(f"precision {self.precision}", *notes)
        )

    def detection(
        self,
        volume: Volume,
        source_boxes: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        score_threshold: float,
    ) -> Findings:
        """Detections from ``[n, 6]`` source boxes (low then high corner), best first."""
        spec = self.spec
        upper = np.array(volume.shape * 2, dtype=float)
        source_boxes = np.clip(source_boxes, 0.0, upper)
        detections: list[Detection] = []
        for k in np.argsort(-scores):
            low, high = source_boxes[k, :3], source_boxes[k, 3:]
            if scores[k] < score_threshold or np.any(high <= low):
                continue
            label = spec.labels[int(classes[k])]
            detections.append(
                Detection(
                    finding=spec.codes[label].property_type,
                    score=float(min(1.0, max(0.0, scores[k]))),
                    box_min=(float(low[0]), float(low[1]), float(low[2])),
                    box_max=(float(high[0]), float(high[1]), float(high[2])),
                    tracking_id=f"{slug(label)}-{len(detections) + 1}",
                    label=label[:64],
                )
            )
        return self._findings(
            volume, detections=tuple(detections), notes=(f"precision {self.precision}",)
        )

    def _findings(self, volume: Volume, **content: Any) -> Findings:
        return Findings(
            pipeline_name=self.name,
            pipeline_version=self.version,
            source_sop_instance_uids=volume.sop_instance_uids,
            **content,
        )


def _segment_measurements(
    volume: Volume, mask: np.ndarray, count: int, number: int
) -> list[Measurement]:
    """Volume of a segment and, for CT, its mean attenuation."""
    measurements = [
        Measurement(
            codes.VOLUME,
            count * volume.voxel_volume_ml,
            codes.MILLILITER,
            segment_number=number,
        )
    ]
    if volume.modality == "CT":
        mean = float(np.mean(volume.voxels[mask], dtype=np.float64))
        measurements.append(
            Measurement(
                codes.ATTENUATION_COEFFICIENT,
                mean,
                codes.HOUNSFIELD_UNIT,
                segment_number=number,
                derivation=codes.MEAN,
            )
        )
    return measurements


def slug(label: str) -> str:
    """A tracking identifier from a label: lower case, runs of other characters as ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "label"
