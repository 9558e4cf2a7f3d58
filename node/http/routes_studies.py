"""``/api/studies``: the studies the node has received, with their jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path, Query

from node.db.listing import StudyFilter
from node.http.context import ApiContext
from node.http.errors import ERRORS, NOT_FOUND, ApiError
from node.http.params import Limit, Offset, Timestamp, aware
from node.http.schemas import NAME_PATTERN, UID_PATTERN, StudyPage, StudyView, study_view


def study_routes(app: FastAPI, ctx: ApiContext, deps: list[Any]) -> None:
    """Add the study routes, each guarded by ``deps``."""

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
        pipeline: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        study_instance_uid: Annotated[str | None, Query(pattern=UID_PATTERN, max_length=64)] = None,
        received_after: Timestamp = None,
        received_before: Timestamp = None,
    ) -> dict[str, Any]:
        """Studies, most recently received first, filtered and paginated."""
        where = StudyFilter(
            modality,
            study_instance_uid,
            aware(received_after, "received_after"),
            aware(received_before, "received_before"),
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
        responses=ERRORS | NOT_FOUND,
    )
    def get_study(
        study_instance_uid: Annotated[str, Path(pattern=UID_PATTERN, max_length=64)],
    ) -> dict[str, Any]:
        row = ctx.listings.study(study_instance_uid)
        if row is None:
            raise ApiError(404, "not_found", f"no study {study_instance_uid}")
        return study_view(row)
