"""Secondary Capture fallback (PS3.3 A.8.1): outlines burned over the source frames."""

from __future__ import annotations

from dicom_sr.sc.writer import write_secondary_captures

__all__ = ["write_secondary_captures"]
