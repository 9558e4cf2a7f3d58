"""Key Object Selection Document (PS3.3 A.35.4) marking the key frames."""

from __future__ import annotations

from dicom_sr.kos.writer import write_key_object_selection

__all__ = ["write_key_object_selection"]
