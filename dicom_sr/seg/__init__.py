"""DICOM Segmentation (PS3.3 A.51) writer."""

from __future__ import annotations

from dicom_sr.seg.writer import (
    SEGMENTATION_TRANSFER_SYNTAXES,
    algorithm_identification,
    segment_tracking_uid,
    segments_overlap,
    write_segmentation,
)

__all__ = [
    "SEGMENTATION_TRANSFER_SYNTAXES",
    "algorithm_identification",
    "segment_tracking_uid",
    "segments_overlap",
    "write_segmentation",
]
