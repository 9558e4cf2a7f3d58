"""Derived image series (PS3.3 A.3 / A.4 / A.8.1): reformats and projections as images."""

from __future__ import annotations

from dicom_sr.derived.writer import (
    derived_sop_instance_uid,
    image_type_value3,
    write_derived_series,
)

__all__ = ["derived_sop_instance_uid", "image_type_value3", "write_derived_series"]
