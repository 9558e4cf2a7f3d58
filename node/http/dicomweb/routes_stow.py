"""STOW-RS Store Instances (PS3.18 10.5): ``POST /studies[/{study}]``.

The multipart/related body is streamed to part files (never held in memory)
and refused with 413 once it crosses ``api.max_upload_mb``. A request made
with a source's sender token records that source as the sender of each
instance.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from node.http.context import ApiContext
from node.http.dicomweb.openapi import DICOM_JSON, Responses, documented
from node.http.dicomweb.paths import INSTANCE, StudyUid, base_url
from node.http.errors import ApiError
from node.ingress.stow import StoredItem
from node.multipart import ContentType, MultipartError, PartSpooler

_STOW_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            'multipart/related; type="application/dicom": one DICOM Part 10 file per part'
        ),
        "content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}},
    },
}
_DICOM_JSON_ANSWERS: Responses = {
    200: {"content": {DICOM_JSON: {}}},
    202: {"content": {DICOM_JSON: {}}},
    409: {"content": {DICOM_JSON: {}}},
}
_STOW_RESPONSES = _DICOM_JSON_ANSWERS | documented(400, 406, 413, 415, 507)


def stow_routes(router: APIRouter, ctx: ApiContext, auth: Callable[..., str | None]) -> None:
    """Add the STOW-RS routes; ``auth`` names the source whose sender token was presented."""
    max_bytes = ctx.api.max_upload_mb * 1024 * 1024
    # The configured source whose sender token the request carried: the router's own check,
    # run once per request (FastAPI caches a dependency's value). A default, not an Annotated
    # alias: string annotations are resolved in the module's globals, where `auth` is not.
    sender_of = Depends(auth)

    async def store(request: Request, study_uid: str | None, sender: str | None) -> Response:
        content_type = _check_request(request, ctx.api.max_upload_mb, max_bytes)
        spooler = _spooler(content_type, ctx, max_bytes)
        try:
            async for chunk in request.stream():
                spooler.feed(chunk)
            parts = spooler.finish()
            client = request.client.host if request.client else None
            outcome = await run_in_threadpool(ctx.stow.ingest, parts, study_uid, client, sender)
        except MultipartError as exc:
            raise ApiError(exc.status_code, _code(exc.status_code), str(exc)) from exc
        finally:
            await run_in_threadpool(spooler.cleanup)
        base = base_url(request)
        retrieve = _instance_url(base) if ctx.api.serve_inputs else None
        study_url = f"{base}/studies/{study_uid}" if study_uid and ctx.api.serve_inputs else None
        body = outcome.response_dataset(retrieve, study_url).to_json_dict()
        return JSONResponse(body, status_code=outcome.http_status, media_type=DICOM_JSON)

    @router.post(
        "/studies",
        openapi_extra=_STOW_BODY,
        summary="STOW-RS Store Instances",
        responses=_STOW_RESPONSES,
    )
    async def stow_studies(request: Request, sender: str | None = sender_of) -> Response:
        return await store(request, None, sender)

    @router.post(
        "/studies/{study_uid}",
        openapi_extra=_STOW_BODY,
        summary="STOW-RS Store Instances (one study)",
        responses=_STOW_RESPONSES,
    )
    async def stow_study(
        request: Request, study_uid: StudyUid, sender: str | None = sender_of
    ) -> Response:
        return await store(request, study_uid, sender)


def _check_request(request: Request, max_upload_mb: int, max_bytes: int) -> ContentType:
    """The request's content type, once its media types and declared length are acceptable."""
    content_type = ContentType.parse(request.headers.get("content-type"))
    if content_type.media_type != "multipart/related":
        raise ApiError(
            415,
            "unsupported_media_type",
            'STOW-RS takes multipart/related; type="application/dicom"',
        )
    part_type = content_type.params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"only application/dicom parts are accepted, not {part_type!r}",
        )
    _check_accept(request.headers.get("accept"))
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(
            413,
            "payload_too_large",
            f"request body larger than the limit of {max_upload_mb} MB (api.max_upload_mb)",
        )
    return content_type


def _spooler(content_type: ContentType, ctx: ApiContext, max_bytes: int) -> PartSpooler:
    try:
        return PartSpooler(
            content_type.params.get("boundary", ""), ctx.stow.part_directory, max_bytes
        )
    except MultipartError as exc:
        raise ApiError(400, "bad_request", str(exc)) from exc


def _check_accept(accept: str | None) -> None:
    if not accept:
        return
    ok = ("application/dicom+json", "application/json", "*/*", "application/*")
    if not any(a.split(";")[0].strip().lower() in ok for a in accept.split(",")):
        raise ApiError(406, "not_acceptable", "STOW-RS responses are application/dicom+json")


def _code(status: int) -> str:
    return {413: "payload_too_large", 507: "insufficient_storage"}.get(status, "bad_request")


def _instance_url(base: str) -> Callable[[StoredItem], str]:
    def url(item: StoredItem) -> str:
        return base + INSTANCE.format(
            study_uid=item.study_instance_uid,
            series_uid=item.series_instance_uid,
            sop_uid=item.sop_instance_uid,
        )

    return url
