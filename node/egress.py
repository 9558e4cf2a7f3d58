"""Egress: deliver result objects to DIMSE (C-STORE) and DICOMweb (STOW-RS) destinations, with retries.

Each delivery (one job's results to one destination) is attempted when due;
an attempt sends every result object on one association, proposing exactly
the presentation contexts those objects need, and re-associates once for the
objects left over when the association drops mid-way (pynetdicom has been
seen to lose a C-STORE reply and abort). Every object's outcome is recorded;
failures are retried with exponential backoff until ``max_attempts``.

A DICOMweb destination gets one STOW-RS request per attempt
(:mod:`node.dicomweb_stow`); its response's ReferencedSOPSequence and
FailedSOPSequence decide, per object, what was stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association

from node.config import Destination, DimseDestination, EgressSettings
from node.db.models import REJECTION_FOR, DeliveryState, Output, utcnow
from node.db.store import AuditStore, backoff
from node.dicomweb_stow import StowSender
from node.dimse import identify, is_success, quiet_pynetdicom, set_nodelay

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    """The outcome of sending one object (``status``: DIMSE status or STOW-RS FailureReason)."""

    output_id: int
    succeeded: bool
    status: int | None
    error: str | None
    started: datetime
    finished: datetime
    http_status: int | None = None
    #: Failed for a reason retrying cannot mend (decided here, not by the peer).
    permanent: bool = False


def _contexts(datasets: Sequence[Dataset]) -> list[tuple[str, list[str]]]:
    wanted: dict[str, set[str]] = {}
    for ds in datasets:
        ts = UID(str(ds.file_meta.TransferSyntaxUID))
        syntaxes = (
            {str(ts)} if ts.is_compressed else {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
        )
        wanted.setdefault(str(ds.SOPClassUID), set()).update(syntaxes)
    return [
        (sop, sorted(ts, key=lambda t: t != ExplicitVRLittleEndian)) for sop, ts in wanted.items()
    ]


class DimseSender:
    """Sends datasets to one DIMSE destination (C-STORE SCU, PS3.4 Annex B)."""

    def __init__(self, calling_ae_title: str, destination: DimseDestination) -> None:
        self._calling = destination.calling_ae_title or calling_ae_title
        self._dest = destination

    def _associate(self, datasets: Sequence[Dataset]) -> Association:
        ae = AE(ae_title=self._calling)
        identify(ae)
        for sop_class, syntaxes in _contexts(datasets):
            ae.add_requested_context(sop_class, syntaxes)
        timeout = self._dest.timeout_seconds
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = timeout
        return ae.associate(
            self._dest.host,
            self._dest.port,
            ae_title=self._dest.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: set_nodelay(event.assoc))],
        )

    def send(self, items: Sequence[tuple[int, Dataset]]) -> list[SendResult]:
        """Send ``(output id, dataset)`` pairs; re-associate once for leftovers."""
        results: dict[int, SendResult] = {}
        remaining = list(items)
        for _round in range(2):
            if not remaining:
                break
            remaining = self._send_round(remaining, results)
        return [results[oid] for oid, _ in items]

    def _send_round(
        self, items: list[tuple[int, Dataset]], results: dict[int, SendResult]
    ) -> list[tuple[int, Dataset]]:
        started = utcnow()
        try:
            assoc = self._associate([ds for _, ds in items])
        except (OSError, RuntimeError, ValueError) as exc:
            for oid, _ in items:
                results[oid] = SendResult(
                    oid, False, None, f"cannot associate: {exc}", started, utcnow()
                )
            return []
        if not assoc.is_established:
            why = (
                "association rejected"
                if assoc.is_rejected
                else "association failed (peer down or timed out)"
            )
            for oid, _ in items:
                results[oid] = SendResult(
                    oid,
                    False,
                    None,
                    f"{why} by {self._dest.ae_title}@{self._dest.host}:{self._dest.port}",
                    started,
                    utcnow(),
                )
            return []
        leftover: list[tuple[int, Dataset]] = []
        try:
            for index, (oid, ds) in enumerate(items):
                if not assoc.is_established:
                    leftover = items[index:]
                    break
                results[oid] = self._store_one(assoc, oid, ds)
                if results[oid].status is None and not assoc.is_established:
                    leftover = items[index:]
                    break
        finally:
            if assoc.is_established:
                assoc.release()
        return leftover

    def _store_one(self, assoc: Association, oid: int, ds: Dataset) -> SendResult:
        started = utcnow()
        try:
            rsp = assoc.send_c_store(ds)
        except (ValueError, RuntimeError) as exc:  # no accepted context for this object
            return SendResult(oid, False, None, f"not sendable: {exc}", started, utcnow())
        status = int(rsp.Status) if rsp is not None and "Status" in rsp else None
        if status is None:
            return SendResult(
                oid,
                False,
                None,
                "no C-STORE response (association dropped or timed out)",
                started,
                utcnow(),
            )
        ok = is_success(status)
        return SendResult(
            oid, ok, status, None if ok else f"C-STORE status 0x{status:04X}", started, utcnow()
        )


class Egress:
    """Delivers due deliveries (run periodically by the scheduler).

    Parameters
    ----------
    store : AuditStore
        Deliveries and attempts are read from and recorded here.
    destinations : mapping
        Configured destinations by name.
    calling_ae_title : str
        The node's AE title, used as calling AE title.
    policy : EgressSettings
        Retry policy.
    on_attempt : callable, optional
        ``(destination, succeeded objects, failed objects)`` for metrics.
    """

    def __init__(
        self,
        store: AuditStore,
        destinations: Mapping[str, Destination],
        calling_ae_title: str,
        policy: EgressSettings,
        on_attempt: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self._store = store
        self._destinations = dict(destinations)
        self._calling = calling_ae_title
        self._policy = policy
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
        missing = self._missing_variant(delivery.job_id, destination)
        if missing:
            return self._record(
                delivery_id,
                [
                    SendResult(o.id, False, None, missing, utcnow(), utcnow(), permanent=True)
                    for o in outputs
                ],
                attempt_no,
                delivery.destination,
            )
        accepted = self._store.accepted_outputs(delivery_id)
        selected = [
            o
            for o in outputs
            if _wanted(o, delivery.destination, destination) and o.id not in accepted
        ]
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

    def _missing_variant(self, job_id: int, destination: Destination) -> str | None:
        """Why the job has no results shaped for this destination's profile, if it has none.

        A job writes one set per profile its destinations had when it ran;
        a profile changed since then needs a re-run, not a silent partial send.
        """
        written = (self._store.job_summary(job_id) or {}).get("variants")
        if not written or destination.variant in written:
            return None
        return (
            f"the job's results were written for the profiles {sorted(written)}, not for this "
            f"destination's profile {destination.variant!r} (changed since?): re-run the job"
        )

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


#: Result kinds every destination gets: they are the primary output of their
#: pipelines (reformatted series, spatial registrations), not a viewer format;
#: and rejection notes withdrawing superseded results (IHE IOCM).
PRIMARY_KINDS = frozenset({"DERIVED", "REG", "REJECT"})


def _wanted(output: Output, name: str, destination: Destination) -> bool:
    """Whether a destination gets an output: its format, shaped for its profile; its own rejection note."""
    if output.kind == "REJECT":
        return output.variant == REJECTION_FOR + name
    if output.variant is not None and output.variant != destination.variant:
        return False
    return output.kind in PRIMARY_KINDS or output.kind.lower() in destination.formats
