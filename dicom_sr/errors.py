"""Errors raised by the DICOM result writers.

Every error derives from :class:`pipelines.errors.AinodeError`, so the node
can tell a refused result (bad identity, findings that do not match their
source images, content DICOM cannot encode) from a programming error.
"""

from __future__ import annotations

from pipelines.errors import AinodeError


class DicomWriterError(AinodeError):
    """Root of the errors raised by ``dicom_sr``."""


class IdentityError(DicomWriterError, ValueError):
    """An identity value (UID, series number, device, algorithm) is invalid."""


class SourceImagesError(DicomWriterError, ValueError):
    """The source images do not match the findings they are said to underlie."""


class EncodingError(DicomWriterError, ValueError):
    """The findings cannot be encoded as the requested DICOM object."""
