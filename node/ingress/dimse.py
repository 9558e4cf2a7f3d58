"""DIMSE ingress: a pynetdicom Storage SCP (C-ECHO, C-STORE of any storage SOP class).

The C-STORE handler is short on purpose: parse the header, write the bytes
as received to the spool (fsynced), record the instance, answer. Analysis
never runs on the network thread. Every refusal gets a PS3.4 status and an
audit row, and the SCP keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import
from pynetdicom.transport import ThreadedAssociationServer

from node.db.ingest import IngestStore, ReceivedInstance
from node.dimse import LOSSLESS_COMPRESSED, StoreStatus, identify, quiet_pynetdicom, set_nodelay
from node.errors import StorageError
from node.part10 import truncation
from node.spool import Spool

logger = logging.getLogger(__name__)


class _Refused(Exception):
    """Internal: a C-STORE that must be answered with ``status``."""

    def __init__(self, status: StoreStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ScpConfig:
    """What the Storage SCP needs from the settings."""

    ae_title: str
    host: str
    port: int
    network_timeout: float
    max_associations: int
    allowed_calling_ae_titles: tuple[str, ...] = ()
    #: ``calling AE title (upper case) -> configured source name``: recorded as the sender.
    senders: Mapping[str, str] = field(default_factory=dict)


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value)[:limit]


class StorageScp:
    """The node's DICOM listener.

    Parameters
    ----------
    config : ScpConfig
        AE title, address and timeouts.
    spool : Spool
        Where instances are written.
    store : IngestStore
        Where every reception and refusal is recorded.
    on_stored : callable, optional
        Called with the :class:`ReceivedInstance` after it is durable (metrics).
    """

    def __init__(
        self,
        config: ScpConfig,
        spool: Spool,
        store: IngestStore,
        on_stored: Callable[[ReceivedInstance | None, StoreStatus], None] | None = None,
    ) -> None:
        self._config = config
        self._spool = spool
        self._store = store
        self._on_stored = on_stored
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0)."""
        if self._server is None:
            raise RuntimeError("the SCP is not running")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start listening (non-blocking)."""
        quiet_pynetdicom()
        ae = AE(ae_title=self._config.ae_title)
        identify(ae)
        ae.add_supported_context(Verification)
        syntaxes = decodable_transfer_syntaxes()
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is None:  # never on pynetdicom's own contexts
                continue
            ae.add_supported_context(cx.abstract_syntax, syntaxes)
        ae.require_called_aet = True
        if self._config.allowed_calling_ae_titles:
            ae.require_calling_aet = list(self._config.allowed_calling_ae_titles)
        ae.maximum_associations = self._config.max_associations
        ae.acse_timeout = self._config.network_timeout
        ae.dimse_timeout = self._config.network_timeout
        ae.network_timeout = self._config.network_timeout
        ae.maximum_pdu_size = 0  # no limit: fewer, larger P-DATA PDUs
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_CONN_OPEN, self._handle_open),
            (evt.EVT_ABORTED, self._handle_aborted),
            (evt.EVT_ACCEPTED, self._handle_accepted),
            (evt.EVT_REJECTED, self._handle_rejected),
        ]
        self._server = ae.start_server(
            (self._config.host, self._config.port), block=False, evt_handlers=handlers
        )
        logger.info(
            "Storage SCP %s listening on %s:%d", self._config.ae_title, self._config.host, self.port
        )

    def stop(self) -> None:
        """Stop listening; running associations are ended."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -- handlers --------------------------------------------------------------

    def _handle_open(self, event: Any) -> None:
        set_nodelay(event.assoc)

    def _handle_accepted(self, event: Any) -> None:
        rejected = event.assoc.rejected_contexts
        if rejected:
            names = sorted({str(cx.abstract_syntax) for cx in rejected})
            logger.warning(
                "association from %s: %d presentation contexts refused",
                _calling_ae(event),
                len(rejected),
            )
            self._store.record_event(
                "contexts_refused",
                "unsupported SOP class or transfer syntax: " + ", ".join(names)[:2000],
                calling_ae_title=_calling_ae(event),
            )

    def _handle_rejected(self, event: Any) -> None:
        # The most common integration error: wrong called AE title, calling AE
        # not on the allow-list, or too many associations.
        calling = _calling_ae(event)
        try:  # the Called AE Title the peer asked for, from its A-ASSOCIATE-RQ
            called = str(event.assoc.requestor.primitive.called_ae_title).strip()
        except AttributeError:
            called = "?"
        logger.warning("association from %s to called AE %s rejected", calling, called)
        self._store.record_event(
            "association_rejected",
            f"called AE title {called!r} (this node is {self._config.ae_title!r}); "
            "check the PACS's entry for this node, the calling AE allow-list and max_associations",
            calling_ae_title=calling,
        )

    def _handle_echo(self, event: Any) -> int:
        return 0x0000

    def _handle_aborted(self, event: Any) -> None:
        calling = _calling_ae(event)
        logger.warning("association from %s aborted", calling)
        self._store.record_event(
            "association_aborted",
            "peer or network aborted the association",
            calling_ae_title=calling,
        )

    def _handle_store(self, event: Any) -> int:
        calling = _calling_ae(event)
        request = event.request
        try:
            received = self._accept(event, calling)
        except _Refused as refused:
            logger.warning(
                "C-STORE from %s refused (0x%04X): %s", calling, refused.status, refused.reason
            )
            self._audit_refusal(refused, calling, request)
            if self._on_stored:
                self._on_stored(None, refused.status)
            return int(refused.status)
        if self._on_stored:
            self._on_stored(received, StoreStatus.SUCCESS)
        return int(StoreStatus.SUCCESS)

    def _accept(self, event: Any, calling: str | None) -> ReceivedInstance:
        data = event.encoded_dataset(include_meta=True)
        if not self._spool.has_room(len(data)):
            raise _Refused(
                StoreStatus.OUT_OF_RESOURCES, "storage directory below its free-space minimum"
            )
        ds = _parse_header(data)
        request = event.request
        sop_uid = _required(ds, "SOPInstanceUID")
        sop_class = _required(ds, "SOPClassUID")
        if sop_uid != str(request.AffectedSOPInstanceUID) or sop_class != str(
            request.AffectedSOPClassUID
        ):
            raise _Refused(
                StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "SOP Class/Instance UID in the data set differ from the C-STORE request",
            )
        study_uid = _required(ds, "StudyInstanceUID")
        series_uid = _required(ds, "SeriesInstanceUID")
        problem = truncation(data, str(event.context.transfer_syntax))
        if problem:
            raise _Refused(StoreStatus.CANNOT_UNDERSTAND, problem)
        try:
            path, digest = self._spool.store(study_uid, series_uid, sop_uid, data)
        except StorageError as exc:
            raise _Refused(StoreStatus.OUT_OF_RESOURCES, str(exc)) from exc
        received = ReceivedInstance(
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            modality=_text(ds, "Modality", 16),
            body_part_examined=_text(ds, "BodyPartExamined"),
            series_description=_text(ds, "SeriesDescription"),
            study_description=_text(ds, "StudyDescription"),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            calling_ae_title=calling,
            source="dimse",
            size_bytes=len(data),
            sha256=digest,
            path=str(path),
            sender=self._config.senders.get((calling or "").strip().upper()),
        )
        try:
            self._store.record_instance(received)
        except Exception as exc:  # the database is down: the sender must retry later
            logger.error("cannot record instance in the audit database: %s", type(exc).__name__)
            raise _Refused(StoreStatus.OUT_OF_RESOURCES, "audit database unavailable") from exc
        return received

    def _audit_refusal(self, refused: _Refused, calling: str | None, request: Any) -> None:
        try:
            self._store.record_rejection(
                reason=refused.reason,
                dimse_status=int(refused.status),
                calling_ae_title=calling,
                source="dimse",
                sop_instance_uid=_short(request.AffectedSOPInstanceUID),
                sop_class_uid=_short(request.AffectedSOPClassUID),
            )
        except Exception as exc:  # recording must never stop the SCP answering
            logger.error("cannot record a refused instance: %s", type(exc).__name__)


def _calling_ae(event: Any) -> str | None:
    try:
        return str(event.assoc.requestor.ae_title).strip() or None
    except AttributeError:
        return None


def _short(value: Any) -> str | None:
    return str(value)[:64] if value else None


def _parse_header(data: bytes) -> Dataset:
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
        ds.get("SOPInstanceUID")  # force parsing of the leading elements
        return ds
    except Exception as exc:  # pydicom raises many types on garbage
        raise _Refused(
            StoreStatus.CANNOT_UNDERSTAND, f"data set cannot be parsed ({type(exc).__name__})"
        ) from exc


def _required(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception as exc:
        raise _Refused(StoreStatus.CANNOT_UNDERSTAND, f"{keyword} cannot be decoded") from exc
    if not value:
        raise _Refused(StoreStatus.CANNOT_UNDERSTAND, f"{keyword} is missing")
    text = str(value).strip("\x00 ")
    if len(text) > 64:
        raise _Refused(StoreStatus.CANNOT_UNDERSTAND, f"{keyword} is longer than 64 characters")
    return text


def decodable_transfer_syntaxes() -> list[str]:
    """Transfer syntaxes the node accepts: those whose pixel data it can decode.

    Uncompressed syntaxes always; compressed ones (JPEG, JPEG-LS, JPEG 2000,
    RLE, ...) when a pydicom decoder plugin for them is installed, so a
    pipeline never receives pixels it cannot read.

    Order matters: pynetdicom accepts, within one proposed presentation
    context, the first of *these* that the sender offered. Lossless
    compressed syntaxes come first, so a sender that offers its native
    lossless syntax next to an uncompressed one sends the file as it holds it
    (dcmtk cannot transcode JPEG 2000, for example); then the uncompressed
    syntaxes (Explicit VR Little Endian first); lossy syntaxes last, so the
    node never asks a sender to compress lossily.
    """
    lossless: list[str] = []
    plain: list[str] = []
    lossy: list[str] = []
    for ts in ALL_TRANSFER_SYNTAXES:
        uid = UID(ts)
        if not uid.is_compressed:
            plain.append(ts)
            continue
        try:
            available = get_decoder(uid).is_available
        except NotImplementedError:
            continue
        if available:
            (lossless if ts in LOSSLESS_COMPRESSED else lossy).append(ts)
    plain.sort(key=lambda ts: ts != "1.2.840.10008.1.2.1")
    return lossless + plain + lossy
