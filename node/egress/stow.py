"""STOW-RS client (PS3.18 10.5) for DICOMweb destinations: one request per delivery attempt.

Every result file goes out as it is on disk, in one multipart/related
request. The outcome of each object is read from the response dataset, not
from the HTTP status: an object is stored only when the
ReferencedSOPSequence lists it (and the FailedSOPSequence does not); an
HTTP 200 alone proves nothing (PS3.18 10.5.3; compare dicomweb-client,
whose failure branch after ``raise_for_status()`` can never run).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from node.config import DicomwebEndpoint
from node.db.models import utcnow
from node.multipart import multipart_files, new_boundary

logger = logging.getLogger(__name__)

_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"


@dataclass(frozen=True)
class StowResult:
    """The outcome of one object in one STOW-RS request."""

    output_id: int
    succeeded: bool
    failure_reason: int | None
    error: str | None
    http_status: int | None
    started: datetime
    finished: datetime


def _items(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = body.get(tag) or {}
    return [i for i in element.get("Value", []) if isinstance(i, dict)]


def _first(item: dict[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or [None]
    return values[0]


def parse_store_response(body: Any) -> tuple[set[str], dict[str, int | None]]:
    """Stored SOP Instance UIDs and failed ones from a STOW-RS response dataset.

    The failed ones map to their FailureReason (``None`` when absent).
    """
    if isinstance(body, list):  # some servers wrap the dataset in an array
        body = body[0] if body else {}
    if not isinstance(body, dict):
        return set(), {}
    stored = {
        str(_first(i, _REFERENCED_SOP_INSTANCE_UID)) for i in _items(body, _REFERENCED_SOP_SEQUENCE)
    }
    failed = {
        str(_first(i, _REFERENCED_SOP_INSTANCE_UID)): _first(i, _FAILURE_REASON)
        for i in _items(body, _FAILED_SOP_SEQUENCE)
    }
    return stored - set(failed), failed


class StowSender:
    """Sends result files to one DICOMweb destination.

    Parameters
    ----------
    endpoint : DicomwebEndpoint
        Base URL (``.../dicom-web``), credentials and timeout.
    """

    def __init__(self, endpoint: DicomwebEndpoint) -> None:
        self._endpoint = endpoint

    def _client(self) -> httpx.Client:
        ep = self._endpoint
        headers = {"Accept": "application/dicom+json"}
        auth: httpx.Auth | None = None
        if ep.token is not None:
            headers["Authorization"] = f"Bearer {ep.token.get_secret_value()}"
        elif ep.username is not None and ep.password is not None:
            auth = httpx.BasicAuth(ep.username, ep.password.get_secret_value())
        return httpx.Client(headers=headers, auth=auth, timeout=ep.timeout_seconds)

    def send(self, items: Sequence[tuple[int, str, str]]) -> list[StowResult]:
        """Send ``(output id, file path, SOP Instance UID)`` triples in one request."""
        if not items:
            return []
        started = utcnow()
        missing = [(oid, path) for oid, path, _ in items if not Path(path).is_file()]
        if missing:
            return [
                StowResult(
                    oid,
                    False,
                    None,
                    "result file missing"
                    if (oid, path) in missing
                    else "not sent: another result file of this delivery is missing",
                    None,
                    started,
                    utcnow(),
                )
                for oid, path, _ in items
            ]
        boundary = new_boundary()
        url = f"{self._endpoint.url}/studies"
        try:
            with self._client() as client:
                response = client.post(
                    url,
                    content=_body(items, boundary),
                    headers={
                        "Content-Type": 'multipart/related; type="application/dicom"; '
                        f"boundary={boundary}"
                    },
                )
        except httpx.HTTPError as exc:
            error = f"STOW-RS to {url} failed: {type(exc).__name__}: {exc}"
            return [
                StowResult(oid, False, None, error, None, started, utcnow()) for oid, _, _ in items
            ]
        return self._outcomes(items, response, started)

    def _outcomes(
        self, items: Sequence[tuple[int, str, str]], response: httpx.Response, started: datetime
    ) -> list[StowResult]:
        finished = utcnow()
        status = response.status_code
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = None
        stored, failed = parse_store_response(body)
        results = []
        for oid, _, sop_uid in items:
            if sop_uid in stored and status < 300:
                results.append(StowResult(oid, True, None, None, status, started, finished))
                continue
            reason = failed.get(sop_uid)
            if sop_uid in failed:
                error = f"STOW-RS FailedSOPSequence: FailureReason 0x{int(reason or 0):04X}"
            elif status >= 400:
                error = f"STOW-RS HTTP {status}: {response.text[:300]}"
            elif body is None:
                error = f"STOW-RS HTTP {status} without a DICOM JSON response dataset"
            else:
                error = f"STOW-RS HTTP {status}: instance not listed in ReferencedSOPSequence"
            results.append(
                StowResult(
                    oid,
                    False,
                    int(reason) if reason is not None else None,
                    error,
                    status,
                    started,
                    finished,
                )
            )
        return results


def _body(items: Sequence[tuple[int, str, str]], boundary: str) -> bytes:
    """The request body, with a length: result objects are small, and some servers
    (Orthanc's embedded HTTP server among them) handle chunked uploads poorly."""
    return b"".join(
        multipart_files([(Path(path), "application/dicom") for _, path, _ in items], boundary)
    )
