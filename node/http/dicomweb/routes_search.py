"""QIDO-RS Search (PS3.18 10.6): ``GET /studies``, ``/series``, ``/instances`` and nested forms.

Searches run over the node's results and, with ``api.serve_inputs``, its
inputs (:class:`node.http.dicomweb.query.DicomwebQueries`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from node.http.dicomweb.openapi import DICOM_JSON, DICOM_JSON_RESPONSE, Responses, documented
from node.http.dicomweb.paths import SeriesUid, StudyUid, base_url
from node.http.dicomweb.query import DicomwebQueries, QueryError, check_query, to_json
from node.http.errors import ApiError

_QIDO_RESPONSES: Responses = (
    DICOM_JSON_RESPONSE | {204: {"description": "No match"}} | documented(400)
)


def search_routes(router: APIRouter, queries: DicomwebQueries) -> None:
    """Add the QIDO-RS routes over ``queries``."""

    def answer(
        request: Request, search: Callable[[dict[str, str], Callable[[str], str]], list[Any]]
    ) -> Response:
        base = base_url(request)
        query = dict(request.query_params)
        try:
            check_query(query)
            found = search(query, lambda path: f"{base}/{path}")
        except QueryError as exc:
            raise ApiError(400, "bad_request", str(exc)) from exc
        if not found:
            return Response(status_code=204)
        return JSONResponse(to_json(found), media_type=DICOM_JSON)

    @router.get(
        "/studies",
        name="dicomweb_search_studies",
        summary="QIDO-RS Search for Studies",
        responses=_QIDO_RESPONSES,
    )
    def search_studies(request: Request) -> Response:
        return answer(request, queries.studies)

    @router.get("/series", summary="QIDO-RS Search for Series", responses=_QIDO_RESPONSES)
    def search_series(request: Request) -> Response:
        return answer(request, queries.series)

    @router.get("/instances", summary="QIDO-RS Search for Instances", responses=_QIDO_RESPONSES)
    def search_instances(request: Request) -> Response:
        return answer(request, queries.instances)

    @router.get(
        "/studies/{study_uid}/series",
        summary="QIDO-RS Search for Series of a Study",
        responses=_QIDO_RESPONSES,
    )
    def search_study_series(request: Request, study_uid: StudyUid) -> Response:
        return answer(request, lambda q, url: queries.series(q, url, study_uid))

    @router.get(
        "/studies/{study_uid}/instances",
        summary="QIDO-RS Search for Instances of a Study",
        responses=_QIDO_RESPONSES,
    )
    def search_study_instances(request: Request, study_uid: StudyUid) -> Response:
        return answer(request, lambda q, url: queries.instances(q, url, study_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}/instances",
        summary="QIDO-RS Search for Instances of a Series",
        responses=_QIDO_RESPONSES,
    )
    def search_series_instances(
        request: Request, study_uid: StudyUid, series_uid: SeriesUid
    ) -> Response:
        return answer(request, lambda q, url: queries.instances(q, url, study_uid, series_uid))
