"""Egress: deliver result objects to DIMSE (C-STORE) and DICOMweb (STOW-RS) destinations.

Each delivery (one job's results to one destination) is attempted when due.
What it sends is read from the job's :class:`~node.study.plan.ResultPlan`:
exactly the objects planned for that destination, less those it already
accepted. DIMSE destinations get them by C-STORE (:mod:`node.egress.dimse`).
Every object's outcome is recorded; failures are retried with exponential
backoff until ``max_attempts``.

A DICOMweb destination gets one STOW-RS request per attempt
(:mod:`node.egress.stow`); its response's ReferencedSOPSequence and
FailedSOPSequence decide, per object, what was stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_sr.kinds import ResultKind
from node.config import Destination, EgressSettings
from node.db.deliveries import DeliveryStore, backoff
from node.db.models import DeliveryState, Output, utcnow
from node.dimse import quiet_pynetdicom
from node.egress.dimse import DimseSender, SendResult
from node.egress.stow import StowSender
from node.study.plan import DEFAULT_VARIANT, ResultPlan

logger = logging.getLogger(__name__)


class Egress:
    """Delivers due deliveries (run periodically by the scheduler).

    Parameters
    ----------
    store : DeliveryStore
        Deliveries and attempts are read from and recorded here.
    destinations : mapping
        Configured destinations by name.
    calling_ae_title : str
        The node's AE title, used as calling AE title.
    policy : EgressSettings
        Retry policy.
    plan_of : callable
        ``job id -> ResultPlan``: what the job wrote for whom.
    on_attempt : callable, optional
        ``(destination, succeeded objects, failed objects)`` for metrics.
    """

    def __init__(
        self,
        store: DeliveryStore,
        destinations: Mapping[str, Destination],
        calling_ae_title: str,
        policy: EgressSettings,
        plan_of: Callable[[int], ResultPlan],
        on_attempt: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self._store = store
        self._destinations = dict(destinations)
        self._calling = calling_ae_title
        self._policy = policy
        self._plan_of = plan_of
        self._on_attempt = on_attempt
        quiet_pynetdicom()

    def tick(self) -> int:
        """Attempt every due delivery once; return how many were attempted."""
        due = self._store.due_deliveries(utcnow())
        for delivery_id in due:
            self.attempt(delivery_id)
        return len(due)

    def attempt(self, delivery_id: int) -> DeliveryState:
        delivery, outputs = self._store.load_delivery(delivery_id)
        if (
            delivery.state is not DeliveryState.PENDING
        ):  # stopped since it was found due (superseded job)
            return delivery.state
        destination = self._destinations.get(delivery.destination)
        attempt_no = delivery.attempts + 1
        if destination is None:
            return self._record(
                delivery_id,
                [
                    SendResult(
                        o.id,
                        False,
                        None,
                        f"destination {delivery.destination!r} is no longer configured",
                        utcnow(),
                        utcnow(),
                    )
                    for o in outputs
                ],
                attempt_no,
            )
        wanted = self._selection(delivery.job_id, delivery.destination, destination)
        if isinstance(wanted, str):
            return self._record(
                delivery_id,
                [
                    SendResult(o.id, False, None, wanted, utcnow(), utcnow(), permanent=True)
                    for o in outputs
                ],
                attempt_no,
                delivery.destination,
            )
        accepted = self._store.accepted_outputs(delivery_id)
        selected = [o for o in outputs if _planned_key(o) in wanted and o.id not in accepted]
        if destination.dicomweb is not None:
            sent = StowSender(destination.dicomweb).send(
                [(o.id, o.path, o.sop_instance_uid) for o in selected]
            )
            results = [
                SendResult(
                    r.output_id,
                    r.succeeded,
                    r.failure_reason,
                    r.error,
                    r.started,
                    r.finished,
                    r.http_status,
                )
                for r in sent
            ]
            return self._record(delivery_id, results, attempt_no, delivery.destination)
        items, results = self._load(selected)
        if items and destination.dimse is not None:
            results += DimseSender(self._calling, destination.dimse).send(items)
        return self._record(delivery_id, results, attempt_no, delivery.destination)

    def _selection(
        self, job_id: int, name: str, destination: Destination
    ) -> frozenset[tuple[str, str | None]] | str:
        """``(kind, variant)`` of the outputs the plan sends ``name``, or why it can send none.

        A destination of the plan gets its planned objects. One named only
        in a re-send gets those of its profile and formats. When its profile
        changed since the job was planned, the objects were shaped for
        another viewer: it needs a re-run, not a silent partial send.
        """
        plan = self._plan_of(job_id)
        planned = plan.variant_of(name)
        profiled = any(k.profiled for k in destination.formats)
        written = sorted(v.key for v in plan.variants)
        reshaped = planned != destination.variant if planned else destination.variant not in written
        if profiled and reshaped:
            return (
                f"the job's results were written for the profiles {written}, not for this "
                f"destination's profile {destination.variant!r} (changed since?): re-run the job"
            )
        return plan.sends(name) if name in plan.destinations else plan.sends_like(destination)

    def _load(
        self, outputs: Sequence[Output]
    ) -> tuple[list[tuple[int, Dataset]], list[SendResult]]:
        items: list[tuple[int, Dataset]] = []
        failed: list[SendResult] = []
        for out in outputs:
            try:
                items.append((out.id, dcmread(out.path)))
            except (OSError, ValueError) as exc:
                failed.append(
                    SendResult(
                        out.id, False, None, f"result file unreadable: {exc}", utcnow(), utcnow()
                    )
                )
        return items, failed

    def _record(
        self, delivery_id: int, results: list[SendResult], attempt_no: int, name: str = ""
    ) -> DeliveryState:
        failed = [r for r in results if not r.succeeded]
        # A refusal the destination will repeat (the object itself is refused) is
        # not retried; network errors, busy peers and out-of-resources are.
        permanent = bool(failed) and all(_is_permanent(r) for r in failed)
        give_up = bool(failed) and (permanent or attempt_no >= self._policy.max_attempts)
        retry_at = None
        if failed and not give_up:
            retry_at = utcnow() + backoff(
                attempt_no, self._policy.backoff_initial_seconds, self._policy.backoff_max_seconds
            )
        if self._on_attempt:
            self._on_attempt(name, len(results) - len(failed), len(failed))
        if failed:
            logger.warning(
                "delivery %d to %s: %d/%d objects failed (attempt %d): %s",
                delivery_id,
                name,
                len(failed),
                len(results),
                attempt_no,
                failed[0].error,
            )
        return self._store.record_delivery_attempt(
            delivery_id,
            [
                (r.output_id, r.succeeded, r.status, r.error, r.started, r.finished, r.http_status)
                for r in results
            ],
            retry_at=retry_at,
            give_up=give_up,
        )


def _is_permanent(result: SendResult) -> bool:
    """Whether a failed send is a refusal of the object itself (retrying cannot help).

    DIMSE (PS3.4 B.2-1) and STOW-RS FailureReason alike: 0xA9xx (data set does
    not match SOP class), 0xCxxx (cannot understand), 0x0122 (SOP class not
    supported). HTTP: a 4xx other than 408 (timeout), 409 (judged by its
    per-instance reasons) and 429 (busy).
    """
    if result.permanent:
        return True
    if (
        result.http_status is not None
        and 400 <= result.http_status < 500
        and result.http_status not in (408, 409, 429)
    ):
        return True
    status = result.status  # DIMSE status, or the STOW-RS FailureReason of this instance
    if status is None:
        return False
    return 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF or status == 0x0122


def _planned_key(output: Output) -> tuple[str, str | None]:
    """``(kind, variant)`` of an output as the plan names it.

    Outputs written before viewer profiles (migration 0003) have no variant:
    they are the default variant's.
    """
    kind = ResultKind(output.kind)
    if kind.profiled and output.variant is None:
        return output.kind, DEFAULT_VARIANT
    return output.kind, output.variant
