"""DICOMweb retrieval from a configured source: WADO-RS Retrieve Study and QIDO-RS counts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from node.config import DicomwebEndpoint
from node.ingress.stow import StowIngress
from node.multipart import ContentType, MultipartError, PartSpooler
from node.retrieve.dimse import RetrieveError

logger = logging.getLogger(__name__)


def http_client(endpoint: DicomwebEndpoint) -> httpx.Client:
    headers, auth = {}, None
    if endpoint.token is not None:
        headers["Authorization"] = f"Bearer {endpoint.token.get_secret_value()}"
    elif endpoint.username is not None and endpoint.password is not None:
        auth = httpx.BasicAuth(endpoint.username, endpoint.password.get_secret_value())
    return httpx.Client(headers=headers, auth=auth, timeout=endpoint.timeout_seconds)


def raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise RetrieveError(
            f"{response.request.method} {response.request.url.path}: "
            f"HTTP {response.status_code} {response.text[:200]}"
        )


def json_first(item: Mapping[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or [None]
    return values[0]


def qido_count(client: httpx.Client, url: str, params: dict[str, str], tag: str) -> Any:
    response = client.get(url, params=params, headers={"Accept": "application/dicom+json"})
    raise_for(response)
    found = response.json() if response.content else []
    return json_first(found[0], tag) if found else None


def retrieve_wado(
    endpoint: DicomwebEndpoint, study_uid: str, stow: StowIngress, max_bytes: int
) -> int:
    """WADO-RS Retrieve Study (PS3.18 10.4).

    Streamed to part files and stored like STOW-RS parts.
    """
    url = f"{endpoint.url}/studies/{study_uid}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    with (
        http_client(endpoint) as client,
        client.stream("GET", url, headers={"Accept": accept}) as response,
    ):
        if response.status_code >= 400:
            response.read()
            raise_for(response)
        content_type = ContentType.parse(response.headers.get("content-type"))
        try:
            spooler = PartSpooler(
                content_type.params.get("boundary", ""), stow.part_directory, max_bytes
            )
        except MultipartError as exc:
            raise RetrieveError(f"WADO-RS {url}: {exc}") from exc
        try:
            for chunk in response.iter_bytes():
                spooler.feed(chunk)
            outcome = stow.ingest(spooler.finish(), study_uid, client=endpoint.url)
        except MultipartError as exc:
            raise RetrieveError(f"WADO-RS {url}: {exc}") from exc
        finally:
            spooler.cleanup()
    if outcome.failed:
        logger.warning("WADO-RS %s: %d instances could not be stored", url, len(outcome.failed))
    return len(outcome.stored)
