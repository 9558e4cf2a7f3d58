"""Helpers for the DICOMweb tests: multipart bodies, authenticated clients."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from pydicom.dataset import Dataset
from testing_constants import TEST_API_TOKEN

AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: Sequence[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    """A multipart/related body and its Content-Type header."""
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + data + b"\r\n"
            for data in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(
    base_url: str,
    parts: Sequence[bytes],
    study_uid: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    body, content_type = multipart(parts)
    url = f"{base_url}/dicom-web/studies" + (f"/{study_uid}" if study_uid else "")
    return httpx.post(
        url,
        content=body,
        headers={
            "Content-Type": content_type,
            "Accept": "application/dicom+json",
            **AUTH,
            **(headers or {}),
        },
        timeout=60,
        **kwargs,
    )


def http_base(node: Any) -> str:
    return f"http://127.0.0.1:{node.http_port}"


def sequence(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    """Items of a sequence in a DICOM JSON response (empty when absent)."""
    return list(body.get(tag, {}).get("Value", []))


def value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]
