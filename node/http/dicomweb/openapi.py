"""What the DICOMweb routes document in OpenAPI: media types, responses and their errors."""

from __future__ import annotations

from typing import Any

from node.http.errors import ErrorBody

DICOM_JSON = "application/dicom+json"

Responses = dict[int | str, dict[str, Any]]

DICOM_JSON_RESPONSE: Responses = {
    200: {"content": {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}}},
}
MULTIPART_RESPONSE: Responses = {
    200: {"content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}}},
}

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


def documented(*statuses: int) -> Responses:
    """The error responses ``statuses``, each with the one error body."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}
