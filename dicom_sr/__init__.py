"""Turn pipeline findings into DICOM results: SEG (PS3.3 A.51) and SR (TID 1500).

This package never imports torch, monai or anything of ``node/``; it reads
only :mod:`pipelines.findings` and :mod:`pipelines.errors`.
"""

from __future__ import annotations

from dicom_sr.errors import DicomWriterError, EncodingError, IdentityError, SourceImagesError
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity
from dicom_sr.results import write_results
from dicom_sr.seg import write_segmentation
from dicom_sr.sr import write_measurement_report

__all__ = [
    "AlgorithmIdentity",
    "DeviceIdentity",
    "DicomWriterError",
    "EncodingError",
    "IdentityError",
    "ResultIdentity",
    "SourceImagesError",
    "write_measurement_report",
    "write_results",
    "write_segmentation",
]
