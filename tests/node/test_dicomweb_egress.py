"""STOW-RS egress to Orthanc's DICOMweb plugin.

The whole DICOMweb-only path, and per-instance failures.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peers
import pytest
from dicomweb_client import DICOMwebClient
from dicomweb_helpers import AUTH, http_base, part10
from pydicom.uid import generate_uid
from testing_constants import stored_plans, unaddressed_plan

from node.config import Destination, EgressSettings
from node.db.engine import make_engine, migrate
from node.db.models import DeliveryState, JobState
from node.db.store import AuditStore, PlannedJob, ReceivedInstance, WrittenOutput
from node.egress.delivery import Egress
from node.study.planning import mint_result_uids

pytestmark = pytest.mark.slow


@pytest.fixture
def orthanc() -> Iterator[peers.Orthanc]:
    with peers.Orthanc() as server:
        if not server.has_dicomweb:
            pytest.skip("Orthanc's DICOMweb plugin (orthanc-dicomweb) is not installed")
        yield server


def test_dicomweb_only_pacs_round_trip(
    database_url: str, make_node: Callable[..., Any], orthanc: peers.Orthanc, chest_phantom: Any
) -> None:
    """STOW-RS in, ct-anatomy, STOW-RS out: no DIMSE anywhere."""
    node = make_node(
        database_url,
        destinations={"web": {"dicomweb": {"url": orthanc.dicomweb_url, "timeout_seconds": 30}}},
        routes=[
            {
                "name": "ct",
                "match": {"Modality": "CT"},
                "pipelines": ["ct-anatomy"],
                "send_to": ["web"],
            }
        ],
    )
    client = DICOMwebClient(f"{http_base(node)}/dicom-web", headers=AUTH)
    client.store_instances(chest_phantom.datasets)
    study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)

    def results() -> list[Any]:
        found = orthanc.qido(f"studies/{study_uid}/series", {"Modality": "SEG"})
        found += orthanc.qido(f"studies/{study_uid}/series", {"Modality": "SR"})
        return found if len(found) == 2 else []

    peers.wait_for(
        results, timeout=180, interval=0.2, what="SEG and SR stored in Orthanc by STOW-RS"
    )
    job = peers.wait_for(
        lambda: next((j for j in node.store.list_jobs() if j.state is JobState.DELIVERED), None),
        timeout=30,
        what="job delivered",
    )
    _, [delivery], attempts = node.store.get_job(job.id) or (None, [None], [])
    assert delivery.destination == "web" and delivery.state is DeliveryState.SUCCEEDED
    assert len(attempts) == 2 and all(a.succeeded and a.http_status == 200 for a in attempts)
    assert all(i.source == "dicomweb" for i in node.store.instances(study_uid))


def _delivery(store: AuditStore, files: list[tuple[Path, str]]) -> tuple[int, int]:
    """A succeeded job with ``(file, SOP Instance UID)`` outputs.

    It has a pending delivery to ``web``.
    """
    study_uid, series_uid, sop = generate_uid(), generate_uid(), generate_uid()
    store.record_instance(
        ReceivedInstance(
            sop,
            "1.2.840.10008.5.1.4.1.1.2",
            study_uid,
            series_uid,
            "CT",
            None,
            None,
            None,
            "1.2.840.10008.1.2.1",
            None,
            "dicomweb",
            1,
            "0" * 64,
            "/x",
        )
    )
    rows = store.pending_series(study_uid)[series_uid]
    [job_id] = store.dispatch_study(
        study_uid,
        [r.id for r in rows],
        [
            PlannedJob(
                study_uid,
                series_uid,
                "CT",
                "r",
                "ct-anatomy",
                "1",
                None,
                ("web",),
                mint_result_uids(),
                tuple((r.id, r.sop_instance_uid or "", "/x") for r in rows),
                unaddressed_plan(),
            )
        ],
        [],
    )
    assert store.claim_next_job() is not None
    outputs = [
        WrittenOutput(
            "SEG",
            "1.2.840.10008.5.1.4.1.1.66.4",
            uid,
            generate_uid(),
            "1.2.840.10008.1.2.1",
            str(path),
            path.stat().st_size,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path, uid in files
    ]
    store.finish_job(job_id, outputs, {}, "1")
    _, [delivery], _ = store.get_job(job_id) or (None, [None], None)
    return job_id, delivery.id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    engine = make_engine(f"sqlite:///{tmp_path / 'egress.db'}")
    migrate(engine)
    yield AuditStore(engine)
    engine.dispose()


def _good_and_bad(tmp_path: Path, chest_phantom: Any) -> list[tuple[Path, str]]:
    good = tmp_path / "good.dcm"
    good.write_bytes(part10(chest_phantom.datasets[0]))
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"this is not a DICOM file" * 10)
    return [(good, str(chest_phantom.datasets[0].SOPInstanceUID)), (bad, generate_uid())]


def test_failed_instances_are_recorded_one_by_one(
    store: AuditStore,
    make_node: Callable[..., Any],
    sqlite_url: str,
    chest_phantom: Any,
    tmp_path: Path,
) -> None:
    """A 202 with a FailedSOPSequence.

    The listed instance failed (with its reason), the other is stored.
    """
    server = make_node(sqlite_url)  # another ainode as the DICOMweb destination, token-protected
    [good, _] = _good_and_bad(tmp_path, chest_phantom)
    odd = copy.deepcopy(chest_phantom.datasets[1])
    odd.SOPClassUID = odd.file_meta.MediaStorageSOPClassUID = (
        "1.2.826.0.1.3680043.8.498.1"  # not a storage class
    )
    (tmp_path / "odd.dcm").write_bytes(part10(odd))
    job_id, delivery_id = _delivery(store, [good, (tmp_path / "odd.dcm", str(odd.SOPInstanceUID))])
    url = f"{http_base(server)}/dicom-web"
    token = AUTH["Authorization"].split()[1]
    egress = Egress(
        store,
        {"web": Destination(dicomweb={"url": url, "token": token})},
        "AINODE",
        plan_of=stored_plans(store),
        policy=EgressSettings(max_attempts=2, backoff_initial_seconds=0.1, backoff_max_seconds=0.1),
    )
    # 0x0122 (SOP class not supported) is a refusal retrying cannot fix: given up at once
    assert egress.attempt(delivery_id) is DeliveryState.FAILED
    _, _, attempts = store.get_job(job_id) or (None, None, [])
    assert len(attempts) == 2
    by_ok = {a.succeeded: a for a in attempts}
    assert set(by_ok) == {True, False}
    assert by_ok[True].http_status == 202 and by_ok[True].dimse_status is None
    assert by_ok[False].http_status == 202 and by_ok[False].dimse_status == 0x0122
    assert "FailureReason 0x0122" in (by_ok[False].error or "")
    assert store.get_job(job_id)[0].state is JobState.DELIVERY_FAILED  # type: ignore[index]
    assert server.store.instances(str(chest_phantom.datasets[0].StudyInstanceUID))


def test_orthanc_refusing_the_request_fails_every_instance(
    store: AuditStore, orthanc: peers.Orthanc, chest_phantom: Any, tmp_path: Path
) -> None:
    job_id, delivery_id = _delivery(store, _good_and_bad(tmp_path, chest_phantom))
    egress = Egress(
        store,
        {"web": Destination(dicomweb={"url": orthanc.dicomweb_url})},
        "AINODE",
        plan_of=stored_plans(store),
        policy=EgressSettings(max_attempts=1),
    )
    assert egress.attempt(delivery_id) is DeliveryState.FAILED
    _, _, attempts = store.get_job(job_id) or (None, None, [])
    assert len(attempts) == 2 and not any(a.succeeded for a in attempts)
    assert all(a.http_status == 400 and "STOW-RS HTTP 400" in (a.error or "") for a in attempts)


def test_dicomweb_destination_down_is_retried(
    store: AuditStore, tmp_path: Path, chest_phantom: Any
) -> None:
    path = tmp_path / "one.dcm"
    path.write_bytes(part10(chest_phantom.datasets[0]))
    job_id, delivery_id = _delivery(store, [(path, str(chest_phantom.datasets[0].SOPInstanceUID))])
    dead = f"http://127.0.0.1:{peers.free_port()}/dicom-web"
    egress = Egress(
        store,
        {"web": Destination(dicomweb={"url": dead, "timeout_seconds": 2})},
        "AINODE",
        plan_of=stored_plans(store),
        policy=EgressSettings(max_attempts=3, backoff_initial_seconds=60),
    )
    assert egress.attempt(delivery_id) is DeliveryState.PENDING
    _, [delivery], [attempt] = store.get_job(job_id) or (None, [None], [None])
    assert (
        not attempt.succeeded
        and attempt.http_status is None
        and "ConnectError" in (attempt.error or "")
    )
    assert delivery.next_attempt_at is not None and "delivery_retry" in [
        e.kind for e in store.events(kind="delivery_retry")
    ]
