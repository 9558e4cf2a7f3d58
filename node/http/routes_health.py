"""``/healthz`` (liveness, no authentication) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response

from node.http.context import ApiContext


def health_routes(app: FastAPI, ctx: ApiContext, auth: Any) -> None:
    """Add the node's health and metrics routes; ``auth`` guards ``/metrics`` when
    ``api.protect_metrics`` is set."""

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
