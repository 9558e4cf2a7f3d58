"""Operator actions on jobs (re-run, re-send, cancel) and inference requests, each audited."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from node.db.models import (
    Delivery,
    DeliveryState,
    Event,
    InferenceRequest,
    Instance,
    Job,
    JobInput,
    JobState,
    RequestState,
    utcnow,
)
from node.db.store import AuditStore, PlannedJob

#: Jobs that are finished one way or another and may be run again.
RERUNNABLE = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.DELIVERED,
        JobState.DELIVERY_FAILED,
        JobState.CANCELLED,
    }
)
#: Jobs that have result objects to send.
RESENDABLE = frozenset({JobState.SUCCEEDED, JobState.DELIVERED, JobState.DELIVERY_FAILED})


class ActionRefused(Exception):
    """The action does not apply to the job in its current state (HTTP 409)."""


@dataclass(frozen=True)
class RequestView:
    """An inference request and the jobs it created."""

    request: InferenceRequest
    jobs: tuple[Job, ...]


class JobActions:
    """Re-run, re-send and cancel jobs; create and follow inference requests.

    Parameters
    ----------
    store : AuditStore
        The audit store.
    mint_result_uids : callable
        New result UIDs for a new job (re-run).
    """

    def __init__(
        self, store: AuditStore, mint_result_uids: Callable[[], dict[str, dict[str, str]]]
    ) -> None:
        self._store = store
        self._mint = mint_result_uids

    def rerun(self, job_id: int, reason: str = "re-run requested through the API") -> int | None:
        """Queue a new job with the same inputs, pipeline and destinations; return its id."""
        with self._store.transaction() as s:
            job = s.scalar(select(Job).where(Job.id == job_id).options(selectinload(Job.inputs)))
            if job is None:
                return None
            if job.state not in RERUNNABLE:
                raise ActionRefused(
                    f"job {job_id} is {job.state.value}; only finished jobs can be re-run"
                )
            again = Job(
                study_instance_uid=job.study_instance_uid,
                series_instance_uid=job.series_instance_uid,
                modality=job.modality,
                route_name=job.route_name,
                pipeline_name=job.pipeline_name,
                pipeline_version=job.pipeline_version,
                model_checksum=job.model_checksum,
                state=JobState.QUEUED,
                result_uids=self._mint(),
                destinations=dict(job.destinations),
                inference_request_id=job.inference_request_id,
            )
            again.inputs = [
                JobInput(
                    instance_id=i.instance_id, sop_instance_uid=i.sop_instance_uid, path=i.path
                )
                for i in job.inputs
            ]
            s.add(again)
            s.flush()
            s.add(
                Event(
                    kind="job_rerun",
                    job_id=job.id,
                    study_instance_uid=job.study_instance_uid,
                    detail=f"{reason}: new job {again.id}",
                )
            )
            s.add(
                Event(
                    kind="job_queued",
                    job_id=again.id,
                    study_instance_uid=job.study_instance_uid,
                    detail=f"re-run of job {job.id}, pipeline {job.pipeline_name}, "
                    f"{len(again.inputs)} instances",
                )
            )
            return again.id

    def resend(self, job_id: int, destinations: Sequence[str]) -> list[str] | None:
        """Deliver a job's results again to ``destinations`` (default: its own); return their names."""
        with self._store.transaction() as s:
            job = s.get(Job, job_id, options=[selectinload(Job.outputs)])
            if job is None:
                return None
            if job.superseded_by_job_id is not None:
                raise ActionRefused(
                    f"job {job_id} was superseded by job {job.superseded_by_job_id}; "
                    "its results were withdrawn"
                )
            if job.state not in RESENDABLE or not job.outputs:
                raise ActionRefused(f"job {job_id} is {job.state.value} and has no results to send")
            names = list(destinations) or list(job.destinations.get("names", []))
            if not names:
                raise ActionRefused(f"job {job_id} has no destinations; name one")
            now = utcnow()
            existing = {
                d.destination: d
                for d in s.scalars(select(Delivery).where(Delivery.job_id == job_id))
            }
            for name in names:
                delivery = existing.get(name)
                if delivery is None:
                    s.add(
                        Delivery(
                            job_id=job_id,
                            destination=name,
                            state=DeliveryState.PENDING,
                            next_attempt_at=now,
                        )
                    )
                else:
                    delivery.state, delivery.attempts = DeliveryState.PENDING, 0
                    delivery.next_attempt_at, delivery.last_error = now, None
            job.state = JobState.SUCCEEDED
            s.add(
                Event(
                    kind="delivery_resend",
                    job_id=job_id,
                    study_instance_uid=job.study_instance_uid,
                    detail="re-send requested through the API to " + ", ".join(names),
                )
            )
            return names

    def cancel(self, job_id: int) -> bool | None:
        """Cancel a queued job (atomically: a job a worker already claimed is not touched)."""
        with self._store.transaction() as s:
            job = s.get(Job, job_id)
            if job is None:
                return None
            changed = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.QUEUED)
                .values(
                    state=JobState.CANCELLED,
                    finished_at=utcnow(),
                    error="cancelled through the API",
                )
            ).rowcount
            if not changed:
                raise ActionRefused(
                    f"job {job_id} is {job.state.value}; only queued jobs can be cancelled"
                )
            s.add(
                Event(
                    kind="job_cancelled",
                    job_id=job_id,
                    study_instance_uid=job.study_instance_uid,
                    detail="cancelled through the API",
                )
            )
            return True

    # -- inference requests ------------------------------------------------------

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
        """Queue again the requests a stop of the node left retrieving (the attempt still counts)."""
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
                job = self._store._add_job(s, planned)
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
                    detail=f"request {request_id}: {retrieved} instances retrieved; {len(created)} jobs",
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
