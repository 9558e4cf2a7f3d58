"""DICOMweb ingress: STOW-RS Store Instances (PS3.18 10.5) into the same spool and audit as C-STORE.

The HTTP layer (:mod:`node.http.dicomweb`) streams the multipart body to part
files; :meth:`StowIngress.ingest` then checks each part (read to its end: a
truncated data set is refused), renames it into the spool (fsynced; a changed
copy of an instance the spool holds is kept beside it, never over it),
records it exactly as the C-STORE path does, and builds the
Store Instances Response (ReferencedSOPSequence / FailedSOPSequence with a
FailureReason per refused instance). The assembler picks the instances up
like any others.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from node.db.ingest import IngestStore, ReceivedInstance
from node.dimse import StoreStatus
from node.errors import StorageError
from node.ingress.dimse import decodable_transfer_syntaxes
from node.multipart import Part
from node.part10 import truncation
from node.spool import Spool

logger = logging.getLogger(__name__)


class FailureReason(enum.IntEnum):
    """STOW-RS Failure Reason (0008,1197) values (PS3.18 Table 10.5.3-2, PS3.4 Annex B)."""

    #: Processing failure.
    PROCESSING_FAILURE = 0x0110
    #: Referenced SOP Class not supported (not a storage SOP class).
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: Refused: Out of Resources.
    OUT_OF_RESOURCES = 0xA700
    #: Error: Data Set does not match SOP Class (meta header disagrees with the data set).
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Error: Cannot understand (not DICOM, or a required attribute is missing).
    CANNOT_UNDERSTAND = 0xC000
    #: Referenced Transfer Syntax not supported (the node could not decode its pixels).
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
    #: The instance's Study Instance UID differs from the one in the request URL.
    STUDY_INSTANCE_UID_MISMATCH = 0xC409


class _Refused(Exception):
    def __init__(
        self,
        reason: FailureReason,
        message: str,
        sop_class: str | None = None,
        sop_instance: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sop_class = sop_class
        self.sop_instance = sop_instance


@dataclass(frozen=True)
class StoredItem:
    """An instance the node stored (or already held identically)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


@dataclass(frozen=True)
class FailedItem:
    """An instance the node refused, and why."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    reason: FailureReason
    message: str


@dataclass(frozen=True)
class StowOutcome:
    """What one STOW-RS request did."""

    stored: tuple[StoredItem, ...]
    failed: tuple[FailedItem, ...]

    @property
    def http_status(self) -> int:
        """200 all stored, 202 some failed, 409 none stored (PS3.18 10.5.3)."""
        if not self.failed:
            return 200
        return 202 if self.stored else 409

    def response_dataset(
        self, retrieve_url: Callable[[StoredItem], str] | None, study_url: str | None
    ) -> Dataset:
        """The Store Instances Response Module (PS3.18 Table 10.5.3-1)."""
        ds = Dataset()
        if study_url and self.stored:
            ds.RetrieveURL = study_url
        if self.failed:
            ds.FailedSOPSequence = [_failed_item(f) for f in self.failed]
        if self.stored:
            ds.ReferencedSOPSequence = [_referenced_item(s, retrieve_url) for s in self.stored]
        return ds


def _referenced_item(item: StoredItem, retrieve_url: Callable[[StoredItem], str] | None) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = item.sop_class_uid
    ref.ReferencedSOPInstanceUID = item.sop_instance_uid
    if retrieve_url is not None:
        ref.RetrieveURL = retrieve_url(item)
    return ref


def _failed_item(item: FailedItem) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = item.sop_class_uid or ""
    ref.ReferencedSOPInstanceUID = item.sop_instance_uid or ""
    ref.FailureReason = int(item.reason)
    return ref


class StowIngress:
    """Stores STOW-RS parts in the spool and the audit database.

    Parameters
    ----------
    spool : Spool
        Where instances are kept (the same spool the SCP writes).
    store : IngestStore
        Every stored and refused instance is recorded here.
    on_stored : callable, optional
        ``(ReceivedInstance | None, StoreStatus)`` after each part (metrics).
    """

    def __init__(
        self,
        spool: Spool,
        store: IngestStore,
        on_stored: Callable[[ReceivedInstance | None, StoreStatus], None] | None = None,
    ) -> None:
        self._spool = spool
        self._store = store
        self._on_stored = on_stored
        self._syntaxes = frozenset(decodable_transfer_syntaxes())

    @property
    def part_directory(self) -> Path:
        """Where the HTTP layer spools incoming parts (same file system as the spool)."""
        return self._spool.root / "incoming"

    def ingest(
        self,
        parts: Sequence[Part],
        study_instance_uid: str | None = None,
        client: str | None = None,
        sender: str | None = None,
    ) -> StowOutcome:
        """Store every part; refuse the ones that cannot be stored, each with a reason.

        Parameters
        ----------
        parts : sequence of Part
            The request's parts, spooled to files.
        study_instance_uid : str, optional
            The study in the request URL; instances of another study are refused.
        client : str, optional
            Who sent them, for the log.
        sender : str, optional
            The configured source that sent them (known by its sender token);
            recorded with every instance, so the study's completeness is
            checked against that source.
        """
        stored: list[StoredItem] = []
        failed: list[FailedItem] = []
        for part in parts:
            try:
                stored.append(self._accept(part, study_instance_uid, sender))
            except _Refused as refused:
                failed.append(
                    FailedItem(
                        refused.sop_class, refused.sop_instance, refused.reason, refused.message
                    )
                )
                self._audit_refusal(refused, part, client, sender)
        if failed:
            logger.warning(
                "STOW-RS from %s: %d stored, %d refused (first: %s)",
                client or "?",
                len(stored),
                len(failed),
                failed[0].message,
            )
        return StowOutcome(tuple(stored), tuple(failed))

    def _accept(self, part: Part, expected_study: str | None, sender: str | None) -> StoredItem:
        media = part.content_type.media_type
        if media.startswith(("application/dicom+", "image/", "video/", "text/")):
            raise _Refused(
                FailureReason.CANNOT_UNDERSTAND,
                f"part media type {media!r} is not application/dicom",
            )
        if not self._spool.has_room(part.size):
            raise _Refused(
                FailureReason.OUT_OF_RESOURCES, "storage directory below its free-space minimum"
            )
        part = _as_part10(part)
        ds = _read_header(part.path)
        sop_class, sop_uid = _required(ds, "SOPClassUID"), _required(ds, "SOPInstanceUID")
        ids = (sop_class, sop_uid)
        meta = ds.file_meta
        if (
            str(meta.get("MediaStorageSOPInstanceUID", sop_uid)) != sop_uid
            or str(meta.get("MediaStorageSOPClassUID", sop_class)) != sop_class
        ):
            raise _Refused(
                FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "SOP Class/Instance UID in the meta header differ from the data set",
                *ids,
            )
        if not _is_storage(sop_class):
            raise _Refused(
                FailureReason.SOP_CLASS_NOT_SUPPORTED,
                f"{sop_class} is not a storage SOP class",
                *ids,
            )
        transfer_syntax = str(meta.get("TransferSyntaxUID", ""))
        if transfer_syntax not in self._syntaxes:
            raise _Refused(
                FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
                f"transfer syntax {transfer_syntax or '(none)'} cannot be decoded here",
                *ids,
            )
        study_uid = _required(ds, "StudyInstanceUID", ids)
        series_uid = _required(ds, "SeriesInstanceUID", ids)
        if expected_study is not None and study_uid != expected_study:
            raise _Refused(
                FailureReason.STUDY_INSTANCE_UID_MISMATCH,
                "Study Instance UID differs from the one in the request URL",
                *ids,
            )
        data = part.path.read_bytes()
        problem = truncation(data, transfer_syntax)
        if problem:
            raise _Refused(FailureReason.CANNOT_UNDERSTAND, problem, *ids)
        try:
            path, digest = self._spool.keep(study_uid, series_uid, sop_uid, part.path, data)
        except StorageError as exc:
            raise _Refused(FailureReason.OUT_OF_RESOURCES, str(exc), *ids) from exc
        received = ReceivedInstance(
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            modality=_text(ds, "Modality", 16),
            body_part_examined=_text(ds, "BodyPartExamined"),
            series_description=_text(ds, "SeriesDescription"),
            study_description=_text(ds, "StudyDescription"),
            transfer_syntax_uid=transfer_syntax,
            calling_ae_title=None,
            source="dicomweb",
            size_bytes=part.size,
            sha256=digest,
            path=str(path),
            sender=sender,
        )
        try:
            self._store.record_instance(received)
        except Exception as exc:  # the database is down: the client must retry later
            logger.error("cannot record instance in the audit database: %s", type(exc).__name__)
            raise _Refused(
                FailureReason.OUT_OF_RESOURCES, "audit database unavailable", *ids
            ) from exc
        if self._on_stored:
            self._on_stored(received, StoreStatus.SUCCESS)
        return StoredItem(sop_class, sop_uid, study_uid, series_uid)

    def _audit_refusal(
        self, refused: _Refused, part: Part, client: str | None, sender: str | None
    ) -> None:
        if self._on_stored:
            self._on_stored(None, StoreStatus.CANNOT_UNDERSTAND)
        try:
            self._store.record_rejection(
                reason=refused.message,
                dimse_status=int(refused.reason),
                calling_ae_title=None,
                source="dicomweb",
                sop_instance_uid=_short(refused.sop_instance),
                sop_class_uid=_short(refused.sop_class),
                size_bytes=part.size,
                sender=sender,
            )
        except Exception as exc:  # recording must never stop the endpoint answering
            logger.error("cannot record a refused instance: %s", type(exc).__name__)


def _is_storage(sop_class: str) -> bool:
    try:
        return uid_to_service_class(sop_class) is StorageServiceClass
    except Exception:  # unknown private UID: pynetdicom raises or returns a default
        return False


def _as_part10(part: Part) -> Part:
    """Tolerate a part without the 128-byte preamble and ``DICM`` (as some clients send):
    rewrite it as a Part 10 file so the spool only ever holds Part 10 files."""
    with open(part.path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":
        return part
    try:
        ds = dcmread(part.path, force=True)
        if "TransferSyntaxUID" not in ds.file_meta:
            implicit = ds.original_encoding[0] if ds.original_encoding[0] is not None else False
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
            )
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:  # garbage: pydicom raises many types
        raise _Refused(
            FailureReason.CANNOT_UNDERSTAND, f"part is not a DICOM data set ({type(exc).__name__})"
        ) from exc
    data = buffer.getbuffer()
    part.path.write_bytes(data)
    return Part(part.path, len(data), hashlib.sha256(data).hexdigest(), part.content_type)


def _read_header(path: Path) -> Dataset:
    try:
        ds = dcmread(path, stop_before_pixels=True)
        ds.get("SOPInstanceUID")
        return ds
    except Exception as exc:  # pydicom raises many types on garbage (InvalidDicomError, ...)
        raise _Refused(
            FailureReason.CANNOT_UNDERSTAND,
            f"part is not a DICOM Part 10 file ({type(exc).__name__})",
        ) from exc


def _required(ds: Dataset, keyword: str, ids: tuple[str, str] | None = None) -> str:
    sop_class, sop_uid = ids or (None, None)
    try:
        value = ds.get(keyword)
    except Exception as exc:
        raise _Refused(
            FailureReason.CANNOT_UNDERSTAND, f"{keyword} cannot be decoded", sop_class, sop_uid
        ) from exc
    text = str(value or "").strip("\x00 ")
    if not text:
        raise _Refused(FailureReason.CANNOT_UNDERSTAND, f"{keyword} is missing", sop_class, sop_uid)
    if len(text) > 64:
        raise _Refused(
            FailureReason.CANNOT_UNDERSTAND,
            f"{keyword} is longer than 64 characters",
            sop_class,
            sop_uid,
        )
    return text


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str | None:
    value: Any = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _short(value: str | None) -> str | None:
    return value[:64] if value else None
