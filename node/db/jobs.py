"""The job store: jobs as planned, claimed by the runner, finished or failed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from node.db.base import StoreBase
from node.db.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Event,
    Job,
    JobInput,
    JobState,
    Output,
    utcnow,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedJob:
    """A job the assembler and router decided on, before it is persisted."""

    study_instance_uid: str
    series_instance_uid: str
    modality: str | None
    route_name: str
    pipeline_name: str
    pipeline_version: str | None
    model_checksum: str | None
    destinations: tuple[str, ...]
    result_uids: dict[str, dict[str, str]]
    inputs: tuple[tuple[int, str, str], ...]  # (instance id, SOP Instance UID, path)
    #: The job's result plan in its JSON form (``ResultPlan.as_json``).
    plan: dict[str, Any]
    #: ``late_series: rerun``: this job replaces earlier jobs of the same route, series
    #: and pipeline (they are marked superseded; its results withdraw theirs).
    replaces_earlier: bool = False


@dataclass(frozen=True)
class WrittenOutput:
    """A result object a worker wrote to disk."""

    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    path: str
    size_bytes: int
    sha256: str
    #: The destination profile it was written for; ``None``: for every destination.
    variant: str | None = None


def add_job(s: Session, planned: PlannedJob) -> Job:
    """Add a planned job (queued) and its inputs to session ``s``."""
    job = Job(
        study_instance_uid=planned.study_instance_uid,
        series_instance_uid=planned.series_instance_uid,
        modality=planned.modality,
        route_name=planned.route_name,
        pipeline_name=planned.pipeline_name,
        pipeline_version=planned.pipeline_version,
        model_checksum=planned.model_checksum,
        state=JobState.QUEUED,
        result_uids=planned.result_uids,
        plan=planned.plan,
        destinations={"names": list(planned.destinations)},
    )
    job.inputs = [
        JobInput(instance_id=iid, sop_instance_uid=sop, path=path)
        for iid, sop, path in planned.inputs
    ]
    s.add(job)
    return job


class JobStore(StoreBase):
    """What the runner and the worker wiring record: claims, outcomes, re-queues."""

    def withdrawals(self, job_id: int) -> dict[str, list[Output]]:
        """Per destination, the objects ``job_id``'s rejection notes must withdraw there.

        The result objects of the jobs it superseded that the destination
        accepted, less those a rejection note the destination accepted
        already withdrew (listed in that job's summary under ``withdrawn``).
        Rejection notes themselves are never withdrawn.
        """
        with self._sessions() as s:
            jobs = list(s.scalars(select(Job).where(Job.superseded_by_job_id == job_id)))
            if not jobs:
                return {}
            ids = [j.id for j in jobs]
            accepted = s.execute(
                select(Delivery.destination, Output)
                .join(DeliveryAttempt, DeliveryAttempt.delivery_id == Delivery.id)
                .join(Output, Output.id == DeliveryAttempt.output_id)
                .where(Delivery.job_id.in_(ids), DeliveryAttempt.succeeded.is_(True))
                .order_by(Output.id)
            ).all()
            done: dict[str, set[str]] = {}
            for destination, out in accepted:
                if out.kind == "REJECT":
                    owner = next(j for j in jobs if j.id == out.job_id)
                    listed = ((owner.summary or {}).get("withdrawn") or {}).get(destination, [])
                    done.setdefault(destination, set()).update(listed)
            found: dict[str, dict[int, Output]] = {}
            for destination, out in accepted:
                if out.kind != "REJECT" and out.sop_instance_uid not in done.get(
                    destination, set()
                ):
                    found.setdefault(destination, {})[out.id] = out
            return {d: list(outs.values()) for d, outs in found.items()}

    def requeue_interrupted(self) -> list[int]:
        """Put jobs left running by a dead node back in the queue; return their ids."""
        with self._sessions.begin() as s:
            superseded = list(
                s.scalars(
                    select(Job.id).where(
                        Job.state == JobState.RUNNING, Job.superseded_by_job_id.is_not(None)
                    )
                )
            )
            if superseded:  # replaced while running: no point finishing them
                s.execute(
                    update(Job)
                    .where(Job.id.in_(superseded))
                    .values(
                        state=JobState.CANCELLED,
                        finished_at=utcnow(),
                        error="superseded while running; not run again after the restart",
                    )
                )
            ids = list(s.scalars(select(Job.id).where(Job.state == JobState.RUNNING)))
            if ids:
                s.execute(
                    update(Job)
                    .where(Job.id.in_(ids))
                    .values(state=JobState.QUEUED, started_at=None)
                )
                for job_id in ids:
                    s.add(
                        Event(
                            kind="job_requeued",
                            job_id=job_id,
                            detail="node restarted while the job was running",
                        )
                    )
            return ids

    def requeue_job(self, job_id: int, reason: str) -> None:
        """Put one interrupted job back in the queue."""
        with self._sessions.begin() as s:
            job = s.get_one(Job, job_id)
            job.state = JobState.QUEUED
            job.started_at = None
            s.add(
                Event(
                    kind="job_requeued",
                    job_id=job_id,
                    study_instance_uid=job.study_instance_uid,
                    detail=reason,
                )
            )

    def claim_next_job(self) -> Job | None:
        """Move the oldest queued job to running and return it (with its inputs)."""
        with self._sessions.begin() as s:
            query = (
                select(Job)
                .where(Job.state == JobState.QUEUED)
                .order_by(Job.id)
                .limit(1)
                .options(selectinload(Job.inputs))
            )
            if self._pg:
                query = query.with_for_update(skip_locked=True)
            job = s.scalar(query)
            if job is None:
                return None
            job.state = JobState.RUNNING
            job.attempts += 1
            job.started_at = utcnow()
            job.error = None
            s.add(
                Event(
                    kind="job_started",
                    job_id=job.id,
                    study_instance_uid=job.study_instance_uid,
                    detail=f"attempt {job.attempts}",
                )
            )
            return job

    def queued_count(self) -> int:
        with self._sessions() as s:
            return int(s.scalar(select(func.count()).where(Job.state == JobState.QUEUED)) or 0)

    def finish_job(
        self,
        job_id: int,
        outputs: Sequence[WrittenOutput],
        summary: dict[str, Any],
        pipeline_version: str | None,
    ) -> None:
        """Record a job's result objects and queue their deliveries."""
        now = utcnow()
        with self._sessions.begin() as s:
            job = s.get_one(Job, job_id)
            job.state = JobState.SUCCEEDED
            job.finished_at = now
            job.summary = summary
            job.pipeline_version = pipeline_version or job.pipeline_version
            known = {o.sop_instance_uid for o in job.outputs}
            for out in outputs:
                if out.sop_instance_uid not in known:
                    job.outputs.append(Output(**out.__dict__))
            s.add(
                Event(
                    kind="job_succeeded",
                    job_id=job_id,
                    study_instance_uid=job.study_instance_uid,
                    detail=f"{len(outputs)} result objects: "
                    + ", ".join(o.kind for o in outputs)
                    + (
                        f"; not delivered: superseded by job {job.superseded_by_job_id}"
                        if job.superseded_by_job_id
                        else ""
                    ),
                )
            )
            names = job.destinations.get("names", [])
            if not outputs or not names or job.superseded_by_job_id is not None:
                return
            existing = {
                d.destination for d in s.scalars(select(Delivery).where(Delivery.job_id == job_id))
            }
            for name in names:
                if name not in existing:
                    s.add(
                        Delivery(
                            job_id=job_id,
                            destination=name,
                            state=DeliveryState.PENDING,
                            next_attempt_at=now,
                        )
                    )

    def fail_job(self, job_id: int, error: str) -> None:
        """Mark a job failed with a reason an administrator can act on."""
        with self._sessions.begin() as s:
            job = s.get_one(Job, job_id)
            job.state = JobState.FAILED
            job.finished_at = utcnow()
            job.error = error
            s.add(
                Event(
                    kind="job_failed",
                    job_id=job_id,
                    study_instance_uid=job.study_instance_uid,
                    detail=error,
                )
            )

    def job_row(self, job_id: int) -> Job | None:
        """One job's row, without its relations."""
        with self._sessions() as s:
            return s.get(Job, job_id)
