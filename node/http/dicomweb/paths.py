"""The UIDs in DICOMweb paths, and the links the answers carry (PS3.18 10.4, 10.5, 10.6)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request

from node.http.schemas import UID_PATTERN

StudyUid = Annotated[str, Path(pattern=UID_PATTERN, max_length=64)]
SeriesUid = Annotated[str, Path(pattern=UID_PATTERN, max_length=64)]
SopUid = Annotated[str, Path(pattern=UID_PATTERN, max_length=64)]
#: The path of one instance, below the DICOMweb root.
INSTANCE = "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def base_url(request: Request) -> str:
    """The DICOMweb root for links: ``api.public_url`` + ``/dicom-web``, else from the request."""
    public = request.app.state.public_url
    if public:
        return f"{public.rstrip('/')}/dicom-web"
    root = str(request.url_for("dicomweb_search_studies")).rstrip("/")
    return root.rsplit("/studies", 1)[0]
