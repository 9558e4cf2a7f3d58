"""The HTTP API (FastAPI): health, metrics, jobs, studies, inference requests, DICOMweb.

OpenAPI is served at ``/openapi.json`` and browsable at ``/docs``. Every
endpoint except ``/healthz`` (and ``/metrics``, unless
``api.protect_metrics``) needs ``Authorization: Bearer <token>``. A PACS's
sender token (``sources.<name>.api_tokens``) opens STOW-RS only, not
QIDO-RS/WADO-RS nor ``/api``. Every error has one JSON shape::

    {"error": {"status": 404, "code": "not_found", "message": "no job 7", "details": []}}
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from node.http.auth import bearer_auth
from node.http.context import ApiContext
from node.http.dicomweb import dicomweb_router
from node.http.errors import install_error_handlers
from node.http.params import strict_query
from node.http.routes_health import health_routes
from node.http.routes_jobs import job_routes
from node.http.routes_requests import request_routes
from node.http.routes_studies import study_routes

__all__ = ["ApiContext", "create_api"]


def create_api(ctx: ApiContext) -> FastAPI:
    """Build the FastAPI application over the node's services."""
    app = FastAPI(
        title="ainode",
        version=ctx.health.get("version", "0"),
        summary="Clinical AI node API",
        description=__doc__,
    )
    app.state.public_url = ctx.api.public_url
    install_error_handlers(app)
    auth = Depends(bearer_auth(ctx.api, ctx.tokens))
    health_routes(app, ctx, auth)
    # unknown query parameters are an error, not silently ignored
    deps = [auth, Depends(strict_query)]
    for register in (job_routes, study_routes, request_routes):
        register(app, ctx, deps)
    # /dicom-web makes its own check: API and sender tokens
    app.include_router(dicomweb_router(ctx), prefix="/dicom-web")
    return app
