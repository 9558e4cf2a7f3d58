"""Pull mode: retrieve a study from a configured source, then queue its jobs (inference requests).

A source is a DIMSE PACS (C-GET on one association, or C-MOVE to this node's
own Storage SCP) or a DICOMweb service (WADO-RS Retrieve Study). Retrieved
instances land in the same spool and audit database as pushed ones; while a
request for a study is queued or retrieving, the assembler leaves that study
alone, and once retrieval ends the request's jobs are queued with the
instances of the study as inputs.

"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import httpx

from node.config import RetrievalSettings, Source
from node.db.actions import JobActions
from node.db.deliveries import backoff
from node.db.jobs import PlannedJob
from node.db.models import InferenceRequest, Instance, utcnow
from node.db.store import AuditStore
from node.ingress.stow import StowIngress
from node.retrieve.dicomweb import retrieve_wado
from node.retrieve.dimse import RetrieveError, cget, cmove, study_identifier
from node.spool import Spool

logger = logging.getLogger(__name__)


class Retriever:
    """Runs inference requests: retrieve, then queue jobs (run periodically by the scheduler).

    Parameters
    ----------
    store, actions : AuditStore, JobActions
        The audit database.
    spool, stow : Spool, StowIngress
        Where retrieved instances go (C-GET writes to the spool; WADO-RS
        parts go through STOW ingress).
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
        """Retry with backoff, up to ``max_attempts``.

        The PACS may be down, or not hold the study yet.
        """
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
            return cmove(source.dimse, study_identifier(study), self._calling, self._calling)
        return cget(source.dimse, study_identifier(study), self._calling, self._spool, self._store)
