"""Key Object Selection Documents (PS3.3 A.35.4): key frames, and rejection notes (IHE IOCM)."""

from __future__ import annotations

from dicom_sr.kos.writer import write_key_object_selection, write_rejection_note

__all__ = ["write_key_object_selection", "write_rejection_note"]
