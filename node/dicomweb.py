"""The node's DICOMweb service under ``/dicom-web`` (PS3.18): STOW-RS in, QIDO-RS and WADO-RS out.

* ``POST /studies[/{study}]``: Store Instances (10.5). The multipart/related
  body is streamed to part files (never held in memory) and refused with 413
  once it crosses ``api.max_upload_mb``.
* ``GET /studies``, ``/series``, ``/instances`` (and nested forms): Search
  (10.6), over the node's results and, with ``api.serve_inputs``, its inputs.
* ``GET .../metadata`` and study/series/instance retrieval (10.4), plus the
  bulk data URIs the metadata points at.

The REST API's bearer tokens guard every endpoint. The sender tokens of
configured sources (``sources.<name>.api_tokens``) open STOW-RS only: a
PACS that sends studies cannot read what the node holds. A STOW-RS request
made with a sender token records that source as the sender of each
instance, so the study's completeness is checked against it
(:class:`node.assembler.CompletenessCheck`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from node import dicomweb_frames
from node.api import ApiContext, ApiError, ErrorBody, bearer_auth
from node.dicomweb_multipart import (
    ContentType,
    MultipartError,
    PartSpooler,
    multipart_bytes,
    multipart_files,
    new_boundary,
)
from node.dicomweb_query import (
    DicomwebQueries,
    HeldFile,
    QueryError,
    bulk_value,
    check_query,
    metadata_json,
    to_json,
)
from node.ingress_dicomweb import StoredItem

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_UID = r"^[0-9]+(\.[0-9]+)*$"
StudyUid = Annotated[str, Path(pattern=_UID, max_length=64)]
SeriesUid = Annotated[str, Path(pattern=_UID, max_length=64)]
SopUid = Annotated[str, Path(pattern=_UID, max_length=64)]

_STOW_BODY = {
    "requestBody": {
        "required": True,
        "description": 'multipart/related; type="application/dicom": one DICOM Part 10 file per part',
        "content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}},
    },
}
_DICOM_JSON_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}}},
}
_MULTIPART_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}}},
}


def _error(status: int, code: str, message: str) -> Exception:
    return ApiError(status, code, message)


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


_DESCRIPTIONS = {
    400: "Bad request (malformed body or query)",
    401: "Missing or invalid API token",
    404: "Not held by this node",
    406: "Not acceptable",
    413: "Body larger than api.max_upload_mb",
    415: "Unsupported media type",
    422: "Invalid path parameter",
    503: "No API token configured",
    507: "Insufficient storage",
}


def _base_url(request: Request) -> str:
    """The DICOMweb root for links: ``api.public_url`` + ``/dicom-web``, else from the request."""
    public = request.app.state.public_url
    if public:
        return f"{public.rstrip('/')}/dicom-web"
    root = str(request.url_for("dicomweb_search_studies")).rstrip("/")
    return root.rsplit("/studies", 1)[0]


_QIDO_RESPONSES = _DICOM_JSON_RESPONSE | {204: {"description": "No match"}} | _documented(400)


def dicomweb_router(ctx: ApiContext) -> APIRouter:
    """The ``/dicom-web`` routes over the node's services."""
    router = APIRouter(tags=["dicomweb"], responses=_documented(401, 422, 503))
    store_auth = bearer_auth(ctx.api, ctx.tokens, ctx.sender_tokens)  # API and sender tokens
    stow = APIRouter(dependencies=[Depends(store_auth)])
    _stow_routes(stow, ctx, store_auth)
    reads = APIRouter(dependencies=[Depends(bearer_auth(ctx.api, ctx.tokens))])  # API tokens only
    queries = DicomwebQueries(ctx.listings, ctx.api.serve_inputs)
    _qido_routes(reads, queries)
    _wado_routes(reads, queries)
    router.include_router(stow)
    router.include_router(reads)
    return router


# -- STOW-RS ---------------------------------------------------------------------------


def _stow_routes(router: APIRouter, ctx: ApiContext, auth: Callable[..., str | None]) -> None:
    max_bytes = ctx.api.max_upload_mb * 1024 * 1024
    # The configured source whose sender token the request carried: the router's own check,
    # run once per request (FastAPI caches a dependency's value). A default, not an Annotated
    # alias: string annotations are resolved in the module's globals, where `auth` is not.
    sender_of = Depends(auth)

    async def store(request: Request, study_uid: str | None, sender: str | None) -> Response:
        content_type = ContentType.parse(request.headers.get("content-type"))
        if content_type.media_type != "multipart/related":
            raise _error(
                415,
                "unsupported_media_type",
                'STOW-RS takes multipart/related; type="application/dicom"',
            )
        part_type = content_type.params.get("type", "application/dicom").lower()
        if part_type != "application/dicom":
            raise _error(
                415,
                "unsupported_media_type",
                f"only application/dicom parts are accepted, not {part_type!r}",
            )
        _check_accept(request.headers.get("accept"))
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise _error(
                413,
                "payload_too_large",
                f"request body larger than the limit of {ctx.api.max_upload_mb} MB (api.max_upload_mb)",
            )
        spooler = _spooler(content_type, ctx, max_bytes)
        try:
            async for chunk in request.stream():
                spooler.feed(chunk)
            parts = spooler.finish()
            client = request.client.host if request.client else None
            outcome = await run_in_threadpool(ctx.stow.ingest, parts, study_uid, client, sender)
        except MultipartError as exc:
            raise _error(exc.status_code, _code(exc.status_code), str(exc)) from exc
        finally:
            await run_in_threadpool(spooler.cleanup)
        base = _base_url(request)
        retrieve = _instance_url(base) if ctx.api.serve_inputs else None
        study_url = f"{base}/studies/{study_uid}" if study_uid and ctx.api.serve_inputs else None
        body = outcome.response_dataset(retrieve, study_url).to_json_dict()
        return JSONResponse(body, status_code=outcome.http_status, media_type=DICOM_JSON)

    @router.post(
        "/studies",
        openapi_extra=_STOW_BODY,
        summary="STOW-RS Store Instances",
        responses={
            200: {"content": {DICOM_JSON: {}}},
            202: {"content": {DICOM_JSON: {}}},
            409: {"content": {DICOM_JSON: {}}},
        }
        | _documented(400, 406, 413, 415, 507),
    )
    async def stow_studies(request: Request, sender: str | None = sender_of) -> Response:
        return await store(request, None, sender)

    @router.post(
        "/studies/{study_uid}",
        openapi_extra=_STOW_BODY,
        summary="STOW-RS Store Instances (one study)",
        responses={
            200: {"content": {DICOM_JSON: {}}},
            202: {"content": {DICOM_JSON: {}}},
            409: {"content": {DICOM_JSON: {}}},
        }
        | _documented(400, 406, 413, 415, 507),
    )
    async def stow_study(
        request: Request, study_uid: StudyUid, sender: str | None = sender_of
    ) -> Response:
        return await store(request, study_uid, sender)


def _spooler(content_type: ContentType, ctx: ApiContext, max_bytes: int) -> PartSpooler:
    try:
        return PartSpooler(
            content_type.params.get("boundary", ""), ctx.stow.part_directory, max_bytes
        )
    except MultipartError as exc:
        raise _error(400, "bad_request", str(exc)) from exc


def _check_accept(accept: str | None) -> None:
    if not accept:
        return
    ok = ("application/dicom+json", "application/json", "*/*", "application/*")
    if not any(a.split(";")[0].strip().lower() in ok for a in accept.split(",")):
        raise _error(406, "not_acceptable", "STOW-RS responses are application/dicom+json")


def _code(status: int) -> str:
    return {413: "payload_too_large", 507: "insufficient_storage"}.get(status, "bad_request")


def _instance_url(base: str) -> Callable[[StoredItem], str]:
    def url(item: StoredItem) -> str:
        return (
            f"{base}/studies/{item.study_instance_uid}/series/{item.series_instance_uid}"
            f"/instances/{item.sop_instance_uid}"
        )

    return url


# -- QIDO-RS ---------------------------------------------------------------------------


def _qido_routes(router: APIRouter, queries: DicomwebQueries) -> None:
    def answer(
        request: Request, search: Callable[[dict[str, str], Callable[[str], str]], list[Any]]
    ) -> Response:
        base = _base_url(request)
        query = dict(request.query_params)
        try:
            check_query(query)
            found = search(query, lambda path: f"{base}/{path}")
        except QueryError as exc:
            raise _error(400, "bad_request", str(exc)) from exc
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


# -- WADO-RS ---------------------------------------------------------------------------


def _wado_routes(router: APIRouter, queries: DicomwebQueries) -> None:
    def held(study: str, series: str | None = None, sop: str | None = None) -> list[HeldFile]:
        found = queries.files(study, series, sop)
        if not found:
            raise _error(404, "not_found", "no such study, series or instance held by this node")
        return found

    def retrieve(files: Sequence[HeldFile]) -> Response:
        boundary = new_boundary()
        parts = [(FsPath(h.file.path), _part_type(h)) for h in files]
        return StreamingResponse(
            multipart_files(parts, boundary),
            media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        )

    def metadata(request: Request, files: Sequence[HeldFile]) -> Response:
        base = _base_url(request)

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
        responses=_MULTIPART_RESPONSE | _documented(404),
    )
    def retrieve_study(study_uid: StudyUid) -> Response:
        return retrieve(held(study_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}",
        summary="WADO-RS Retrieve Series",
        responses=_MULTIPART_RESPONSE | _documented(404),
    )
    def retrieve_series(study_uid: StudyUid, series_uid: SeriesUid) -> Response:
        return retrieve(held(study_uid, series_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
        summary="WADO-RS Retrieve Instance",
        responses=_MULTIPART_RESPONSE | _documented(404),
    )
    def retrieve_instance(study_uid: StudyUid, series_uid: SeriesUid, sop_uid: SopUid) -> Response:
        return retrieve(held(study_uid, series_uid, sop_uid))

    @router.get(
        "/studies/{study_uid}/metadata",
        summary="WADO-RS Retrieve Study Metadata",
        responses=_DICOM_JSON_RESPONSE | _documented(404),
    )
    def study_metadata(request: Request, study_uid: StudyUid) -> Response:
        return metadata(request, held(study_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}/metadata",
        summary="WADO-RS Retrieve Series Metadata",
        responses=_DICOM_JSON_RESPONSE | _documented(404),
    )
    def series_metadata(request: Request, study_uid: StudyUid, series_uid: SeriesUid) -> Response:
        return metadata(request, held(study_uid, series_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
        summary="WADO-RS Retrieve Instance Metadata",
        responses=_DICOM_JSON_RESPONSE | _documented(404),
    )
    def instance_metadata(
        request: Request, study_uid: StudyUid, series_uid: SeriesUid, sop_uid: SopUid
    ) -> Response:
        return metadata(request, held(study_uid, series_uid, sop_uid))

    @router.get(
        "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/{tag}",
        summary="WADO-RS Retrieve Bulk Data",
        responses=_MULTIPART_RESPONSE | _documented(404),
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
            raise _error(404, "not_found", f"no bulk data element {tag} in this instance")
        boundary = new_boundary()
        return StreamingResponse(
            multipart_bytes([(value, "application/octet-stream")], boundary),
            media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
        )

    _frame_routes(router, lambda study, series, sop: held(study, series, sop)[0])


def _part_type(held: HeldFile) -> str:
    syntax = held.file.transfer_syntax_uid or str(
        held.header.file_meta.get("TransferSyntaxUID", "")
    )
    return f"application/dicom; transfer-syntax={syntax}" if syntax else "application/dicom"


# -- WADO-RS frames and rendered (PS3.18 10.4.1.1.3, 10.4.1.1.5) ---------------------------

_INSTANCE = "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
FrameList = Annotated[
    str,
    Path(
        pattern=r"^[0-9]{1,9}(,[0-9]{1,9})*$",
        max_length=4096,
        description="Comma-separated 1-based frame numbers",
    ),
]
WindowParam = Annotated[
    str | None,
    Query(
        max_length=100,
        pattern=r"^[^,]+,[^,]+(,[A-Za-z_-]+)?$",
        description="center,width[,function]: the VOI window (function linear, linear-exact or sigmoid)",
    ),
]
ViewportParam = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9]{1,5},[0-9]{1,5}$",
        description="vw,vh: the largest image to return (aspect kept)",
    ),
]
QualityParam = Annotated[int, Query(ge=1, le=100, description="JPEG quality")]
_RENDERED_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            t: {"schema": {"type": "string", "format": "binary"}}
            for t in dicomweb_frames.RENDERED_MEDIA_TYPES
        }
    },
}
_FRAME_ERRORS = _documented(400, 404, 406)
_FRAMES_TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {
        "model": ErrorBody,
        "description": "The frames would make a response over the node's limit: ask for fewer",
    }
}


def _frame_routes(router: APIRouter, instance: Callable[[str, str, str], HeldFile]) -> None:
    @router.get(
        f"{_INSTANCE}/frames/{{frame_list}}",
        summary="WADO-RS Retrieve Frames",
        responses=_MULTIPART_RESPONSE | _FRAME_ERRORS | _FRAMES_TOO_LARGE,
        response_class=Response,
    )
    def retrieve_frames(
        request: Request,
        study_uid: StudyUid,
        series_uid: SeriesUid,
        sop_uid: SopUid,
        frame_list: FrameList,
    ) -> Response:
        """Frames as native bytes (application/octet-stream, the default) or as stored (image/*,
        transfer-syntax=*), one part per frame, in the order asked, streamed (PS3.18 10.4.1.1.5).
        A list may repeat frames, but hold no more entries than the instance has frames (nor over 1024)."""
        return _frames(
            instance(study_uid, series_uid, sop_uid), frame_list, request.headers.get("accept")
        )

    @router.get(
        f"{_INSTANCE}/rendered",
        summary="WADO-RS Retrieve Rendered Instance",
        responses=_RENDERED_RESPONSE | _FRAME_ERRORS,
        response_class=Response,
    )
    def rendered_instance(
        request: Request,
        study_uid: StudyUid,
        series_uid: SeriesUid,
        sop_uid: SopUid,
        window: WindowParam = None,
        viewport: ViewportParam = None,
        quality: QualityParam = 90,
    ) -> Response:
        """The instance (its first frame) as image/jpeg (the default) or image/png (PS3.18 10.4.1.1.3)."""
        return _rendered(
            instance(study_uid, series_uid, sop_uid),
            "1",
            request.headers.get("accept"),
            window,
            viewport,
            quality,
        )

    @router.get(
        f"{_INSTANCE}/frames/{{frame_list}}/rendered",
        summary="WADO-RS Retrieve Rendered Frame",
        responses=_RENDERED_RESPONSE | _FRAME_ERRORS,
        response_class=Response,
    )
    def rendered_frame(
        request: Request,
        study_uid: StudyUid,
        series_uid: SeriesUid,
        sop_uid: SopUid,
        frame_list: FrameList,
        window: WindowParam = None,
        viewport: ViewportParam = None,
        quality: QualityParam = 90,
    ) -> Response:
        """One frame as image/jpeg (the default) or image/png (PS3.18 10.4.1.1.3)."""
        return _rendered(
            instance(study_uid, series_uid, sop_uid),
            frame_list,
            request.headers.get("accept"),
            window,
            viewport,
            quality,
        )


def _frames(held: HeldFile, frame_list: str, accept: str | None) -> Response:
    numbers = [int(n) for n in frame_list.split(",")]
    try:
        pixels = dicomweb_frames.pixel_data(held.file.path, _what(held))
        encoding = dicomweb_frames.choose_frame_encoding(accept, pixels)
        frames = dicomweb_frames.iter_frames(pixels, numbers, encoding)  # checked, first frame read
    except dicomweb_frames.FrameError as exc:
        raise _error(exc.status_code, exc.code, str(exc)) from exc
    boundary = new_boundary()
    parts = ((f, encoding.part_content_type) for f in frames)  # one frame in memory at a time
    return StreamingResponse(
        multipart_bytes(parts, boundary),  # parts are iterated once, lazily
        media_type=f'multipart/related; type="{encoding.media_type}"; boundary={boundary}',
    )


def _rendered(
    held: HeldFile,
    frame_list: str,
    accept: str | None,
    window: str | None,
    viewport: str | None,
    quality: int,
) -> Response:
    numbers = [int(n) for n in frame_list.split(",")]
    try:
        if len(numbers) != 1:
            raise dicomweb_frames.FrameError(
                400, "bad_request", "a rendered image holds one frame: ask for one"
            )
        media_type = dicomweb_frames.choose_rendered_type(accept)
        pixels = dicomweb_frames.pixel_data(held.file.path, _what(held))
        image = dicomweb_frames.render_frame(
            pixels,
            held.header,
            numbers[0],
            media_type,
            quality=quality,
            window=dicomweb_frames.Window.parse(window) if window else None,
            viewport=dicomweb_frames.Viewport.parse(viewport) if viewport else None,
        )
    except dicomweb_frames.FrameError as exc:
        raise _error(exc.status_code, exc.code, str(exc)) from exc
    return Response(image, media_type=media_type)


def _what(held: HeldFile) -> str:
    return str(held.header.get("Modality", "")) or held.file.sop_class_uid
