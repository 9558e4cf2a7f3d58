"""The HTTP API (FastAPI): health, metrics, jobs, studies, inference requests, DICOMweb.

OpenAPI is served at ``/openapi.json`` and browsable at ``/docs``. Every
endpoint except ``/healthz`` (and ``/metrics``, unless
``api.protect_metrics``) needs ``Authorization: Bearer <token>``. A PACS's
sender token (``sources.<name>.api_tokens``) opens STOW-RS only, not
QIDO-RS/WADO-RS nor ``/api``. Every error has one JSON shape::

    {"error": {"status": 404, "code": "not_found", "message": "no job 7", "details": []}}
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from node.config import ApiSettings
from node.db.actions import ActionRefused, JobActions, request_json
from node.db.listing import JobFilter, Listings, StudyFilter, StudyRow
from node.db.models import Delivery, DeliveryAttempt, Job, JobState
from node.db.store import AuditStore
from node.ingress_dicomweb import StowIngress
from node.metrics import NodeMetrics

logger = logging.getLogger(__name__)

#: A DICOM UID as it may appear in a URL (PS3.5 9.1).
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._:\-]{0,63}$"
_MAX_ID = 2**31 - 1
_MAX_OFFSET = 10**9

Uid = Annotated[str, Field(pattern=UID_PATTERN, max_length=64)]
Name = Annotated[str, Field(pattern=_NAME_PATTERN, max_length=64)]


# -- errors ------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str
    details: list[dict[str, Any]] = []


class ErrorBody(BaseModel):
    """The one error shape of the API."""

    error: ErrorDetail


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
    507: "insufficient_storage",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"status": status, "code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        headers = getattr(exc, "headers", None)
        if (
            exc.status_code == 405
        ):  # every method the path takes, not only the first matching route's
            headers = {"Allow": ", ".join(_allowed_methods(request))}
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"location": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"location": "?", "message": "invalid"}
        return error_response(
            422, "invalid_request", f"{first['location']}: {first['message']}", details
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error answering an API request")
        return error_response(
            500, "internal_error", f"internal error ({type(exc).__name__}); see the node's log"
        )


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods - {"HEAD"})


# -- authentication -------------------------------------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token from api.tokens or AINODE_API_TOKEN; "
    "/dicom-web also takes a source's sender token (sources.<name>.api_tokens)",
)

NO_TOKEN_MESSAGE = (
    "API authentication is on but no token is configured: add one under api.tokens in the "
    "configuration file or set the AINODE_API_TOKEN environment variable, then send "
    "'Authorization: Bearer <token>'. For local use only, set api.auth_disabled: true."
)


def bearer_auth(
    api: ApiSettings, tokens: tuple[str, ...], sender_tokens: Mapping[str, str] | None = None
) -> Callable[..., str | None]:
    """A dependency that checks ``Authorization: Bearer <token>`` in constant time.

    Parameters
    ----------
    api : ApiSettings
        ``auth_disabled`` turns the check off (no sender is then known).
    tokens : tuple of str
        The API tokens.
    sender_tokens : mapping of str to str, optional
        ``token -> source name`` for the tokens PACSs send STOW-RS with; given
        only where they are accepted (``/dicom-web``), never for the REST API.

    Returns
    -------
    callable
        The dependency; it returns the name of the source whose sender token
        was presented, else ``None`` (an API token, or authentication off).
    """
    accepted = [(t.encode("utf-8"), None) for t in tokens]
    accepted += [(t.encode("utf-8"), name) for t, name in (sender_tokens or {}).items()]

    def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str | None:
        if api.auth_disabled:
            return None
        if not accepted:
            raise ApiError(503, "auth_not_configured", NO_TOKEN_MESSAGE)
        challenge = {"WWW-Authenticate": 'Bearer realm="ainode"'}
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'", challenge)
        given = credentials.credentials.encode("utf-8")
        matched, sender = False, None
        for token, name in accepted:  # every token is compared: the time does not say which matched
            if hmac.compare_digest(given, token):
                matched, sender = True, name
        if not matched:
            raise ApiError(401, "unauthorized", "the API token is not valid", challenge)
        return sender

    return check


# -- views ---------------------------------------------------------------------------


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
    #: The job that replaced this one (``late_series: rerun``); its rejection note withdraws these results.
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
    }


def study_view(row: StudyRow) -> dict[str, Any]:
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


# -- the application ----------------------------------------------------------------------


@dataclass(frozen=True)
class ApiContext:
    """What the API needs from the node (wired in :mod:`node.app`)."""

    store: AuditStore
    metrics: NodeMetrics
    health: dict[str, Any]
    api: ApiSettings
    tokens: tuple[str, ...]
    actions: JobActions
    stow: StowIngress
    #: ``token -> source name``: what a PACS presents when it STOWs (``/dicom-web`` only).
    sender_tokens: Mapping[str, str] = field(default_factory=dict)
    destinations: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    known_pipeline: Callable[[str], bool] = lambda _name: True
    wake: Callable[[str], None] = lambda _stage: None

    @property
    def listings(self) -> Listings:
        return Listings(self.store)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "The request body cannot be parsed (not JSON, not UTF-8)",
    },
    401: {"model": ErrorBody, "description": "Missing or invalid API token"},
    422: {"model": ErrorBody, "description": "Invalid request (the message names the parameter)"},
    503: {"model": ErrorBody, "description": "No API token configured"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Not found"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "Not in a state for this"}
}

JobId = Annotated[int, Path(ge=1, le=_MAX_ID, description="Job id")]
#: An ISO 8601 timestamp (a zone-less one is UTC). Parsed here, not by pydantic, which would
#: also take a bare number as a Unix time.
Timestamp = Annotated[
    str | None,
    Query(
        max_length=40,
        json_schema_extra={"format": "date-time"},
        description="ISO 8601 date-time; UTC when no zone is given",
    ),
]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=_MAX_OFFSET)]


def create_api(ctx: ApiContext) -> FastAPI:
    """Build the FastAPI application over the node's services."""
    from node.dicomweb import dicomweb_router

    app = FastAPI(
        title="ainode",
        version=ctx.health.get("version", "0"),
        summary="Clinical AI node API",
        description=__doc__,
    )
    app.state.public_url = ctx.api.public_url
    _install_error_handlers(app)
    auth = Depends(bearer_auth(ctx.api, ctx.tokens))

    @app.get("/healthz", tags=["node"])
    def healthz() -> dict[str, Any]:
        """Liveness and totals (no authentication; no patient data)."""
        return {"status": "ok", **ctx.health, "counts": ctx.store.counts()}

    metrics_deps = [auth] if ctx.api.protect_metrics else []

    @app.get(
        "/metrics",
        tags=["node"],
        dependencies=metrics_deps,
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def prometheus() -> Response:
        """Prometheus text exposition format."""
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    deps = [
        auth,
        Depends(_strict_query),
    ]  # unknown query parameters are an error, not silently ignored
    for register in (_job_routes, _study_routes, _request_routes):
        register(app, ctx, deps)
    app.include_router(
        dicomweb_router(ctx), prefix="/dicom-web"
    )  # its own check: API and sender tokens
    return app


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _strict_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route.dependant)
    unknown = sorted(k for k in request.query_params if k not in known)
    if unknown:
        raise ApiError(
            422, "invalid_request", f"unknown query parameter(s): {', '.join(unknown)[:200]}"
        )
    repeated = sorted({k for k in request.query_params if len(request.query_params.getlist(k)) > 1})
    if repeated:
        raise ApiError(
            422,
            "invalid_request",
            f"query parameter(s) given more than once: {', '.join(repeated)}",
        )


def _job_routes(app: FastAPI, ctx: ApiContext, deps: list[Any]) -> None:
    @app.get(
        "/api/jobs", response_model=JobPage, tags=["jobs"], dependencies=deps, responses=ERRORS
    )
    def list_jobs(
        limit: Limit = 50,
        offset: Offset = 0,
        state: JobState | None = None,
        pipeline: Annotated[str | None, Query(pattern=_NAME_PATTERN)] = None,
        modality: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{1,16}$")] = None,
        route: Annotated[str | None, Query(pattern=_NAME_PATTERN)] = None,
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
            _aware(created_after, "created_after"),
            _aware(created_before, "created_before"),
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
        responses=ERRORS | _NOT_FOUND,
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
        responses=ERRORS | _NOT_FOUND | _CONFLICT,
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
        responses=ERRORS | _NOT_FOUND | _CONFLICT,
    )
    def resend_job(job_id: JobId, body: ResendBody | None = None) -> dict[str, Any]:
        """Send a job's results again (the same objects, same UIDs) to its or the named destinations."""
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
        responses=ERRORS | _NOT_FOUND | _CONFLICT,
    )
    def cancel_job(job_id: JobId) -> dict[str, Any]:
        """Cancel a queued job (a running job is not interrupted)."""
        _act(lambda: ctx.actions.cancel(job_id), job_id)
        return {"job_id": job_id, "action": "cancel"}


def _study_routes(app: FastAPI, ctx: ApiContext, deps: list[Any]) -> None:
    @app.get(
        "/api/studies",
        response_model=StudyPage,
        tags=["studies"],
        dependencies=deps,
        responses=ERRORS,
    )
    def list_studies(
        limit: Limit = 50,
        offset: Offset = 0,
        modality: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{1,16}$")] = None,
        pipeline: Annotated[str | None, Query(pattern=_NAME_PATTERN)] = None,
        study_instance_uid: Annotated[str | None, Query(pattern=UID_PATTERN, max_length=64)] = None,
        received_after: Timestamp = None,
        received_before: Timestamp = None,
    ) -> dict[str, Any]:
        """Studies, most recently received first, filtered and paginated."""
        where = StudyFilter(
            modality,
            study_instance_uid,
            _aware(received_after, "received_after"),
            _aware(received_before, "received_before"),
            pipeline,
        )
        rows, total = ctx.listings.studies(where, limit, offset)
        return {
            "items": [study_view(r) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    @app.get(
        "/api/studies/{study_instance_uid}",
        response_model=StudyView,
        tags=["studies"],
        dependencies=deps,
        responses=ERRORS | _NOT_FOUND,
    )
    def get_study(
        study_instance_uid: Annotated[str, Path(pattern=UID_PATTERN, max_length=64)],
    ) -> dict[str, Any]:
        row = ctx.listings.study(study_instance_uid)
        if row is None:
            raise ApiError(404, "not_found", f"no study {study_instance_uid}")
        return study_view(row)


def _request_routes(app: FastAPI, ctx: ApiContext, deps: list[Any]) -> None:
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
        if body.source not in ctx.sources:
            raise ApiError(
                422,
                "invalid_request",
                f"unknown source {body.source!r} (configured: {', '.join(sorted(ctx.sources)) or 'none'})",
            )
        unknown = [p for p in body.pipelines if not ctx.known_pipeline(p)]
        unknown += [d for d in body.destinations or [] if d not in ctx.destinations]
        if unknown:
            raise ApiError(
                422,
                "invalid_request",
                f"unknown pipeline(s) or destination(s): {', '.join(unknown)}",
            )
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
        responses=ERRORS | _NOT_FOUND,
    )
    def get_request(request_id: Annotated[int, Path(ge=1, le=_MAX_ID)]) -> dict[str, Any]:
        view = ctx.actions.get_request(request_id)
        if view is None:
            raise ApiError(404, "not_found", f"no inference request {request_id}")
        return request_json(view)


def _act(action: Callable[[], Any], job_id: int) -> Any:
    try:
        result = action()
    except ActionRefused as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    if result is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    return result


def _aware(text: str | None, name: str) -> datetime | None:
    """An ISO 8601 query timestamp; without a zone it is UTC; all are compared in UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"query.{name}: not an ISO 8601 date-time") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ApiError(
            422, "invalid_request", f"timestamp out of range: {value.isoformat()}"
        ) from exc
