"""WADO-RS Retrieve Frames and Retrieve Rendered (PS3.18 10.4.1.1.5, 10.4.1.1.3).

The routes turn :class:`node.http.dicomweb.pixels.FrameError` into the API's
one error shape; the work is done by :mod:`node.http.dicomweb.frames` and
:mod:`node.http.dicomweb.render`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from node.http.dicomweb import frames, render
from node.http.dicomweb.negotiation import RENDERED_MEDIA_TYPES, choose_rendered_type
from node.http.dicomweb.openapi import MULTIPART_RESPONSE, Responses, documented
from node.http.dicomweb.paths import INSTANCE, SeriesUid, SopUid, StudyUid
from node.http.dicomweb.pixels import FrameError
from node.http.dicomweb.query import HeldFile
from node.http.errors import ApiError, ErrorBody
from node.multipart import multipart_bytes, new_boundary

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
        description=(
            "center,width[,function]: the VOI window (function linear, linear-exact or sigmoid)"
        ),
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

_RENDERED_RESPONSE: Responses = {
    200: {
        "content": {
            t: {"schema": {"type": "string", "format": "binary"}} for t in RENDERED_MEDIA_TYPES
        }
    },
}
_FRAME_ERRORS = documented(400, 404, 406)
_FRAMES_TOO_LARGE: Responses = {
    413: {
        "model": ErrorBody,
        "description": "The frames would make a response over the node's limit: ask for fewer",
    }
}
# The routes' OpenAPI descriptions (docstrings would hold lines over the length limit).
_FRAMES_DESCRIPTION = (
    "Frames as native bytes (application/octet-stream, the default) or as stored (image/*,\n"
    "transfer-syntax=*), one part per frame, in the order asked, streamed (PS3.18 10.4.1.1.5).\n"
    "A list may repeat frames, but hold no more entries than the instance has frames "
    "(nor over 1024)."
)
_RENDERED_INSTANCE_DESCRIPTION = (
    "The instance (its first frame) as image/jpeg (the default) or image/png (PS3.18 10.4.1.1.3)."
)


def frame_routes(router: APIRouter, instance: Callable[[str, str, str], HeldFile]) -> None:
    """Add the frame and rendered routes; ``instance`` finds the held file (else 404)."""

    @router.get(
        f"{INSTANCE}/frames/{{frame_list}}",
        summary="WADO-RS Retrieve Frames",
        description=_FRAMES_DESCRIPTION,
        responses=MULTIPART_RESPONSE | _FRAME_ERRORS | _FRAMES_TOO_LARGE,
        response_class=Response,
    )
    def retrieve_frames(
        request: Request,
        study_uid: StudyUid,
        series_uid: SeriesUid,
        sop_uid: SopUid,
        frame_list: FrameList,
    ) -> Response:
        return _frames(
            instance(study_uid, series_uid, sop_uid), frame_list, request.headers.get("accept")
        )

    @router.get(
        f"{INSTANCE}/rendered",
        summary="WADO-RS Retrieve Rendered Instance",
        description=_RENDERED_INSTANCE_DESCRIPTION,
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
        return _rendered(
            instance(study_uid, series_uid, sop_uid),
            "1",
            request.headers.get("accept"),
            window,
            viewport,
            quality,
        )

    @router.get(
        f"{INSTANCE}/frames/{{frame_list}}/rendered",
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
        pixels = frames.pixel_data(held.file.path, _what(held))
        encoding = frames.choose_frame_encoding(accept, pixels)
        found = frames.iter_frames(pixels, numbers, encoding)  # checked, first frame read
    except FrameError as exc:
        raise ApiError(exc.status_code, exc.code, str(exc)) from exc
    boundary = new_boundary()
    parts = ((f, encoding.part_content_type) for f in found)  # one frame in memory at a time
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
            raise FrameError(400, "bad_request", "a rendered image holds one frame: ask for one")
        media_type = choose_rendered_type(accept)
        pixels = frames.pixel_data(held.file.path, _what(held))
        image = render.render_frame(
            pixels,
            held.header,
            numbers[0],
            media_type,
            quality=quality,
            window=render.Window.parse(window) if window else None,
            viewport=render.Viewport.parse(viewport) if viewport else None,
        )
    except FrameError as exc:
        raise ApiError(exc.status_code, exc.code, str(exc)) from exc
    return Response(image, media_type=media_type)


def _what(held: HeldFile) -> str:
    return str(held.header.get("Modality", "")) or held.file.sop_class_uid
