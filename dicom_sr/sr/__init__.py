"""Comprehensive 3D SR (PS3.3 A.35.13) writer: TID 1500 Measurement Report."""

from __future__ import annotations

from dicom_sr.sr.writer import write_measurement_report

__all__ = ["write_measurement_report"]
