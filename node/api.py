"""The HTTP API (FastAPI): health, jobs, metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel

from node.db.models import Delivery, DeliveryAttempt, Job, JobState
from node.db.store import AuditStore
from node.metrics import NodeMetrics


class JobView(BaseModel):
    """A job as listed by the API."""

    id: int
    state: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str | None
    route: str
    pipeline: str
    pipeline_version: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    delivered_at: datetime | None
    error: str | None
    run_seconds: float | None


class JobDetail(JobView):
    """One job with its inputs, outputs, deliveries and history."""

    inputs: list[str]
    outputs: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    delivery_attempts: list[dict[str, Any]]
    events: list[dict[str, Any]]
    summary: dict[str, Any] | None
    result_uids: dict[str, Any]


def job_view(job: Job) -> dict[str, Any]:
    run = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    return {
        "id": job.id, "state": job.state.value, "study_instance_uid": job.study_instance_uid,
        "series_instance_uid": job.series_instance_uid, "modality": job.modality,
        "route": job.route_name, "pipeline": job.pipeline_name, "pipeline_version": job.pipeline_version,
        "attempts": job.attempts, "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "delivered_at": job.delivered_at, "error": job.error,
        "run_seconds": run,
    }


def job_detail(job: Job, deliveries: list[Delivery], attempts: list[DeliveryAttempt]) -> dict[str, Any]:
    return job_view(job) | {
        "inputs": [i.sop_instance_uid for i in job.inputs],
        "outputs": [
            {"id": o.id, "kind": o.kind, "sop_class_uid": o.sop_class_uid, "sop_instance_uid": o.sop_instance_uid,
             "series_instance_uid": o.series_instance_uid, "path": o.path, "size_bytes": o.size_bytes,
             "sha256": o.sha256}
            for o in job.outputs
        ],
        "deliveries": [
            {"id": d.id, "destination": d.destination, "state": d.state.value, "attempts": d.attempts,
             "next_attempt_at": d.next_attempt_at, "delivered_at": d.delivered_at, "last_error": d.last_error}
            for d in deliveries
        ],
        "delivery_attempts": [
            {"delivery_id": a.delivery_id, "output_id": a.output_id, "attempt": a.attempt,
             "started_at": a.started_at, "finished_at": a.finished_at, "succeeded": a.succeeded,
             "dimse_status": a.dimse_status, "error": a.error}
            for a in attempts
        ],
        "events": [{"at": e.at, "kind": e.kind, "detail": e.detail} for e in job.events],
        "summary": job.summary,
        "result_uids": job.result_uids,
    }


def create_api(store: AuditStore, metrics: NodeMetrics, health: dict[str, Any]) -> FastAPI:
    """Build the FastAPI application over the node's store and metrics."""
    app = FastAPI(title="ainode", version=health.get("version", "0"), summary="Clinical AI node API")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", **health, "counts": store.counts()}

    @app.get("/api/jobs", response_model=list[JobView])
    def list_jobs(
        limit: int = Query(50, ge=1, le=1000),
        offset: int = Query(0, ge=0),
        state: JobState | None = None,
    ) -> list[dict[str, Any]]:
        return [job_view(j) for j in store.list_jobs(limit=limit, offset=offset, state=state)]

    @app.get("/api/jobs/{job_id}", response_model=JobDetail)
    def get_job(job_id: int) -> dict[str, Any]:
        found = store.get_job(job_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return job_detail(*found)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
