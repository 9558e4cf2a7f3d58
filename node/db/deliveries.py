"""The delivery store: deliveries due, objects accepted, attempts recorded, jobs settled."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db.base import StoreBase
from node.db.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Event,
    Job,
    JobState,
    Output,
    utcnow,
)

logger = logging.getLogger(__name__)


class DeliveryStore(StoreBase):
    """What egress reads and records: due deliveries, every attempt of every object."""

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
            settle_job(s, job)
            return delivery.state


def backoff(attempt: int, initial: float, maximum: float) -> timedelta:
    """Exponential backoff for delivery ``attempt`` (1-based)."""
    return timedelta(seconds=min(maximum, initial * 2 ** max(0, attempt - 1)))


def settle_job(s: Session, job: Job) -> None:
    """A job is delivered when every delivery succeeded; delivery-failed once none is pending."""
    states = list(s.scalars(select(Delivery.state).where(Delivery.job_id == job.id)))
    if states and all(st is DeliveryState.SUCCEEDED for st in states):
        job.state = JobState.DELIVERED
        job.delivered_at = utcnow()
    elif any(st is DeliveryState.FAILED for st in states) and DeliveryState.PENDING not in states:
        job.state = JobState.DELIVERY_FAILED
