"""The REST API: tokens, one error shape, paginated filtered listings, re-run, re-send, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from testing_constants import TEST_API_TOKEN, replan_unaddressed, unaddressed_plan

from node.config import ApiSettings, load_settings
from node.db.actions import JobActions
from node.db.engine import make_engine, migrate
from node.db.models import DeliveryState, JobState
from node.db.store import AuditStore, PlannedJob, ReceivedInstance, WrittenOutput
from node.http.api import ApiContext, create_api
from node.ingress.stow import StowIngress
from node.metrics import NodeMetrics
from node.spool import Spool
from node.study.planning import mint_result_uids

AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}


@dataclass
class Env:
    client: TestClient
    store: AuditStore
    woken: list[str]


def _context(
    store: AuditStore, tmp_path: Path, api: ApiSettings, tokens: tuple[str, ...], woken: list[str]
) -> ApiContext:
    spool = Spool(tmp_path / "node", 0)
    return ApiContext(
        store=store,
        metrics=NodeMetrics(store.counts),
        health={"ae_title": "AINODE", "version": "test"},
        api=api,
        tokens=tokens,
        actions=JobActions(store, replan_unaddressed),
        stow=StowIngress(spool, store),
        destinations=frozenset({"pacs", "cloud"}),
        sources=frozenset({"pacs"}),
        known_pipeline=lambda name: name == "ct-anatomy",
        wake=woken.append,
    )


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    engine = make_engine(database_url)
    migrate(engine)
    store = AuditStore(engine)
    woken: list[str] = []
    app = create_api(_context(store, tmp_path, ApiSettings(), (TEST_API_TOKEN,), woken))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Env(client, store, woken)
    engine.dispose()


def _study(
    store: AuditStore,
    modality: str = "CT",
    pipelines: tuple[str, ...] = ("ct-anatomy",),
    destinations: tuple[str, ...] = ("pacs",),
) -> list[int]:
    """One study with one series, recorded and dispatched into one job per pipeline."""
    study_uid, series_uid = generate_uid(), generate_uid()
    for _ in range(2):
        store.record_instance(
            ReceivedInstance(
                sop_instance_uid=generate_uid(),
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                modality=modality,
                body_part_examined=None,
                series_description=None,
                study_description=None,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                calling_ae_title="PACS",
                source="dimse",
                size_bytes=10,
                sha256=generate_uid()[-32:],
                path="/nonexistent",
            )
        )
    series = store.pending_series(study_uid)
    rows = series[series_uid]
    planned = [
        PlannedJob(
            study_uid,
            series_uid,
            modality,
            "route",
            name,
            "1",
            None,
            destinations,
            mint_result_uids(),
            tuple((r.id, r.sop_instance_uid or "", r.path or "") for r in rows),
            unaddressed_plan(),
        )
        for name in pipelines
    ]
    return store.dispatch_study(study_uid, [r.id for r in rows], planned, [])


def _succeed(store: AuditStore, job_id: int, tmp_path: Path) -> None:
    job = store.claim_next_job()
    assert job is not None and job.id == job_id
    output = WrittenOutput(
        "SEG",
        "1.2.840.10008.5.1.4.1.1.66.4",
        generate_uid(),
        generate_uid(),
        "1.2.840.10008.1.2.1",
        str(tmp_path / "seg.dcm"),
        1,
        "0" * 64,
    )
    store.finish_job(job_id, [output], {}, "1")


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["status"] == status and error["code"] and error["message"]
    return error


# -- authentication -------------------------------------------------------------------


def test_token_required_and_checked(env: Env) -> None:
    _error(env.client.get("/api/jobs"), 401)
    _error(
        env.client.get("/api/jobs", headers={"Authorization": "Bearer nope-nope-nope-nope"}), 401
    )
    _error(env.client.get("/api/jobs", headers={"Authorization": f"Basic {TEST_API_TOKEN}"}), 401)
    assert env.client.get("/api/jobs", headers=AUTH).status_code == 200
    assert env.client.get("/dicom-web/studies").status_code == 401  # the same token guards DICOMweb
    # health and metrics carry no patient data and stay open
    assert env.client.get("/healthz").json()["status"] == "ok"
    assert "ainode_jobs" in env.client.get("/metrics").text


def test_no_token_configured_is_503_saying_how_to_fix_it(tmp_path: Path, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    migrate(engine)
    store = AuditStore(engine)
    app = create_api(_context(store, tmp_path, ApiSettings(), (), []))
    with TestClient(app) as client:
        error = _error(client.get("/api/jobs", headers=AUTH), 503)
        assert "AINODE_API_TOKEN" in error["message"] and "api.tokens" in error["message"]
        assert client.get("/healthz").status_code == 200
    disabled = create_api(_context(store, tmp_path, ApiSettings(auth_disabled=True), (), []))
    with TestClient(disabled) as client:
        assert client.get("/api/jobs").status_code == 200
    protected = create_api(
        _context(store, tmp_path, ApiSettings(protect_metrics=True), ("x" * 16,), [])
    )
    with TestClient(protected) as client:
        _error(client.get("/metrics"), 401)
    engine.dispose()


SENDER_TOKEN = "sender-token-of-the-pacs-0001"
SENDER = {"Authorization": f"Bearer {SENDER_TOKEN}"}


def _with_senders(
    store: AuditStore, tmp_path: Path, api: ApiSettings, tokens: tuple[str, ...]
) -> Any:
    ctx = replace(_context(store, tmp_path, api, tokens, []), sender_tokens={SENDER_TOKEN: "pacs"})
    return create_api(ctx)


def test_sender_token_opens_stow_only(tmp_path: Path, sqlite_url: str) -> None:
    """A PACS's sender token may store (STOW-RS) but not read /dicom-web nor use the REST API."""
    engine = make_engine(sqlite_url)
    migrate(engine)
    store = AuditStore(engine)

    def stow(client: TestClient, headers: dict[str, str]) -> Any:
        # a body STOW-RS refuses with 415 once the caller is authenticated
        return client.post(
            "/dicom-web/studies", headers=headers | {"Content-Type": "text/plain"}, content=b"x"
        )

    with TestClient(_with_senders(store, tmp_path, ApiSettings(), (TEST_API_TOKEN,))) as client:
        assert stow(client, SENDER).status_code == 415  # past authentication
        assert stow(client, AUTH).status_code == 415
        assert stow(client, {}).status_code == 401
        error = _error(
            client.get("/dicom-web/studies", headers=SENDER), 401
        )  # no reading what others sent
        assert error["message"] == "the API token is not valid"
        assert client.get("/dicom-web/studies", headers=AUTH).status_code in (200, 204)
        _error(client.get("/api/jobs", headers=SENDER), 401)  # least privilege: no REST API
        _error(
            client.post(
                "/api/inference-requests",
                headers=SENDER,
                json={"study_instance_uid": "1.2.3", "source": "pacs"},
            ),
            401,
        )
        assert client.get("/api/jobs", headers=AUTH).status_code == 200
        _error(
            client.get(
                "/dicom-web/studies", headers={"Authorization": "Bearer nope-nope-nope-nope"}
            ),
            401,
        )
    # sender tokens alone open STOW-RS; reading and the REST API say no API token is configured
    with TestClient(_with_senders(store, tmp_path, ApiSettings(), ())) as client:
        assert stow(client, SENDER).status_code == 415
        _error(client.get("/dicom-web/studies", headers=SENDER), 503)
        _error(client.get("/api/jobs", headers=SENDER), 503)
    engine.dispose()


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AINODE_API_TOKEN", "from-the-environment-123")
    settings = load_settings(overrides={"api": {"tokens": ["from-the-config-file-1"]}})
    assert settings.api_tokens == ("from-the-config-file-1", "from-the-environment-123")
    with pytest.raises(Exception, match="at least 16"):
        load_settings(overrides={"api": {"tokens": ["short"]}})


# -- listings ---------------------------------------------------------------------------


def test_jobs_paginated_and_filtered(env: Env) -> None:
    ct = _study(env.store, "CT", ("ct-anatomy", "other"))
    mr = _study(env.store, "MR", ("other",))
    page = env.client.get("/api/jobs", params={"limit": 2}, headers=AUTH).json()
    assert page["total"] == 3 and page["limit"] == 2 and len(page["items"]) == 2
    assert [j["id"] for j in page["items"]] == sorted(ct + mr, reverse=True)[:2]
    rest = env.client.get("/api/jobs", params={"limit": 2, "offset": 2}, headers=AUTH).json()
    assert [j["id"] for j in rest["items"]] == [min(ct)]

    def ids(**params: Any) -> list[int]:
        body = env.client.get("/api/jobs", params=params, headers=AUTH).json()
        return sorted(j["id"] for j in body["items"])

    assert ids(pipeline="other") == sorted([ct[1], *mr])
    assert ids(modality="mr") == mr
    assert ids(state="queued") == sorted(ct + mr)
    assert ids(state="failed") == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert ids(created_after=future) == [] and len(ids(created_before=future)) == 3
    detail = env.client.get(f"/api/jobs/{ct[0]}", headers=AUTH).json()
    assert detail["pipeline"] == "ct-anatomy" and len(detail["inputs"]) == 2
    assert "SEG" in detail["result_uids"]


def test_studies_paginated_and_filtered(env: Env) -> None:
    _study(env.store, "CT")
    _study(env.store, "MR", ("other",))
    body = env.client.get("/api/studies", headers=AUTH).json()
    assert body["total"] == 2 and {tuple(s["modalities"]) for s in body["items"]} == {
        ("CT",),
        ("MR",),
    }
    only_mr = env.client.get("/api/studies", params={"modality": "MR"}, headers=AUTH).json()
    assert [s["modalities"] for s in only_mr["items"]] == [["MR"]]
    assert only_mr["items"][0]["jobs"] == {"queued": 1}
    uid = only_mr["items"][0]["study_instance_uid"]
    assert env.client.get(f"/api/studies/{uid}", headers=AUTH).json()["instance_count"] == 2
    assert (
        env.client.get("/api/studies", params={"pipeline": "other"}, headers=AUTH).json()["total"]
        == 1
    )
    _error(env.client.get("/api/studies/1.2.3", headers=AUTH), 404)


# -- actions ----------------------------------------------------------------------------


def test_cancel_a_queued_job(env: Env) -> None:
    [job_id] = _study(env.store)
    assert env.client.post(f"/api/jobs/{job_id}/cancel", headers=AUTH).status_code == 200
    job, _, _ = env.store.get_job(job_id) or (None, None, None)
    assert job is not None and job.state is JobState.CANCELLED
    assert "job_cancelled" in [e.kind for e in job.events]
    assert env.store.claim_next_job() is None  # the runner never sees it
    _error(env.client.post(f"/api/jobs/{job_id}/cancel", headers=AUTH), 409)
    _error(env.client.post("/api/jobs/999999/cancel", headers=AUTH), 404)


def test_rerun_a_finished_job(env: Env, tmp_path: Path) -> None:
    [job_id] = _study(env.store)
    _error(env.client.post(f"/api/jobs/{job_id}/rerun", headers=AUTH), 409)  # still queued
    _succeed(env.store, job_id, tmp_path)
    response = env.client.post(f"/api/jobs/{job_id}/rerun", headers=AUTH)
    assert response.status_code == 202
    new_id = response.json()["new_job_id"]
    old, _, _ = env.store.get_job(job_id) or (None, None, None)
    new, _, _ = env.store.get_job(new_id) or (None, None, None)
    assert old is not None and new is not None and new.state is JobState.QUEUED
    assert [i.sop_instance_uid for i in new.inputs] == [i.sop_instance_uid for i in old.inputs]
    assert new.result_uids["SEG"] != old.result_uids["SEG"]  # a new analysis, new objects
    assert "runner" in env.woken


def test_resend_a_delivered_job(env: Env, tmp_path: Path) -> None:
    [job_id] = _study(env.store)
    _error(env.client.post(f"/api/jobs/{job_id}/resend", headers=AUTH), 409)  # no results yet
    _succeed(env.store, job_id, tmp_path)
    _, [delivery], _ = env.store.get_job(job_id) or (None, [None], None)
    now = datetime.now(UTC)
    env.store.record_delivery_attempt(
        delivery.id, [(1, False, None, "down", now, now)], retry_at=None, give_up=True
    )
    assert env.store.get_job(job_id)[0].state is JobState.DELIVERY_FAILED  # type: ignore[index]
    response = env.client.post(
        f"/api/jobs/{job_id}/resend", json={"destinations": ["pacs", "cloud"]}, headers=AUTH
    )
    assert response.status_code == 202, response.text
    job, deliveries, _ = env.store.get_job(job_id) or (None, [], None)
    assert job is not None and job.state is JobState.SUCCEEDED
    assert {d.destination: (d.state, d.attempts) for d in deliveries} == {
        "pacs": (DeliveryState.PENDING, 0),
        "cloud": (DeliveryState.PENDING, 0),
    }
    assert "egress" in env.woken
    _error(
        env.client.post(
            f"/api/jobs/{job_id}/resend", json={"destinations": ["nowhere"]}, headers=AUTH
        ),
        422,
    )


def test_resend_of_a_superseded_job_is_refused(env: Env, tmp_path: Path) -> None:
    """late_series: rerun withdrew the job's results; sending them again would undo that."""
    [job_id] = _study(env.store)
    _succeed(env.store, job_id, tmp_path)
    job = env.store.get_job(job_id)[0]  # type: ignore[index]
    env.store.record_instance(
        ReceivedInstance(  # a late instance of the same series
            sop_instance_uid=generate_uid(),
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            study_instance_uid=job.study_instance_uid,
            series_instance_uid=job.series_instance_uid,
            modality="CT",
            body_part_examined=None,
            series_description=None,
            study_description=None,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae_title="PACS",
            source="dimse",
            size_bytes=10,
            sha256=generate_uid()[-32:],
            path="/nonexistent",
        )
    )
    rows = env.store.pending_series(job.study_instance_uid)[job.series_instance_uid]
    [again] = env.store.dispatch_study(
        job.study_instance_uid,
        [r.id for r in rows],
        [
            PlannedJob(
                job.study_instance_uid,
                job.series_instance_uid,
                "CT",
                "route",
                "ct-anatomy",
                "1",
                None,
                ("pacs",),
                mint_result_uids(),
                tuple((r.id, r.sop_instance_uid or "", r.path or "") for r in rows),
                unaddressed_plan(),
                replaces_earlier=True,
            )
        ],
        [],
    )
    assert env.store.get_job(job_id)[0].superseded_by_job_id == again  # type: ignore[index]
    error = _error(
        env.client.post(
            f"/api/jobs/{job_id}/resend", json={"destinations": ["cloud"]}, headers=AUTH
        ),
        409,
    )
    assert (
        error["message"]
        == f"job {job_id} was superseded by job {again}; its results were withdrawn"
    )
    _, deliveries, _ = env.store.get_job(job_id) or (None, [], None)
    assert [d.destination for d in deliveries] == ["pacs"]  # nothing queued for "cloud"


def test_errors_have_one_shape(env: Env) -> None:
    _error(env.client.get("/api/jobs/abc", headers=AUTH), 422)
    _error(env.client.get("/api/jobs", params={"limit": 0}, headers=AUTH), 422)
    _error(env.client.get("/api/jobs", params={"state": "bogus"}, headers=AUTH), 422)
    _error(env.client.get("/api/jobs/5", headers=AUTH), 404)
    _error(env.client.get("/api/nothing-here", headers=AUTH), 404)
    _error(env.client.delete("/api/jobs", headers=AUTH), 405)


def test_openapi_is_served(env: Env) -> None:
    spec = env.client.get("/openapi.json").json()
    for path in (
        "/api/jobs",
        "/api/jobs/{job_id}/rerun",
        "/api/jobs/{job_id}/resend",
        "/api/jobs/{job_id}/cancel",
        "/api/studies",
        "/api/inference-requests",
        "/dicom-web/studies",
    ):
        assert path in spec["paths"], path
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert env.client.get("/docs").status_code == 200
