"""Inference requests (pull mode): created through the API, claimed and run by the retriever.

Each state change is audited; a request that a stop of the node cut short is
queued again, and its attempts count across crashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from node.db.jobs import PlannedJob, add_job
from node.db.models import (
    Event,
    InferenceRequest,
    Instance,
    Job,
    JobState,
    RequestState,
    utcnow,
)
from node.db.store import AuditStore


@dataclass(frozen=True)
class RequestView:
    """An inference request and the jobs it created."""

    request: InferenceRequest
    jobs: tuple[Job, ...]


class RequestActions:
    """Create, claim, retry, fail and follow inference requests.

    Parameters
    ----------
    store : AuditStore
        The audit store.
    """

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    def create_request(
        self, study_uid: str, source: str, pipelines: Sequence[str], destinations: Sequence[str]
    ) -> int:
        with self._store.transaction() as s:
            request = InferenceRequest(
                study_instance_uid=study_uid,
                source=source,
                pipelines={"names": list(pipelines)},
                destinations={"names": list(destinations)},
                state=RequestState.QUEUED,
            )
            s.add(request)
            s.flush()
            s.add(
                Event(
                    kind="inference_requested",
                    study_instance_uid=study_uid,
                    detail=f"request {request.id}: from {source}, pipelines "
                    f"{', '.join(pipelines) or '(by route)'}",
                )
            )
            return request.id

    def claim_request(self, max_attempts: int | None = None) -> InferenceRequest | None:
        """Move the oldest due queued request to retrieving, count the attempt, and return it.

        A due request that has already had ``max_attempts`` attempts (its last one
        was cut short by a stop of the node, or the limit was lowered since) is
        failed instead, so that a crash during retrieval cannot retry it forever.
        """
        now = utcnow()
        with self._store.transaction() as s:
            while True:
                request = s.scalar(
                    select(InferenceRequest)
                    .where(
                        InferenceRequest.state == RequestState.QUEUED,
                        or_(
                            InferenceRequest.next_attempt_at.is_(None),
                            InferenceRequest.next_attempt_at <= now,
                        ),
                    )
                    .order_by(InferenceRequest.id)
                    .limit(1)
                )
                if request is None:
                    return None
                if max_attempts is None or request.attempts < max_attempts:
                    break
                why = (
                    "the node stopped during retrieval"
                    if request.error == _interrupted(request.attempts)
                    else f"retrieval.max_attempts is {max_attempts}"
                )
                attempts = f"{request.attempts} attempt" + ("s" if request.attempts != 1 else "")
                self._fail(s, request, f"gave up after {attempts} ({why})", now)
            request.state, request.updated_at = RequestState.RETRIEVING, now
            request.attempts += 1
            return request

    def retry_request(self, request_id: int, error: str, at: datetime) -> None:
        """Queue a request whose retrieval failed again, from ``at``."""
        with self._store.transaction() as s:
            request = s.get_one(InferenceRequest, request_id)
            request.state, request.next_attempt_at, request.updated_at = (
                RequestState.QUEUED,
                at,
                utcnow(),
            )
            request.error = (
                f"attempt {request.attempts} failed: {error}; retrying at {at:%H:%M:%S} UTC"
            )
            s.add(
                Event(
                    kind="inference_retry",
                    study_instance_uid=request.study_instance_uid,
                    detail=f"request {request_id}: {request.error}",
                )
            )

    def requeue_interrupted_requests(self) -> None:
        """Queue again the requests a stop of the node left retrieving.

        The interrupted attempt still counts.
        """
        with self._store.transaction() as s:
            for request in s.scalars(
                select(InferenceRequest).where(InferenceRequest.state == RequestState.RETRIEVING)
            ):
                request.state, request.error = RequestState.QUEUED, _interrupted(request.attempts)

    def fail_request(self, request_id: int, error: str) -> None:
        with self._store.transaction() as s:
            self._fail(s, s.get_one(InferenceRequest, request_id), error, utcnow())

    @staticmethod
    def _fail(s: Session, request: InferenceRequest, error: str, now: datetime) -> None:
        request.state, request.error, request.updated_at = RequestState.FAILED, error, now
        s.add(
            Event(
                kind="inference_failed",
                study_instance_uid=request.study_instance_uid,
                detail=f"request {request.id}: {error}",
            )
        )

    def start_request_jobs(
        self,
        request_id: int,
        instance_ids: Sequence[int],
        jobs: Sequence[PlannedJob],
        retrieved: int,
    ) -> list[int]:
        """Mark the retrieved instances dispatched and queue the request's jobs."""
        with self._store.transaction() as s:
            request = s.get_one(InferenceRequest, request_id)
            created = []
            for planned in jobs:
                job = add_job(s, planned)
                job.inference_request_id = request_id
                created.append(job)
            for start in range(0, len(instance_ids), 500):
                chunk = list(instance_ids[start : start + 500])
                s.execute(update(Instance).where(Instance.id.in_(chunk)).values(dispatched=True))
            s.flush()
            request.state = RequestState.RUNNING if created else RequestState.FAILED
            request.retrieved_instances, request.updated_at = retrieved, utcnow()
            if not created:
                request.error = (
                    "no series of the study could be analysed by the requested pipelines"
                )
            for job in created:
                s.add(
                    Event(
                        kind="job_queued",
                        job_id=job.id,
                        study_instance_uid=request.study_instance_uid,
                        detail=f"inference request {request_id}, pipeline {job.pipeline_name}, "
                        f"{len(job.inputs)} instances",
                    )
                )
            s.add(
                Event(
                    kind="inference_retrieved",
                    study_instance_uid=request.study_instance_uid,
                    detail=f"request {request_id}: {retrieved} instances retrieved; "
                    f"{len(created)} jobs",
                )
            )
            return [job.id for job in created]

    def get_request(self, request_id: int) -> RequestView | None:
        """A request with its jobs; its state follows its jobs once they exist."""
        with self._store.transaction() as s:
            request = s.get(InferenceRequest, request_id)
            if request is None:
                return None
            jobs = tuple(
                s.scalars(
                    select(Job).where(Job.inference_request_id == request_id).order_by(Job.id)
                )
            )
            settled = _settle(request, jobs)
            if settled is not None and settled is not request.state:
                request.state, request.updated_at = settled, utcnow()
            return RequestView(request, jobs)

    def list_requests(self, limit: int, offset: int) -> tuple[list[InferenceRequest], int]:
        with self._store.session() as s:
            total = s.scalar(select(func.count()).select_from(InferenceRequest)) or 0
            rows = list(
                s.scalars(
                    select(InferenceRequest)
                    .order_by(InferenceRequest.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )
            return rows, int(total)


def _interrupted(attempt: int) -> str:
    return f"attempt {attempt} was interrupted: the node stopped during retrieval"


def _settle(request: InferenceRequest, jobs: Sequence[Job]) -> RequestState | None:
    if request.state is not RequestState.RUNNING or not jobs:
        return None
    done_ok = {JobState.DELIVERED}
    if all(
        j.state in done_ok or (j.state is JobState.SUCCEEDED and not j.destinations.get("names"))
        for j in jobs
    ):
        return RequestState.SUCCEEDED
    if all(
        j.state
        in (
            JobState.FAILED,
            JobState.DELIVERY_FAILED,
            JobState.CANCELLED,
            *done_ok,
            JobState.SUCCEEDED,
        )
        for j in jobs
    ) and any(
        j.state in (JobState.FAILED, JobState.DELIVERY_FAILED, JobState.CANCELLED) for j in jobs
    ):
        return RequestState.FAILED
    return None


def request_json(view: RequestView) -> dict[str, Any]:
    r = view.request
    return {
        "id": r.id,
        "study_instance_uid": r.study_instance_uid,
        "source": r.source,
        "pipelines": r.pipelines.get("names", []),
        "destinations": r.destinations.get("names", []),
        "state": r.state.value,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "retrieved_instances": r.retrieved_instances,
        "error": r.error,
        "attempts": r.attempts,
        "next_attempt_at": r.next_attempt_at,
        "jobs": [
            {
                "id": j.id,
                "state": j.state.value,
                "pipeline": j.pipeline_name,
                "series_instance_uid": j.series_instance_uid,
            }
            for j in view.jobs
        ],
    }
