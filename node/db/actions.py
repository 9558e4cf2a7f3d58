"""Operator actions on jobs (re-run, re-send, cancel), each audited."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import selectinload

from node.db.models import (
    Delivery,
    DeliveryState,
    Event,
    Job,
    JobInput,
    JobState,
    utcnow,
)
from node.db.requests import RequestActions, RequestView, request_json
from node.db.store import AuditStore

__all__ = ["ActionRefused", "JobActions", "RequestView", "request_json"]

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


class JobActions(RequestActions):
    """Re-run, re-send and cancel jobs (and, as :class:`RequestActions`, inference requests).

    Parameters
    ----------
    store : AuditStore
        The audit store.
    replan : callable
        ``job -> (new result UIDs, new result plan as JSON)`` for a re-run
        (:meth:`node.study.planning.JobPlanner.replan`).
    """

    def __init__(
        self,
        store: AuditStore,
        replan: Callable[[Job], tuple[dict[str, dict[str, str]], dict[str, Any]]],
    ) -> None:
        super().__init__(store)
        self._replan = replan

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
            seed, plan = self._replan(job)
            again = Job(
                study_instance_uid=job.study_instance_uid,
                series_instance_uid=job.series_instance_uid,
                modality=job.modality,
                route_name=job.route_name,
                pipeline_name=job.pipeline_name,
                pipeline_version=job.pipeline_version,
                model_checksum=job.model_checksum,
                state=JobState.QUEUED,
                result_uids=seed,
                plan=plan,
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
        """Deliver a job's results again to ``destinations`` (default: its own).

        Returns the names of the destinations.
        """
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
            result = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.QUEUED)
                .values(
                    state=JobState.CANCELLED,
                    finished_at=utcnow(),
                    error="cancelled through the API",
                )
            )
            changed = cast("CursorResult[Any]", result).rowcount  # an UPDATE gives a cursor
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
