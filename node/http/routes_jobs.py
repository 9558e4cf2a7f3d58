"""``/api/jobs``: list and inspect jobs; re-run, re-send and cancel them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Query

from node.db.actions import ActionRefused
from node.db.listing import JobFilter
from node.db.models import JobState
from node.http.context import ApiContext
from node.http.errors import CONFLICT, ERRORS, NOT_FOUND, ApiError
from node.http.params import JobId, Limit, Offset, Timestamp, aware
from node.http.schemas import (
    NAME_PATTERN,
    UID_PATTERN,
    ActionResult,
    JobDetail,
    JobPage,
    ResendBody,
    job_detail,
    job_view,
)

T = TypeVar("T")


def job_routes(app: FastAPI, ctx: ApiContext, deps: list[Any]) -> None:
    """Add the job routes, each guarded by ``deps``."""

    @app.get(
        "/api/jobs", response_model=JobPage, tags=["jobs"], dependencies=deps, responses=ERRORS
    )
    def list_jobs(
        limit: Limit = 50,
        offset: Offset = 0,
        state: JobState | None = None,
        pipeline: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        modality: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{1,16}$")] = None,
        route: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        study_instance_uid: Annotated[str | None, Query(pattern=UID_PATTERN, max_length=64)] = None,
        created_after: Timestamp = None,
        created_before: Timestamp = None,
    ) -> dict[str, Any]:
        """Jobs, newest first, filtered and paginated."""
        where = JobFilter(
            state,
            pipeline,
            modality,
            route,
            study_instance_uid,
            aware(created_after, "created_after"),
            aware(created_before, "created_before"),
        )
        rows, total = ctx.listings.jobs(where, limit, offset)
        return {
            "items": [job_view(j) for j in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    @app.get(
        "/api/jobs/{job_id}",
        response_model=JobDetail,
        tags=["jobs"],
        dependencies=deps,
        responses=ERRORS | NOT_FOUND,
    )
    def get_job(job_id: JobId) -> dict[str, Any]:
        """One job: inputs, outputs, deliveries, every attempt and event."""
        found = ctx.store.get_job(job_id)
        if found is None:
            raise ApiError(404, "not_found", f"no job {job_id}")
        return job_detail(*found)

    @app.post(
        "/api/jobs/{job_id}/rerun",
        response_model=ActionResult,
        status_code=202,
        tags=["jobs"],
        dependencies=deps,
        responses=ERRORS | NOT_FOUND | CONFLICT,
    )
    def rerun_job(job_id: JobId) -> dict[str, Any]:
        """Queue a new job with the same inputs, pipeline and destinations (new result UIDs)."""
        new_id = _act(lambda: ctx.actions.rerun(job_id), job_id)
        ctx.wake("runner")
        return {"job_id": job_id, "action": "rerun", "new_job_id": new_id}

    @app.post(
        "/api/jobs/{job_id}/resend",
        response_model=ActionResult,
        status_code=202,
        tags=["jobs"],
        dependencies=deps,
        responses=ERRORS | NOT_FOUND | CONFLICT,
        description=(
            "Send a job's results again (the same objects, same UIDs) "
            "to its or the named destinations."
        ),
    )
    def resend_job(job_id: JobId, body: ResendBody | None = None) -> dict[str, Any]:
        names = list(body.destinations) if body else []
        unknown = [n for n in names if n not in ctx.destinations]
        if unknown:
            raise ApiError(422, "invalid_request", f"unknown destination(s): {', '.join(unknown)}")
        sent = _act(lambda: ctx.actions.resend(job_id, names), job_id)
        ctx.wake("egress")
        return {"job_id": job_id, "action": "resend", "destinations": sent}

    @app.post(
        "/api/jobs/{job_id}/cancel",
        response_model=ActionResult,
        tags=["jobs"],
        dependencies=deps,
        responses=ERRORS | NOT_FOUND | CONFLICT,
    )
    def cancel_job(job_id: JobId) -> dict[str, Any]:
        """Cancel a queued job (a running job is not interrupted)."""
        _act(lambda: ctx.actions.cancel(job_id), job_id)
        return {"job_id": job_id, "action": "cancel"}


def _act(action: Callable[[], T | None], job_id: int) -> T:
    """Run a job action: 409 when the job is not in a state for it, 404 when there is no job."""
    try:
        result = action()
    except ActionRefused as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    if result is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    return result
