"""Pull mode: POST /api/inference-requests retrieves a study from Orthanc (C-GET, C-MOVE, WADO-RS),
analyses it and sends the results back; GET /api/inference-requests/{id} follows it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import peers
import pytest
from dicomweb_helpers import AUTH, http_base
from pydicom.uid import generate_uid
from testing_constants import replan_unaddressed

from node.config import RetrievalSettings
from node.db.actions import JobActions
from node.db.engine import make_engine, migrate
from node.db.models import RequestState
from node.db.store import AuditStore
from node.ingress.stow import StowIngress
from node.retrieve.requests import Retriever
from node.spool import Spool


@pytest.fixture
def orthanc() -> Iterator[peers.Orthanc]:
    with peers.Orthanc() as server:
        yield server


def _sources(orthanc: peers.Orthanc, how: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dimse = {
        "ae_title": orthanc.aet,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "timeout_seconds": 20,
    }
    if how == "wado-rs":
        if not orthanc.has_dicomweb:
            pytest.skip("Orthanc's DICOMweb plugin is not installed")
        web = {"url": orthanc.dicomweb_url}
        return {"pacs": {"dicomweb": web}}, {"pacs": {"dicomweb": web}}
    return {"pacs": {"dimse": dimse | {"retrieve": how}}}, {"pacs": {"dimse": dimse}}


def _request(node: Any, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{http_base(node)}/api/inference-requests", json=body, headers=AUTH, timeout=30
    )


def _state(node: Any, request_id: int) -> dict[str, Any]:
    response = httpx.get(
        f"{http_base(node)}/api/inference-requests/{request_id}", headers=AUTH, timeout=30
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.slow
@pytest.mark.parametrize("how", ["c-get", "c-move", "wado-rs"])
def test_pull_analyse_and_send_back(
    how: str,
    sqlite_url: str,
    make_node: Callable[..., Any],
    orthanc: peers.Orthanc,
    chest_phantom: Any,
) -> None:
    sources, destinations = _sources(orthanc, how)
    node = make_node(sqlite_url, sources=sources, destinations=destinations)
    orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
    for ds in chest_phantom.datasets:
        orthanc.upload(ds)
    study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)

    response = _request(
        node, {"study_instance_uid": study_uid, "source": "pacs", "pipelines": ["ct-anatomy"]}
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["id"]
    done = peers.wait_for(
        lambda: (s := _state(node, request_id))["state"] in ("succeeded", "failed") and s,
        timeout=180,
        interval=0.3,
        what=f"inference request by {how} to finish",
    )
    assert done["state"] == "succeeded", done
    assert done["retrieved_instances"] == len(chest_phantom.datasets)
    assert [j["pipeline"] for j in done["jobs"]] == ["ct-anatomy"]
    for modality in ("SEG", "SR"):  # the results went back to the source
        assert orthanc.find_instances_by_tag(StudyInstanceUID=study_uid, Modality=modality)
    kinds = [e.kind for e in node.store.events(study_uid)]
    assert "inference_requested" in kinds and "inference_retrieved" in kinds
    assert "study_complete" not in kinds  # the assembler left the requested study alone


@pytest.mark.slow
def test_unknown_study_fails_the_request(
    sqlite_url: str, make_node: Callable[..., Any], orthanc: peers.Orthanc
) -> None:
    sources, destinations = _sources(orthanc, "c-get")
    node = make_node(
        sqlite_url,
        sources=sources,
        destinations=destinations,
        retrieval={"max_attempts": 2, "backoff_initial_seconds": 0.5},
    )
    orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
    request_id = _request(node, {"study_instance_uid": generate_uid(), "source": "pacs"}).json()[
        "id"
    ]
    done = peers.wait_for(
        lambda: (s := _state(node, request_id))["state"] == "failed" and s,
        timeout=60,
        what="the request to fail",
    )
    # Orthanc answers the C-GET of an unknown study with 0xC000; an empty success would read
    # "no instances"
    assert "C-GET ended with status 0xC000" in done["error"] or "no instances" in done["error"]
    assert (
        done["attempts"] == 2 and "after 2 attempts" in done["error"]
    )  # retried once, then given up


@pytest.mark.slow
def test_request_before_the_pacs_has_the_study_is_retried(
    sqlite_url: str, make_node: Callable[..., Any], orthanc: peers.Orthanc, chest_phantom: Any
) -> None:
    """A RIS asks for AI before the PACS has archived the study: the node retries with backoff."""
    sources, destinations = _sources(orthanc, "c-get")
    node = make_node(
        sqlite_url,
        sources=sources,
        destinations=destinations,
        retrieval={"max_attempts": 10, "backoff_initial_seconds": 1, "backoff_max_seconds": 2},
    )
    orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
    study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)
    request_id = _request(
        node, {"study_instance_uid": study_uid, "source": "pacs", "pipelines": ["ct-anatomy"]}
    ).json()["id"]
    waiting = peers.wait_for(
        lambda: (s := _state(node, request_id))["attempts"] >= 1 and s["state"] == "queued" and s,
        timeout=60,
        what="the first attempt to fail and be rescheduled",
    )
    assert waiting["next_attempt_at"] and "retrying at" in waiting["error"]
    assert node.store.events(study_uid, kind="inference_retry")
    for ds in chest_phantom.datasets:  # the study reaches the PACS
        orthanc.upload(ds)
    done = peers.wait_for(
        lambda: (s := _state(node, request_id))["state"] in ("succeeded", "failed") and s,
        timeout=180,
        interval=0.3,
        what="the retried request to finish",
    )
    assert done["state"] == "succeeded", done
    assert done["attempts"] >= 2 and done["retrieved_instances"] == len(chest_phantom.datasets)


@pytest.mark.slow
def test_bad_requests_are_refused(sqlite_url: str, make_node: Callable[..., Any]) -> None:
    node = make_node(sqlite_url)
    for body in (
        {"study_instance_uid": "1.2.3", "source": "nowhere"},
        {"study_instance_uid": "not a uid", "source": "pacs"},
        {"study_instance_uid": "1.2.3"},
    ):
        response = _request(node, body)
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    assert (
        httpx.get(f"{http_base(node)}/api/inference-requests/12345", headers=AUTH).status_code
        == 404
    )
    assert httpx.get(f"{http_base(node)}/api/inference-requests", headers=AUTH).json()["total"] == 0


# -- attempts across stops of the node (no peers) ---------------------------------------


@pytest.fixture
def store(database_url: str) -> Iterator[AuditStore]:
    engine = make_engine(database_url)
    migrate(engine)
    yield AuditStore(engine)
    engine.dispose()


def _crash(actions: JobActions, max_attempts: int | None = None) -> int:
    """Claim the next request, then stop the node during its retrieval (it stays retrieving)."""
    request = actions.claim_request(max_attempts)
    assert request is not None and request.state is RequestState.RETRIEVING
    actions.requeue_interrupted_requests()  # the next start
    return request.attempts


def test_a_request_interrupted_by_stops_of_the_node_is_given_up_after_max_attempts(
    store: AuditStore,
) -> None:
    actions = JobActions(store, replan_unaddressed)
    study_uid = generate_uid()
    request_id = actions.create_request(study_uid, "pacs", ["ct-anatomy"], [])
    assert [_crash(actions, 2), _crash(actions, 2)] == [1, 2]
    view = actions.get_request(request_id)
    assert view is not None and view.request.state is RequestState.QUEUED
    assert view.request.error == "attempt 2 was interrupted: the node stopped during retrieval"
    other = actions.create_request(generate_uid(), "pacs", [], [])
    claimed = actions.claim_request(
        2
    )  # the used-up request is failed, not claimed; the next one is
    assert claimed is not None and claimed.id == other and claimed.attempts == 1
    view = actions.get_request(request_id)
    assert (
        view is not None
        and view.request.state is RequestState.FAILED
        and view.request.attempts == 2
    )
    assert view.request.error == "gave up after 2 attempts (the node stopped during retrieval)"
    [event] = store.events(study_uid, kind="inference_failed")
    assert event.detail == f"request {request_id}: {view.request.error}"
    assert actions.claim_request(2) is None


def test_a_lowered_max_attempts_gives_up_a_queued_request(store: AuditStore) -> None:
    actions = JobActions(store, replan_unaddressed)
    request_id = actions.create_request(generate_uid(), "pacs", [], [])
    claimed = actions.claim_request(5)
    assert claimed is not None and claimed.attempts == 1
    actions.retry_request(request_id, "PACS down", claimed.updated_at)  # due at once
    assert actions.claim_request(1) is None  # retrieval.max_attempts lowered to 1 since
    view = actions.get_request(request_id)
    assert view is not None and view.request.state is RequestState.FAILED
    assert view.request.error == "gave up after 1 attempt (retrieval.max_attempts is 1)"


def test_the_retriever_gives_up_rather_than_retrieving_again(
    store: AuditStore, tmp_path: Path
) -> None:
    actions = JobActions(store, replan_unaddressed)
    spool = Spool(tmp_path / "node", 0)
    retriever = Retriever(
        store,
        actions,
        spool,
        StowIngress(spool, store),
        {},
        "AINODE",
        plan=lambda request, series: [],
        max_bytes=1 << 20,
        policy=RetrievalSettings(max_attempts=1),
    )
    request_id = actions.create_request(generate_uid(), "pacs", [], [])
    _crash(actions)
    assert retriever.tick() == 0  # nothing retrieved: the one allowed attempt was used
    view = actions.get_request(request_id)
    assert view is not None and view.request.state is RequestState.FAILED
    assert view.request.error == "gave up after 1 attempt (the node stopped during retrieval)"
