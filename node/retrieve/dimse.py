"""DIMSE retrieval from a configured source: C-FIND, C-GET (one association) and C-MOVE.

Retrieved instances land in the same spool and audit database as pushed
ones (:class:`SpoolWriter`), recorded with their source.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from node.config import DimseSource
from node.db.ingest import IngestStore, ReceivedInstance
from node.dimse import StoreStatus, identify, is_success, quiet_pynetdicom, set_nodelay
from node.errors import AinodeError, StorageError
from node.spool import Spool

logger = logging.getLogger(__name__)


class RetrieveError(AinodeError):
    """A study could not be retrieved or counted at its source."""


def _dimse_ae(calling: str, timeout: float) -> AE:
    quiet_pynetdicom()
    ae = AE(ae_title=calling)
    identify(ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    return ae


def _associate(ae: AE, source: DimseSource, **kwargs: Any) -> Any:
    assoc = ae.associate(
        source.host,
        source.port,
        ae_title=source.ae_title,
        evt_handlers=[
            (evt.EVT_CONN_OPEN, lambda event: set_nodelay(event.assoc)),
            *kwargs.pop("evt_handlers", []),
        ],
        **kwargs,
    )
    if not assoc.is_established:
        raise RetrieveError(f"cannot associate with {source.ae_title}@{source.host}:{source.port}")
    return assoc


def cfind(source: DimseSource, calling: str, query: Dataset, timeout: float) -> list[Dataset]:
    ae = _dimse_ae(source.calling_ae_title or calling, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = _associate(ae, source)
    found = []
    try:
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if status is None or "Status" not in status:
                raise RetrieveError("C-FIND: no response (association dropped or timed out)")
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
            elif not is_success(int(status.Status)):
                raise RetrieveError(f"C-FIND failed with status 0x{int(status.Status):04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return found


# -- retrieval -------------------------------------------------------------------------


class SpoolWriter:
    """Writes instances received during a C-GET, exactly as the Storage SCP does.

    ``source`` is what the audit records as the instances' origin (``c-get``,
    or ``prior`` for a prior study fetched for comparison).
    """

    def __init__(
        self, spool: Spool, store: IngestStore, calling: str, source: str = "c-get"
    ) -> None:
        self._spool, self._store, self._calling, self._source = spool, store, calling, source
        self.stored = 0

    def handle(self, event: Any) -> int:
        data = event.encoded_dataset(include_meta=True)
        try:
            ds = dcmread(BytesIO(data), stop_before_pixels=True)
            study, series, sop = (
                str(ds.StudyInstanceUID),
                str(ds.SeriesInstanceUID),
                str(ds.SOPInstanceUID),
            )
            path, digest = self._spool.store(study, series, sop, data)
        except StorageError as exc:
            logger.error("C-GET: cannot store an instance: %s", exc)
            return int(StoreStatus.OUT_OF_RESOURCES)
        except Exception as exc:  # pydicom raises many types on garbage
            logger.error("C-GET: undecodable instance (%s)", type(exc).__name__)
            return int(StoreStatus.CANNOT_UNDERSTAND)
        self._store.record_instance(
            ReceivedInstance(
                sop_instance_uid=sop,
                sop_class_uid=str(ds.SOPClassUID),
                study_instance_uid=study,
                series_instance_uid=series,
                modality=_opt(ds, "Modality", 16),
                body_part_examined=_opt(ds, "BodyPartExamined"),
                series_description=_opt(ds, "SeriesDescription"),
                study_description=_opt(ds, "StudyDescription"),
                transfer_syntax_uid=str(event.context.transfer_syntax),
                calling_ae_title=self._calling[:16],
                source=self._source,
                size_bytes=len(data),
                sha256=digest,
                path=str(path),
            )
        )
        self.stored += 1
        return int(StoreStatus.SUCCESS)


def _opt(ds: Dataset, keyword: str, limit: int = 64) -> str | None:
    value = ds.get(keyword)
    return str(value)[:limit] if value not in (None, "") else None


def study_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", study_uid
    return ds


def _check_sub_operations(responses: Any, what: str) -> int:
    completed, failed, last = 0, 0, None
    for status, _identifier_ds in responses:
        if status is None or "Status" not in status:
            raise RetrieveError(f"{what}: no response (association dropped or timed out)")
        last = int(status.Status)
        completed = int(status.get("NumberOfCompletedSuboperations", completed) or completed)
        failed = int(status.get("NumberOfFailedSuboperations", failed) or failed)
    if last is None or not (is_success(last) or last in (0xFF00,)):
        raise RetrieveError(
            f"{what} ended with status 0x{(last or 0):04X} ({failed} sub-operations failed)"
        )
    return completed


def cget(
    source: DimseSource,
    identifier: Dataset,
    calling: str,
    spool: Spool,
    store: IngestStore,
    audit_source: str = "c-get",
) -> int:
    """C-GET what ``identifier`` names on one association (PS3.4 C.4.3).

    Returns the number of instances stored. ``audit_source`` is recorded as
    the instances' origin (``c-get``, or ``prior``).
    """
    ae = _dimse_ae(source.calling_ae_title or calling, source.timeout_seconds)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for cx in StoragePresentationContexts[:127]:
        if cx.abstract_syntax is None:  # never on pynetdicom's own contexts
            continue
        ae.add_requested_context(cx.abstract_syntax)
        roles.append(build_role(cx.abstract_syntax, scp_role=True))
    writer = SpoolWriter(spool, store, source.ae_title, source=audit_source)
    assoc = _associate(ae, source, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, writer.handle)])
    try:
        _check_sub_operations(
            assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet), "C-GET"
        )
    finally:
        if assoc.is_established:
            assoc.release()
    return writer.stored


def cmove(source: DimseSource, identifier: Dataset, calling: str, move_destination: str) -> int:
    """C-MOVE what ``identifier`` names to ``move_destination`` (PS3.4 C.4.2).

    Returns the number of completed sub-operations.
    """
    ae = _dimse_ae(source.calling_ae_title or calling, source.timeout_seconds)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = _associate(ae, source)
    try:
        return _check_sub_operations(
            assoc.send_c_move(
                identifier, move_destination, StudyRootQueryRetrieveInformationModelMove
            ),
            "C-MOVE",
        )
    finally:
        if assoc.is_established:
            assoc.release()
