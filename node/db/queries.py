"""The query store: what people read (API, CLI), never written through."""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from node.db.base import StoreBase
from node.db.models import (
    Delivery,
    DeliveryAttempt,
    Event,
    Instance,
    Job,
    JobState,
)

logger = logging.getLogger(__name__)


class QueryStore(StoreBase):
    """Reads for the API, the CLI and the tests: jobs, instances, events, counts."""

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
