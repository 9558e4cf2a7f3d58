"""A small C-STORE SCU used by the demo and the benchmarks to send a series."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from node.dimse import identify, is_success, quiet_pynetdicom, set_nodelay
from node.errors import DeliveryError


def send_datasets(
    datasets: Sequence[Dataset],
    host: str,
    port: int,
    called_ae_title: str,
    calling_ae_title: str = "AINODE-SCU",
    timeout: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """C-STORE ``datasets`` on one association; return the status of each.

    Raises
    ------
    DeliveryError
        When the association cannot be established.
    """
    quiet_pynetdicom()
    ae = AE(ae_title=calling_ae_title)
    identify(ae)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    assoc = ae.associate(
        host,
        port,
        ae_title=called_ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: set_nodelay(event.assoc))],
    )
    if not assoc.is_established:
        raise DeliveryError(f"cannot associate with {called_ae_title}@{host}:{port}")
    statuses: list[int] = []
    try:
        for i, ds in enumerate(datasets, 1):
            rsp = assoc.send_c_store(ds)
            statuses.append(int(rsp.Status) if "Status" in rsp else -1)
            if progress:
                progress(i)
    finally:
        if assoc.is_established:
            assoc.release()
    failed = [s for s in statuses if not is_success(s)]
    if failed:
        raise DeliveryError(
            f"{len(failed)} of {len(statuses)} instances were refused "
            f"(first status {failed[0]:#06x})"
        )
    return statuses
