"""The audit store: every state change the stages make, as short transactions.

Stages never build queries themselves; they call these methods, so the
state machine (instance -> study -> job -> output -> delivery) lives in one
place and every change leaves a row behind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, selectinload

from node.db.engine import session_factory
from node.db.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Event,
    InferenceRequest,
    Instance,
    InstanceStatus,
    Job,
    JobInput,
    JobState,
    Output,
    RequestState,
    Study,
    utcnow,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedInstance:
    """What ingress knows about an instance it has just written to the spool."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str | None
    body_part_examined: str | None
    series_description: str | None
    study_description: str | None
    transfer_syntax_uid: str
    calling_ae_title: str | None
    source: str
    size_bytes: int
    sha256: str
    path: str
    #: The configured source that sent it (by calling AE title or STOW-RS token), if known.
    sender: str | None = None


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


class AuditStore:
    """All reads and writes of the audit database.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The process's single engine (already migrated).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)
        self._pg = engine.dialect.name == "postgresql"

    def session(self) -> Session:
        """A new session (use as a context manager)."""
        return self._sessions()

    def transaction(self) -> Any:
        """A new session inside a transaction (``with store.transaction() as s:``)."""
        return self._sessions.begin()

    # -- ingress -------------------------------------------------------------

    def record_instance(self, received: ReceivedInstance) -> InstanceStatus:
        """Record a stored instance; an identical re-send is a duplicate (not re-analysed)."""
        now = utcnow()
        with self._sessions.begin() as s:
            previous = s.scalar(
                select(Instance.sha256)
                .where(
                    Instance.sop_instance_uid == received.sop_instance_uid,
                    Instance.status == InstanceStatus.STORED,
                )
                .order_by(Instance.id.desc())
                .limit(1)
            )
            status = (
                InstanceStatus.DUPLICATE if previous == received.sha256 else InstanceStatus.STORED
            )
            s.add(
                Instance(
                    **received.__dict__,
                    received_at=now,
                    status=status,
                    dimse_status=0,
                    dispatched=status is InstanceStatus.DUPLICATE,
                )
            )
            self._touch_study(s, received.study_instance_uid, now, status)
        return status

    def _touch_study(
        self, s: Session, study_uid: str, now: datetime, status: InstanceStatus
    ) -> None:
        study = s.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        if study is None:
            s.add(
                Study(
                    study_instance_uid=study_uid,
                    first_received_at=now,
                    last_received_at=now,
                    instance_count=1,
                )
            )
            return
        if status is InstanceStatus.STORED:
            study.last_received_at = now
            study.instance_count += 1
            study.completed_at = None

    def record_rejection(
        self,
        *,
        reason: str,
        dimse_status: int | None,
        calling_ae_title: str | None,
        source: str,
        sop_instance_uid: str | None = None,
        sop_class_uid: str | None = None,
        study_instance_uid: str | None = None,
        size_bytes: int | None = None,
        sender: str | None = None,
    ) -> None:
        """Record an instance the node refused, with the status it answered (and its sender, when known)."""
        with self._sessions.begin() as s:
            s.add(
                Instance(
                    sop_instance_uid=sop_instance_uid,
                    sop_class_uid=sop_class_uid,
                    study_instance_uid=study_instance_uid,
                    calling_ae_title=calling_ae_title,
                    source=source,
                    sender=sender,
                    size_bytes=size_bytes,
                    status=InstanceStatus.REJECTED,
                    dimse_status=dimse_status,
                    error=reason,
                    dispatched=True,
                )
            )

    def record_event(
        self,
        kind: str,
        detail: str | None = None,
        *,
        study_instance_uid: str | None = None,
        job_id: int | None = None,
        calling_ae_title: str | None = None,
    ) -> None:
        """Append one row to the audit trail."""
        with self._sessions.begin() as s:
            s.add(
                Event(
                    kind=kind,
                    detail=detail,
                    study_instance_uid=study_instance_uid,
                    job_id=job_id,
                    calling_ae_title=calling_ae_title,
                )
            )

    # -- assembly ------------------------------------------------------------

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
            for chunk in _chunks(ids, 500):
                s.execute(update(Instance).where(Instance.id.in_(chunk)).values(dispatched=True))
            s.execute(
                update(Study).where(Study.study_instance_uid == study_uid).values(completed_at=now)
            )
            created = [self._add_job(s, planned) for planned in jobs]
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
            stopped = s.execute(
                update(Delivery)
                .where(Delivery.job_id == old.id, Delivery.state == DeliveryState.PENDING)
                .values(state=DeliveryState.FAILED, next_attempt_at=None, last_error=why)
            ).rowcount
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
                self._settle_job(s, old)

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

    def _add_job(self, s: Session, planned: PlannedJob) -> Job:
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
            destinations={"names": list(planned.destinations)},
        )
        job.inputs = [
            JobInput(instance_id=iid, sop_instance_uid=sop, path=path)
            for iid, sop, path in planned.inputs
        ]
        s.add(job)
        return job

    # -- runner --------------------------------------------------------------

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

    # -- egress --------------------------------------------------------------

    def due_deliveries(self, now: datetime) -> list[int]:
        with self._sessions() as s:
            return list(
                s.scalars(
                    select(Delivery.id)
                    .where(Delivery.state == DeliveryState.PENDING, Delivery.next_attempt_at <= now)
                    .order_by(Delivery.next_attempt_at)
                )
            )

    def load_delivery(self, delivery_id: int) -> tuple[Delivery, list[Output]]:
        with self._sessions() as s:
            delivery = s.get_one(Delivery, delivery_id)
            outputs = list(
                s.scalars(
                    select(Output).where(Output.job_id == delivery.job_id).order_by(Output.id)
                )
            )
            return delivery, outputs

    def job_summary(self, job_id: int) -> dict[str, Any] | None:
        """A job's summary (what the worker reported), or ``None``."""
        with self._sessions() as s:
            return s.scalar(select(Job.summary).where(Job.id == job_id))

    def accepted_outputs(self, delivery_id: int) -> set[int]:
        """Outputs this delivery's destination has already accepted (never sent twice)."""
        with self._sessions() as s:
            return set(
                s.scalars(
                    select(DeliveryAttempt.output_id).where(
                        DeliveryAttempt.delivery_id == delivery_id,
                        DeliveryAttempt.succeeded.is_(True),
                    )
                )
            )

    def record_delivery_attempt(
        self,
        delivery_id: int,
        results: Sequence[tuple[Any, ...]],
        *,
        retry_at: datetime | None,
        give_up: bool,
    ) -> DeliveryState:
        """Record one attempt (one row per output) and move the delivery on.

        ``results`` holds ``(output id, succeeded, DIMSE status, error, started, finished)``,
        optionally followed by the HTTP status (DICOMweb destinations).
        """
        with self._sessions.begin() as s:
            delivery = s.get_one(Delivery, delivery_id, with_for_update=True)
            stopped = (
                delivery.state is not DeliveryState.PENDING
            )  # e.g. its job was superseded meanwhile
            delivery.attempts += 1
            for output_id, ok, status, error, started, finished, *http in results:
                s.add(
                    DeliveryAttempt(
                        delivery_id=delivery_id,
                        output_id=output_id,
                        attempt=delivery.attempts,
                        started_at=started,
                        finished_at=finished,
                        succeeded=ok,
                        dimse_status=status,
                        error=error,
                        http_status=http[0] if http else None,
                    )
                )
            failed = [r for r in results if not r[1]]
            job = s.get_one(Job, delivery.job_id)
            if stopped:  # the attempts are recorded (what was sent was sent); the state stays
                return delivery.state
            if not failed:
                delivery.state = DeliveryState.SUCCEEDED
                delivery.delivered_at = utcnow()
                delivery.last_error = None
                s.add(
                    Event(
                        kind="delivery_succeeded",
                        job_id=job.id,
                        study_instance_uid=job.study_instance_uid,
                        detail=f"{len(results)} objects to {delivery.destination} "
                        f"(attempt {delivery.attempts})",
                    )
                )
            else:
                delivery.last_error = failed[0][3]
                delivery.state = DeliveryState.FAILED if give_up else DeliveryState.PENDING
                delivery.next_attempt_at = None if give_up else retry_at
                what = (
                    "gave up"
                    if give_up
                    else f"retry at {retry_at:%H:%M:%S}"
                    if retry_at
                    else "retry"
                )
                s.add(
                    Event(
                        kind="delivery_failed" if give_up else "delivery_retry",
                        job_id=job.id,
                        study_instance_uid=job.study_instance_uid,
                        detail=f"{delivery.destination}: {len(failed)}/{len(results)} failed "
                        f"(attempt {delivery.attempts}, {what}): {failed[0][3]}",
                    )
                )
            s.flush()
            self._settle_job(s, job)
            return delivery.state

    def _settle_job(self, s: Session, job: Job) -> None:
        states = list(s.scalars(select(Delivery.state).where(Delivery.job_id == job.id)))
        if states and all(st is DeliveryState.SUCCEEDED for st in states):
            job.state = JobState.DELIVERED
            job.delivered_at = utcnow()
        elif (
            any(st is DeliveryState.FAILED for st in states) and DeliveryState.PENDING not in states
        ):
            job.state = JobState.DELIVERY_FAILED

    # -- reading -------------------------------------------------------------

    def list_jobs(
        self, limit: int = 50, offset: int = 0, state: JobState | None = None
    ) -> list[Job]:
        with self._sessions() as s:
            query = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
            if state is not None:
                query = query.where(Job.state == state)
            return list(s.scalars(query))

    def get_job(self, job_id: int) -> tuple[Job, list[Delivery], list[DeliveryAttempt]] | None:
        with self._sessions() as s:
            job = s.scalar(
                select(Job)
                .where(Job.id == job_id)
                .options(
                    selectinload(Job.inputs), selectinload(Job.outputs), selectinload(Job.events)
                )
            )
            if job is None:
                return None
            deliveries = list(
                s.scalars(select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.id))
            )
            attempts = list(
                s.scalars(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.delivery_id.in_([d.id for d in deliveries]))
                    .order_by(DeliveryAttempt.id)
                )
            )
            return job, deliveries, attempts

    def counts(self) -> dict[str, int]:
        """Totals for health and metrics: instances by status, jobs by state."""
        with self._sessions() as s:
            out: dict[str, int] = {}
            for status, n in s.execute(
                select(Instance.status, func.count()).group_by(Instance.status)
            ):
                out[f"instances_{status.value}"] = n
            for state, n in s.execute(select(Job.state, func.count()).group_by(Job.state)):
                out[f"jobs_{state.value}"] = n
            return out

    def instances(self, study_uid: str | None = None) -> list[Instance]:
        with self._sessions() as s:
            query = select(Instance).order_by(Instance.id)
            if study_uid is not None:
                query = query.where(Instance.study_instance_uid == study_uid)
            return list(s.scalars(query))

    def events(self, study_uid: str | None = None, kind: str | None = None) -> list[Event]:
        with self._sessions() as s:
            query = select(Event).order_by(Event.id)
            if study_uid is not None:
                query = query.where(Event.study_instance_uid == study_uid)
            if kind is not None:
                query = query.where(Event.kind == kind)
            return list(s.scalars(query))


def backoff(attempt: int, initial: float, maximum: float) -> timedelta:
    """Exponential backoff for delivery ``attempt`` (1-based)."""
    return timedelta(seconds=min(maximum, initial * 2 ** max(0, attempt - 1)))


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
