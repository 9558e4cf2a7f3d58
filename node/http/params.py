"""The REST API's path and query parameters, checked strictly.

Unknown or repeated query parameters are an error, not silently ignored
(:func:`strict_query`); timestamps are ISO 8601, a zone-less one UTC
(:func:`aware`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from node.http.errors import ApiError

#: The largest id a path takes (a signed 32-bit integer).
MAX_ID = 2**31 - 1
_MAX_OFFSET = 10**9

JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="Job id")]
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


def strict_query(request: Request) -> None:
    """A dependency: 422 for a query parameter the route does not take, or one given twice."""
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


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def aware(text: str | None, name: str) -> datetime | None:
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
