"""WADO-RS Retrieve (PS3.18 10.4): studies, series and instances, their metadata, bulk data.

Frames and rendered images of an instance are added by
:func:`node.http.dicomweb.routes_frames.frame_routes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from node.http.dicomweb.openapi import (
    DICOM_JSON,
    DICOM_JSON_RESPONSE,
    MULTIPART_RESPONSE,
    documented,
)
from node.http.dicomweb.paths import SeriesUid, SopUid, StudyUid, base_url
from node.http.dicomweb.query import DicomwebQueries, HeldFile, bulk_value, metadata_json
from node.http.dicomweb.routes_frames import frame_routes
from node.http.errors import ApiError
from node.multipart import multipart_bytes, multipart_files, new_boundary


def retrieve_routes(router: APIRouter, queries: DicomwebQueries) -> None:
    """Add the WADO-RS routes over ``queries``, frames and rendered images last."""

    def held(study: str, series: str | None = None, sop: str | None = None) -> list[HeldFile]:
        found = queries.files(study, series, sop)
        if not found:
            raise ApiError(404, "not_found", "no such study, series or instance held by this node")
        return found

    def metadata(request: Request, files: Sequence[HeldFile]) -> Response:
        base = base_url(request)

        def bulk_url(h: HeldFile, tag: int) -> str:
            f = h.file
            return (
                f"{base}/studies/{f.study_instance_uid}/series/{f.series_instance_uid}"
                f"/instances/{f.sop_instance_uid}/bulkdata/{tag:08X}"
            )

        return JSONResponse([metadata_json(h, bulk_url) for h in files], media_type=DICOM_JSON)

    @router.get(
        "/studies/{study_uid}",
        summary="WADO-RS Retrieve Study",
        responses=MULTIPART_RESPONSE | documented(404),
    )
    def retrieve_study(study_uid: StudyUid) -> Response:
        return _retrieve(held(study_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}",
        summary="WADO-RS Retrieve Series",
        responses=MULTIPART_RESPONSE | documented(404),
    )
    def retrieve_series(study_uid: StudyUid, series_uid: SeriesUid) -> Response:
        return _retrieve(held(study_uid, series_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
        summary="WADO-RS Retrieve Instance",
        responses=MULTIPART_RESPONSE | documented(404),
    )
    def retrieve_instance(study_uid: StudyUid, series_uid: SeriesUid, sop_uid: SopUid) -> Response:
        return _retrieve(held(study_uid, series_uid, sop_uid))

    @router.get(
        "/studies/{study_uid}/metadata",
        summary="WADO-RS Retrieve Study Metadata",
        responses=DICOM_JSON_RESPONSE | documented(404),
    )
    def study_metadata(request: Request, study_uid: StudyUid) -> Response:
        return metadata(request, held(study_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}/metadata",
        summary="WADO-RS Retrieve Series Metadata",
        responses=DICOM_JSON_RESPONSE | documented(404),
    )
    def series_metadata(request: Request, study_uid: StudyUid, series_uid: SeriesUid) -> Response:
        return metadata(request, held(study_uid, series_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
        summary="WADO-RS Retrieve Instance Metadata",
        responses=DICOM_JSON_RESPONSE | documented(404),
    )
    def instance_metadata(
        request: Request, study_uid: StudyUid, series_uid: SeriesUid, sop_uid: SopUid
    ) -> Response:
        return metadata(request, held(study_uid, series_uid, sop_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/{tag}",
        summary="WADO-RS Retrieve Bulk Data",
        responses=MULTIPART_RESPONSE | documented(404),
    )
    def bulkdata(
        study_uid: StudyUid,
        series_uid: SeriesUid,
        sop_uid: SopUid,
        tag: Annotated[str, Path(pattern=r"^[0-9A-Fa-f]{8}$")],
    ) -> Response:
        [h] = held(study_uid, series_uid, sop_uid)[:1]
        value = bulk_value(h, int(tag, 16))
        if value is None:
            raise ApiError(404, "not_found", f"no bulk data element {tag} in this instance")
        boundary = new_boundary()
        return StreamingResponse(
            multipart_bytes([(value, "application/octet-stream")], boundary),
            media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
        )

    frame_routes(router, lambda study, series, sop: held(study, series, sop)[0])


def _retrieve(files: Sequence[HeldFile]) -> Response:
    """The files as one multipart/related response, streamed."""
    boundary = new_boundary()
    parts = [(FsPath(h.file.path), _part_type(h)) for h in files]
    return StreamingResponse(
        multipart_files(parts, boundary),
        media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


def _part_type(held: HeldFile) -> str:
    syntax = held.file.transfer_syntax_uid or str(
        held.header.file_meta.get("TransferSyntaxUID", "")
    )
    return f"application/dicom; transfer-syntax={syntax}" if syntax else "application/dicom"
