"""Turn pipeline findings into DICOM results: SEG, SR, and fallbacks.

SEG (PS3.3 A.51), TID 1500 SR (Comprehensive 3D SR), Secondary Capture
images with burned-in outlines, an Encapsulated PDF summary and a Key Object
Selection, all conformant to IHE AI Results (AIR); derived image series
(MPR/MIP as CT, MR or SC images) and Spatial Registration objects (rigid and
deformable, Modality REG) for pipelines whose output is images or a
registration.

This package never imports torch, monai or anything of ``node/``; it reads
only :mod:`pipelines.findings` and :mod:`pipelines.errors`.
"""

from __future__ import annotations

from dicom_sr.derived import write_derived_series
from dicom_sr.equipment import algorithm_device_uid, contributing_equipment
from dicom_sr.errors import DicomWriterError, EncodingError, IdentityError, SourceImagesError
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity
from dicom_sr.kinds import ResultKind
from dicom_sr.kos import write_key_object_selection
from dicom_sr.pdf import write_pdf_report
from dicom_sr.profile import ScFrames, SegmentationType, ViewerProfile
from dicom_sr.registration import write_deformable_registration, write_spatial_registration
from dicom_sr.results import DEFAULT_FORMATS, write_primary_outputs, write_results
from dicom_sr.sc import write_secondary_captures
from dicom_sr.seg import write_segmentation
from dicom_sr.sr import write_measurement_report

__all__ = [
    "DEFAULT_FORMATS",
    "AlgorithmIdentity",
    "DeviceIdentity",
    "DicomWriterError",
    "EncodingError",
    "IdentityError",
    "ResultIdentity",
    "ResultKind",
    "ScFrames",
    "SegmentationType",
    "SourceImagesError",
    "ViewerProfile",
    "algorithm_device_uid",
    "contributing_equipment",
    "write_deformable_registration",
    "write_derived_series",
    "write_key_object_selection",
    "write_measurement_report",
    "write_pdf_report",
    "write_primary_outputs",
    "write_results",
    "write_secondary_captures",
    "write_segmentation",
    "write_spatial_registration",
]
