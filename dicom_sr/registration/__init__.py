"""Spatial Registration (PS3.3 A.39.1) and Deformable Spatial Registration (A.39.2) objects."""

from __future__ import annotations

from dicom_sr.registration.writer import (
    matrix_type,
    write_deformable_registration,
    write_spatial_registration,
)

__all__ = ["matrix_type", "write_deformable_registration", "write_spatial_registration"]
