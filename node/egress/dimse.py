"""C-STORE SCU to one DIMSE destination (PS3.4 Annex B).

An attempt sends every result object on one association, proposing exactly
the presentation contexts those objects need, and re-associates once for the
objects left over when the association drops mid-way (pynetdicom has been
seen to lose a C-STORE reply and abort).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association

from node.config import DimseDestination
from node.db.models import utcnow
from node.dimse import identify, is_success, set_nodelay


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
