"""Pull mode: retrieve a study from a configured source, then queue its jobs (inference requests).

A source is a DIMSE PACS (C-GET on one association, or C-MOVE to this node's
own Storage SCP) or a DICOMweb service (WADO-RS Retrieve Study). Retrieved
instances land in the same spool and audit database as pushed ones; while a
request for a study is queued or retrieving, the assembler leaves that study
alone, and once retrieval ends the request's jobs are queued with the
instances of the study as inputs.

The same sources answer the completeness question (:func:`query_counts`):
how many instances does the study, and each series, hold at the source
(C-FIND or QIDO-RS NumberOfStudyRelatedInstances /
NumberOfSeriesRelatedInstances, PS3.4 C.3.4 and PS3.18 10.6.3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import httpx
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from node.config import DicomwebEndpoint, DimseSource, RetrievalSettings, Route, Source
from node.db.actions import JobActions
from node.db.models import InferenceRequest, Instance, utcnow
from node.db.store import AuditStore, PlannedJob, ReceivedInstance, backoff
from node.dicomweb_multipart import ContentType, MultipartError, PartSpooler
from node.dimse import StoreStatus, identify, is_success, quiet_pynetdicom, set_nodelay
from node.errors import AinodeError, StorageError
from node.ingress_dicomweb import StowIngress
from node.router import route
from node.storage import Spool

logger = logging.getLogger(__name__)

#: Modalities of objects that are results or documents, not images to analyse.
NON_IMAGE_MODALITIES = frozenset({"SR", "SEG", "KO", "PR", "REG", "RTSTRUCT", "DOC", "OT"})


class RetrieveError(AinodeError):
    """A study could not be retrieved or counted at its source."""


# -- counting (completeness) ----------------------------------------------------------


@dataclass(frozen=True)
class StudyCounts:
    """How many instances a source holds for a study and for each of its series."""

    study: int | None
    series: dict[str, int]


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


def _cfind(source: DimseSource, calling: str, query: Dataset, timeout: float) -> list[Dataset]:
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


def query_counts(source: Source, study_uid: str, calling: str, timeout: float) -> StudyCounts:
    """Ask ``source`` how many instances the study and each series hold."""
    if source.dimse is not None:
        study_q = Dataset()
        study_q.QueryRetrieveLevel, study_q.StudyInstanceUID = "STUDY", study_uid
        study_q.NumberOfStudyRelatedInstances = None
        studies = _cfind(source.dimse, calling, study_q, timeout)
        series_q = Dataset()
        series_q.QueryRetrieveLevel, series_q.StudyInstanceUID = "SERIES", study_uid
        series_q.SeriesInstanceUID, series_q.NumberOfSeriesRelatedInstances = "", None
        series = _cfind(source.dimse, calling, series_q, timeout)
        rows = [
            (str(s.get("SeriesInstanceUID", "")), s.get("NumberOfSeriesRelatedInstances"))
            for s in series
        ]
        total = studies[0].get("NumberOfStudyRelatedInstances") if studies else None
    else:
        if source.dicomweb is None:
            raise RetrieveError("source has neither dimse nor dicomweb")
        with _http(source.dicomweb) as client:
            total = _qido_count(
                client,
                f"{source.dicomweb.url}/studies",
                {"StudyInstanceUID": study_uid, "includefield": "00201208"},
                "00201208",
            )
            response = client.get(
                f"{source.dicomweb.url}/studies/{study_uid}/series",
                params={"includefield": "00201209"},
                headers={"Accept": "application/dicom+json"},
            )
            _raise_for(response)
            rows = [
                (_json_first(s, "0020000E"), _json_first(s, "00201209"))
                for s in (response.json() if response.content else [])
            ]
    return StudyCounts(
        int(total) if total not in (None, "") else None,
        {uid: int(n) for uid, n in rows if uid and n not in (None, "")},
    )


def _http(endpoint: DicomwebEndpoint) -> httpx.Client:
    headers, auth = {}, None
    if endpoint.token is not None:
        headers["Authorization"] = f"Bearer {endpoint.token.get_secret_value()}"
    elif endpoint.username is not None and endpoint.password is not None:
        auth = httpx.BasicAuth(endpoint.username, endpoint.password.get_secret_value())
    return httpx.Client(headers=headers, auth=auth, timeout=endpoint.timeout_seconds)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise RetrieveError(
            f"{response.request.method} {response.request.url.path}: "
            f"HTTP {response.status_code} {response.text[:200]}"
        )


def _json_first(item: Mapping[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or [None]
    return values[0]


def _qido_count(client: httpx.Client, url: str, params: dict[str, str], tag: str) -> Any:
    response = client.get(url, params=params, headers={"Accept": "application/dicom+json"})
    _raise_for(response)
    found = response.json() if response.content else []
    return _json_first(found[0], tag) if found else None


# -- retrieval -------------------------------------------------------------------------


class SpoolWriter:
    """Writes instances received during a C-GET, exactly as the Storage SCP does.

    ``source`` is what the audit records as the instances' origin (``c-get``,
    or ``prior`` for a prior study fetched for comparison).
    """

    def __init__(
        self, spool: Spool, store: AuditStore, calling: str, source: str = "c-get"
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


def _identifier(study_uid: str) -> Dataset:
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
    store: AuditStore,
    audit_source: str = "c-get",
) -> int:
    """C-GET what ``identifier`` names on one association (PS3.4 C.4.3); return the instances stored.

    ``audit_source`` is recorded as the instances' origin (``c-get``, or ``prior``).
    """
    ae = _dimse_ae(source.calling_ae_title or calling, source.timeout_seconds)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for cx in StoragePresentationContexts[:127]:
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
    """C-MOVE what ``identifier`` names to ``move_destination`` (PS3.4 C.4.2); return the completed sub-operations."""
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


def retrieve_wado(
    endpoint: DicomwebEndpoint, study_uid: str, stow: StowIngress, max_bytes: int
) -> int:
    """WADO-RS Retrieve Study (PS3.18 10.4), streamed to part files and stored like STOW-RS parts."""
    url = f"{endpoint.url}/studies/{study_uid}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    with (
        _http(endpoint) as client,
        client.stream("GET", url, headers={"Accept": accept}) as response,
    ):
        if response.status_code >= 400:
            response.read()
            _raise_for(response)
        content_type = ContentType.parse(response.headers.get("content-type"))
        try:
            spooler = PartSpooler(
                content_type.params.get("boundary", ""), stow.part_directory, max_bytes
            )
        except MultipartError as exc:
            raise RetrieveError(f"WADO-RS {url}: {exc}") from exc
        try:
            for chunk in response.iter_bytes():
                spooler.feed(chunk)
            outcome = stow.ingest(spooler.finish(), study_uid, client=endpoint.url)
        except MultipartError as exc:
            raise RetrieveError(f"WADO-RS {url}: {exc}") from exc
        finally:
            spooler.cleanup()
    if outcome.failed:
        logger.warning("WADO-RS %s: %d instances could not be stored", url, len(outcome.failed))
    return len(outcome.stored)


# -- the stage ------------------------------------------------------------------------


class Retriever:
    """Runs inference requests: retrieve, then queue jobs (run periodically by the scheduler).

    Parameters
    ----------
    store, actions : AuditStore, JobActions
        The audit database.
    spool, stow : Spool, StowIngress
        Where retrieved instances go (C-GET writes to the spool; WADO-RS parts go through STOW ingress).
    sources : mapping
        Configured sources by name.
    calling_ae_title : str
        This node's AE title (calling AE, and C-MOVE destination).
    plan : callable
        ``(request, series -> instances) -> planned jobs``.
    """

    def __init__(
        self,
        store: AuditStore,
        actions: JobActions,
        spool: Spool,
        stow: StowIngress,
        sources: Mapping[str, Source],
        calling_ae_title: str,
        plan: Callable[[InferenceRequest, dict[str, list[Instance]]], list[PlannedJob]],
        max_bytes: int,
        on_jobs: Callable[[list[int]], None] | None = None,
        policy: RetrievalSettings | None = None,
    ) -> None:
        self._store, self._actions, self._spool, self._stow = store, actions, spool, stow
        self._policy = policy or RetrievalSettings()
        self._sources = dict(sources)
        self._calling = calling_ae_title
        self._plan = plan
        self._max_bytes = max_bytes
        self._on_jobs = on_jobs

    def tick(self) -> int:
        """Run every due queued request; return how many were handled.

        A request that has used up ``max_attempts`` (its last attempt cut short by a
        stop of the node) is failed rather than claimed.
        """
        handled = 0
        while (request := self._actions.claim_request(self._policy.max_attempts)) is not None:
            handled += 1
            self.handle(request)
        return handled

    def handle(self, request: InferenceRequest) -> None:
        if request.source not in self._sources:  # retrying cannot mend this
            self._actions.fail_request(
                request.id, f"source {request.source!r} is no longer configured"
            )
            return
        try:
            retrieved = self._retrieve(request)
        except (RetrieveError, OSError, httpx.HTTPError, RuntimeError, ValueError) as exc:
            logger.warning(
                "inference request %d: retrieval failed (attempt %d): %s",
                request.id,
                request.attempts,
                exc,
            )
            self._failed(request, f"retrieval from {request.source} failed: {exc}")
            return
        series = self._store.study_series(request.study_instance_uid)
        if not series:  # e.g. a RIS asked before the PACS had archived the study
            self._failed(request, f"{request.source} returned no instances of the study")
            return
        planned = self._plan(request, series)
        ids = [i.id for instances in series.values() for i in instances]
        job_ids = self._actions.start_request_jobs(request.id, ids, planned, retrieved)
        if job_ids and self._on_jobs:
            self._on_jobs(job_ids)

    def _failed(self, request: InferenceRequest, error: str) -> None:
        """Retry with backoff (the PACS may be down, or not hold the study yet), up to ``max_attempts``."""
        policy = self._policy
        if request.attempts >= policy.max_attempts:
            self._actions.fail_request(request.id, f"{error} (after {request.attempts} attempts)")
            return
        delay = backoff(
            request.attempts, policy.backoff_initial_seconds, policy.backoff_max_seconds
        )
        self._actions.retry_request(request.id, error, utcnow() + delay)

    def _retrieve(self, request: InferenceRequest) -> int:
        source = self._sources.get(request.source)
        if source is None:
            raise RetrieveError(f"source {request.source!r} is no longer configured")
        study = request.study_instance_uid
        if source.dicomweb is not None:
            return retrieve_wado(source.dicomweb, study, self._stow, self._max_bytes)
        if source.dimse is None:
            raise RetrieveError("source has neither dimse nor dicomweb")
        if source.dimse.retrieve == "c-move":
            return cmove(source.dimse, _identifier(study), self._calling, self._calling)
        return cget(source.dimse, _identifier(study), self._calling, self._spool, self._store)


def plan_request_jobs(
    request: InferenceRequest,
    series: Mapping[str, Sequence[Instance]],
    routes: Sequence[Route],
    destinations: Sequence[str],
    pipeline_info: Callable[[str], tuple[str | None, str | None]],
    mint: Callable[[], dict[str, dict[str, str]]],
) -> list[PlannedJob]:
    """The jobs of an inference request.

    With named pipelines: each runs on every image series of the study. Without: the
    routes decide, as for a pushed study. Results go to the request's destinations, or
    (when it names none) to the destination named like the source, else to the routes'.
    """
    from node.assembler import series_attributes

    wanted = list(request.pipelines.get("names", []))
    named = [d for d in request.destinations.get("names", []) if d != "*"]
    default = [request.source] if request.source in destinations else None
    planned = []
    for series_uid, instances in series.items():
        attrs = series_attributes(list(instances))
        if wanted:
            if (attrs.modality or "").upper() in NON_IMAGE_MODALITIES:
                continue
            pairs = [(None, name, ()) for name in wanted]
        else:
            pairs = [(d.route_name, d.pipeline_name, d.send_to) for d in route(attrs, routes)]
        for route_name, pipeline, send_to in pairs:
            version, checksum = pipeline_info(pipeline)
            send = tuple(named or default or send_to)
            planned.append(
                PlannedJob(
                    study_instance_uid=request.study_instance_uid,
                    series_instance_uid=series_uid,
                    modality=attrs.modality,
                    route_name=route_name or f"request-{request.id}",
                    pipeline_name=pipeline,
                    pipeline_version=version,
                    model_checksum=checksum,
                    destinations=send,
                    result_uids=mint(),
                    inputs=tuple((i.id, i.sop_instance_uid or "", i.path or "") for i in instances),
                )
            )
    return planned
