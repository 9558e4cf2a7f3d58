"""The study store: study assembly's reads, and the atomic decision that queues a study's jobs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from node.db.base import StoreBase, chunks
from node.db.deliveries import settle_job
from node.db.jobs import PlannedJob, add_job
from node.db.models import (
    Delivery,
    DeliveryState,
    Event,
    InferenceRequest,
    Instance,
    InstanceStatus,
    Job,
    JobState,
    Output,
    RequestState,
    Study,
    utcnow,
)

logger = logging.getLogger(__name__)


class StudyStore(StoreBase):
    """What study assembly reads and decides: quiet studies, their series, the jobs they become."""

    def stable_studies(self, quiet_since: datetime) -> list[str]:
        """Studies with undispatched instances and no new instance since ``quiet_since``."""
        with self._sessions() as s:
            pending = (
                select(Instance.study_instance_uid)
                .where(Instance.dispatched.is_(False), Instance.status == InstanceStatus.STORED)
                .distinct()
                .subquery()
            )
            retrieving = (
                select(InferenceRequest.id)
                .where(
                    InferenceRequest.study_instance_uid == Study.study_instance_uid,
                    InferenceRequest.state.in_([RequestState.QUEUED, RequestState.RETRIEVING]),
                )
                .exists()
            )
            rows = s.scalars(
                select(Study.study_instance_uid)
                .join(pending, pending.c.study_instance_uid == Study.study_instance_uid)
                .where(Study.last_received_at <= quiet_since, ~retrieving)
                .order_by(Study.last_received_at)
            )
            return list(rows)

    def study_series(self, study_uid: str) -> dict[str, list[Instance]]:
        """Every series of a study with its stored instances (newest copy of each SOP instance)."""
        with self._sessions() as s:
            rows = s.scalars(
                select(Instance)
                .where(
                    Instance.study_instance_uid == study_uid,
                    Instance.status == InstanceStatus.STORED,
                )
                .order_by(Instance.id)
            )
            newest: dict[str, dict[str, Instance]] = {}
            for row in rows:
                newest.setdefault(row.series_instance_uid or "", {})[row.sop_instance_uid or ""] = (
                    row
                )
            return {series: list(by_sop.values()) for series, by_sop in newest.items()}

    def study_row(self, study_uid: str) -> Study | None:
        with self._sessions() as s:
            return s.scalar(select(Study).where(Study.study_instance_uid == study_uid))

    def pending_series(self, study_uid: str) -> dict[str, list[Instance]]:
        """For each series of ``study_uid`` with new content, all its stored instances.

        A series that gained instances after an earlier job is analysed again as
        a whole (the newest copy of each SOP instance), so nothing is dropped.
        """
        with self._sessions() as s:
            changed = set(
                s.scalars(
                    select(Instance.series_instance_uid).where(
                        Instance.study_instance_uid == study_uid,
                        Instance.dispatched.is_(False),
                        Instance.status == InstanceStatus.STORED,
                    )
                )
            )
            rows = s.scalars(
                select(Instance)
                .where(
                    Instance.series_instance_uid.in_(changed),
                    Instance.status == InstanceStatus.STORED,
                )
                .order_by(Instance.id)
            )
            newest: dict[str, dict[str, Instance]] = {}
            for row in rows:
                newest.setdefault(row.series_instance_uid or "", {})[row.sop_instance_uid or ""] = (
                    row
                )
            return {series: list(by_sop.values()) for series, by_sop in newest.items()}

    def study_senders(self, study_uid: str) -> set[str]:
        """Calling AE titles that sent stored instances of a study."""
        with self._sessions() as s:
            return {
                ae
                for ae in s.scalars(
                    select(Instance.calling_ae_title)
                    .where(
                        Instance.study_instance_uid == study_uid,
                        Instance.status == InstanceStatus.STORED,
                        Instance.calling_ae_title.is_not(None),
                    )
                    .distinct()
                )
                if ae
            }

    def study_sender_sources(self, study_uid: str) -> set[str]:
        """Configured source names recorded as senders of stored instances of a study."""
        with self._sessions() as s:
            return {
                name
                for name in s.scalars(
                    select(Instance.sender)
                    .where(
                        Instance.study_instance_uid == study_uid,
                        Instance.status == InstanceStatus.STORED,
                        Instance.sender.is_not(None),
                    )
                    .distinct()
                )
                if name
            }

    def result_series(self, study_uid: str) -> set[str]:
        """Series Instance UIDs of the results this node wrote for a study."""
        with self._sessions() as s:
            return set(
                s.scalars(
                    select(Output.series_instance_uid)
                    .join(Job, Job.id == Output.job_id)
                    .where(Job.study_instance_uid == study_uid)
                )
            )

    def analysed_series(self, study_uid: str) -> set[tuple[str, str]]:
        """``(route, series)`` pairs of a study that already have a job."""
        with self._sessions() as s:
            return {
                (r, se)
                for r, se in s.execute(
                    select(Job.route_name, Job.series_instance_uid).where(
                        Job.study_instance_uid == study_uid
                    )
                )
            }

    def dispatch_study(
        self,
        study_uid: str,
        instance_ids: Iterable[int],
        jobs: Sequence[PlannedJob],
        unrouted: Sequence[str],
        completeness: str | None = None,
    ) -> list[int]:
        """Atomically mark instances dispatched, create their jobs, and audit the decision."""
        now = utcnow()
        ids = list(instance_ids)
        with self._sessions.begin() as s:
            for chunk in chunks(ids, 500):
                s.execute(update(Instance).where(Instance.id.in_(chunk)).values(dispatched=True))
            s.execute(
                update(Study).where(Study.study_instance_uid == study_uid).values(completed_at=now)
            )
            created = [add_job(s, planned) for planned in jobs]
            s.flush()
            for job in created:
                s.add(
                    Event(
                        kind="job_queued",
                        job_id=job.id,
                        study_instance_uid=study_uid,
                        detail=f"route {job.route_name}, pipeline {job.pipeline_name}, "
                        f"{len(job.inputs)} instances",
                    )
                )
            for planned, job in zip(jobs, created, strict=True):
                if planned.replaces_earlier:
                    self._supersede(s, job, now)
            s.add(
                Event(
                    kind="study_complete",
                    study_instance_uid=study_uid,
                    detail=f"{len(ids)} new instances; {len(created)} jobs queued"
                    + (f"; {completeness}" if completeness else ""),
                )
            )
            for series_uid in unrouted:
                s.add(
                    Event(
                        kind="no_route",
                        study_instance_uid=study_uid,
                        detail=f"series {series_uid} matched no route",
                    )
                )
            return [job.id for job in created]

    def _supersede(self, s: Session, job: Job, now: datetime) -> None:
        """Mark the earlier jobs ``job`` replaces; it withdraws whatever of theirs was delivered.

        A queued one is cancelled, a running one will not deliver, pending
        deliveries stop. Jobs an earlier job had superseded pass to ``job``
        (whatever that job did not withdraw yet, ``job`` does).
        """
        earlier = list(
            s.scalars(
                select(Job)
                .where(
                    Job.study_instance_uid == job.study_instance_uid,
                    Job.series_instance_uid == job.series_instance_uid,
                    Job.route_name == job.route_name,
                    Job.pipeline_name == job.pipeline_name,
                    Job.id != job.id,
                    Job.superseded_by_job_id.is_(None),
                )
                .with_for_update()
            )
        )
        for old in earlier:
            old.superseded_by_job_id = job.id
            why = f"superseded by job {job.id} (late_series: rerun)"
            if old.state is JobState.QUEUED:
                old.state, old.finished_at, old.error = JobState.CANCELLED, now, why
            s.execute(
                update(Job)
                .where(Job.superseded_by_job_id == old.id)
                .values(superseded_by_job_id=job.id)
            )
            result = s.execute(
                update(Delivery)
                .where(Delivery.job_id == old.id, Delivery.state == DeliveryState.PENDING)
                .values(state=DeliveryState.FAILED, next_attempt_at=None, last_error=why)
            )
            stopped = cast("CursorResult[Any]", result).rowcount  # an UPDATE gives a cursor
            s.add(
                Event(
                    kind="job_superseded",
                    job_id=old.id,
                    study_instance_uid=job.study_instance_uid,
                    detail=why
                    + (f"; {stopped} pending deliveries stopped" if stopped else "")
                    + "; what it delivered is withdrawn by rejection notes",
                )
            )
            if stopped:
                s.flush()
                settle_job(s, old)
