"""``/api/inference-requests``: pull a study from a source, analyse it, send the results."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path

from node.db.actions import request_json
from node.http.context import ApiContext
from node.http.errors import ERRORS, NOT_FOUND, ApiError
from node.http.params import MAX_ID, Limit, Offset
from node.http.schemas import InferenceRequestIn, InferenceRequestPage, InferenceRequestView


def request_routes(app: FastAPI, ctx: ApiContext, deps: list[Any]) -> None:
    """Add the inference request routes, each guarded by ``deps``."""

    @app.post(
        "/api/inference-requests",
        response_model=InferenceRequestView,
        status_code=202,
        tags=["inference requests"],
        dependencies=deps,
        responses=ERRORS,
    )
    def create_request(body: InferenceRequestIn) -> dict[str, Any]:
        """Pull a study from a configured source, run pipelines on it, send the results."""
        _check_names(ctx, body)
        request_id = ctx.actions.create_request(
            body.study_instance_uid,
            body.source,
            body.pipelines,
            body.destinations if body.destinations is not None else ["*"],
        )
        ctx.wake("retrieve")
        view = ctx.actions.get_request(request_id)
        if view is None:
            raise ApiError(500, "internal_error", f"inference request {request_id} vanished")
        return request_json(view)

    @app.get(
        "/api/inference-requests",
        response_model=InferenceRequestPage,
        tags=["inference requests"],
        dependencies=deps,
        responses=ERRORS,
    )
    def list_requests(limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
        rows, total = ctx.actions.list_requests(limit, offset)
        items = [
            request_json(v) for v in (ctx.actions.get_request(r.id) for r in rows) if v is not None
        ]
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    @app.get(
        "/api/inference-requests/{request_id}",
        response_model=InferenceRequestView,
        tags=["inference requests"],
        dependencies=deps,
        responses=ERRORS | NOT_FOUND,
    )
    def get_request(request_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> dict[str, Any]:
        view = ctx.actions.get_request(request_id)
        if view is None:
            raise ApiError(404, "not_found", f"no inference request {request_id}")
        return request_json(view)


def _check_names(ctx: ApiContext, body: InferenceRequestIn) -> None:
    """422 for a source, pipeline or destination the node is not configured with."""
    if body.source not in ctx.sources:
        configured = ", ".join(sorted(ctx.sources)) or "none"
        raise ApiError(
            422,
            "invalid_request",
            f"unknown source {body.source!r} (configured: {configured})",
        )
    unknown = [p for p in body.pipelines if not ctx.known_pipeline(p)]
    unknown += [d for d in body.destinations or [] if d not in ctx.destinations]
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"unknown pipeline(s) or destination(s): {', '.join(unknown)}",
        )
