"""The REST API's view models (its OpenAPI schemas) and the serialisers that fill them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from node.db.listing import StudyRow
from node.db.models import Delivery, DeliveryAttempt, Job

#: A DICOM UID as it may appear in a URL (PS3.5 9.1).
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
#: A configured name: a pipeline, route, source or destination.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._:\-]{0,63}$"

Uid = Annotated[str, Field(pattern=UID_PATTERN, max_length=64)]
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]


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
    inference_request_id: int | None = None
    #: The job that replaced this one (``late_series: rerun``); its rejection note withdraws
    #: these results.
    superseded_by_job_id: int | None = None


class JobDetail(JobView):
    """One job with its inputs, outputs, deliveries and history."""

    inputs: list[str]
    outputs: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    delivery_attempts: list[dict[str, Any]]
    events: list[dict[str, Any]]
    summary: dict[str, Any] | None
    result_uids: dict[str, Any]
    #: The job's result plan: every object it writes (kind, viewer-profile variant, UIDs,
    #: Series Number and Description) and the destinations each goes to; ``None`` for a
    #: job queued before plans were stored (planned when it runs).
    plan: dict[str, Any] | None = None


class JobPage(BaseModel):
    items: list[JobView]
    total: int
    limit: int
    offset: int


class StudyView(BaseModel):
    study_instance_uid: str
    first_received_at: datetime
    last_received_at: datetime
    instance_count: int
    completed_at: datetime | None
    modalities: list[str]
    jobs: dict[str, int]


class StudyPage(BaseModel):
    items: list[StudyView]
    total: int
    limit: int
    offset: int


class ActionResult(BaseModel):
    job_id: int
    action: str
    new_job_id: int | None = None
    destinations: list[str] = []


class ResendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    destinations: list[Name] = Field(default_factory=list, max_length=32)


class InferenceRequestIn(BaseModel):
    """Pull a study from a configured source, analyse it, send the results."""

    model_config = ConfigDict(extra="forbid")
    study_instance_uid: Uid
    source: Name
    pipelines: list[Name] = Field(default_factory=list, max_length=32)
    destinations: list[Name] | None = Field(default=None, max_length=32)


class InferenceJob(BaseModel):
    id: int
    state: str
    pipeline: str
    series_instance_uid: str


class InferenceRequestView(BaseModel):
    id: int
    study_instance_uid: str
    source: str
    pipelines: list[str]
    destinations: list[str]
    state: str
    created_at: datetime
    updated_at: datetime
    retrieved_instances: int
    error: str | None
    #: Retrieval attempts so far; while queued after a failure, when the next one is due.
    attempts: int = 0
    next_attempt_at: datetime | None = None
    jobs: list[InferenceJob]


class InferenceRequestPage(BaseModel):
    items: list[InferenceRequestView]
    total: int
    limit: int
    offset: int


def job_view(job: Job) -> dict[str, Any]:
    """A job as :class:`JobView`."""
    run = (
        (job.finished_at - job.started_at).total_seconds()
        if job.finished_at and job.started_at
        else None
    )
    return {
        "id": job.id,
        "state": job.state.value,
        "study_instance_uid": job.study_instance_uid,
        "series_instance_uid": job.series_instance_uid,
        "modality": job.modality,
        "route": job.route_name,
        "pipeline": job.pipeline_name,
        "pipeline_version": job.pipeline_version,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "delivered_at": job.delivered_at,
        "error": job.error,
        "run_seconds": run,
        "inference_request_id": job.inference_request_id,
        "superseded_by_job_id": job.superseded_by_job_id,
    }


def job_detail(
    job: Job, deliveries: list[Delivery], attempts: list[DeliveryAttempt]
) -> dict[str, Any]:
    """A job with its deliveries and their attempts as :class:`JobDetail`."""
    return job_view(job) | {
        "inputs": [i.sop_instance_uid for i in job.inputs],
        "outputs": [
            {
                "id": o.id,
                "kind": o.kind,
                "sop_class_uid": o.sop_class_uid,
                "sop_instance_uid": o.sop_instance_uid,
                "series_instance_uid": o.series_instance_uid,
                "path": o.path,
                "size_bytes": o.size_bytes,
                "sha256": o.sha256,
                "variant": o.variant,
            }
            for o in job.outputs
        ],
        "deliveries": [
            {
                "id": d.id,
                "destination": d.destination,
                "state": d.state.value,
                "attempts": d.attempts,
                "next_attempt_at": d.next_attempt_at,
                "delivered_at": d.delivered_at,
                "last_error": d.last_error,
            }
            for d in deliveries
        ],
        "delivery_attempts": [
            {
                "delivery_id": a.delivery_id,
                "output_id": a.output_id,
                "attempt": a.attempt,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "succeeded": a.succeeded,
                "dimse_status": a.dimse_status,
                "http_status": a.http_status,
                "error": a.error,
            }
            for a in attempts
        ],
        "events": [{"at": e.at, "kind": e.kind, "detail": e.detail} for e in job.events],
        "summary": job.summary,
        "result_uids": job.result_uids,
        "plan": job.plan,
    }


def study_view(row: StudyRow) -> dict[str, Any]:
    """A study with its modalities and job counts as :class:`StudyView`."""
    s = row.study
    return {
        "study_instance_uid": s.study_instance_uid,
        "first_received_at": s.first_received_at,
        "last_received_at": s.last_received_at,
        "instance_count": s.instance_count,
        "completed_at": s.completed_at,
        "modalities": list(row.modalities),
        "jobs": row.jobs,
    }
