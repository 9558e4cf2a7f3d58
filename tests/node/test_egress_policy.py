"""Delivery policy against a real DICOM peer that refuses one object outright.

The peer is a pynetdicom Storage SCP that answers 0xA900 (data set does not
match SOP class) to every SR and Success to everything else: the SR is given
up after one attempt (retrying cannot help), and the SEG, once accepted, is
never sent again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import peers
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt

from node.db.models import DeliveryState, JobState
from node.demo.scu import send_datasets

SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.34",
    "1.2.840.10008.5.1.4.1.1.88.33",
    "1.2.840.10008.5.1.4.1.1.88.22",
}


@pytest.fixture
def picky_pacs() -> Iterator[dict[str, Any]]:
    received: list[str] = []

    def on_store(event: Any) -> int:
        sop_class = str(event.request.AffectedSOPClassUID)
        received.append(sop_class)
        return 0xA900 if sop_class in SR_CLASSES else 0x0000

    ae = AE(ae_title="PICKY")
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield {"port": server.server_address[1], "received": received}
    finally:
        server.shutdown()


def test_refused_object_is_not_retried_and_accepted_one_not_resent(
    make_node: Callable[..., Any], sqlite_url: str, chest_phantom: Any, picky_pacs: dict[str, Any]
) -> None:
    node = make_node(
        sqlite_url,
        http=False,
        destinations={
            "picky": {
                "dimse": {"ae_title": "PICKY", "host": "127.0.0.1", "port": picky_pacs["port"]}
            }
        },
        routes=[
            {
                "name": "ct",
                "match": {"Modality": "CT"},
                "pipelines": ["ct-anatomy"],
                "send_to": ["picky"],
            }
        ],
        egress={"max_attempts": 5, "backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.2},
    )
    send_datasets(chest_phantom.datasets, "127.0.0.1", node.dicom_port, "AINODE", "TESTSCU")

    def settled() -> Any:
        jobs = node.store.list_jobs()
        return jobs[0] if jobs and jobs[0].state is JobState.DELIVERY_FAILED else None

    job = peers.wait_for(settled, timeout=120, what="the refused SR to be given up")
    found = node.store.get_job(job.id)
    assert found is not None
    _, [delivery], attempts = found
    assert delivery.state is DeliveryState.FAILED and delivery.attempts == 1
    assert sorted((a.succeeded, a.dimse_status) for a in attempts) == [(False, 0xA900), (True, 0)]
    assert len(picky_pacs["received"]) == 2  # one SEG, one SR: nothing sent twice
