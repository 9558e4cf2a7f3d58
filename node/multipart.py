"""multipart/related bodies for DICOMweb (PS3.18 8.6.1.2, RFC 2387), streamed.

A STOW-RS body is parsed as it arrives, each part written straight to its
own file in a spool directory, so memory use does not depend on the body's
size; a body larger than the configured limit is refused as soon as the
limit is crossed. Responses (WADO-RS) are generated part by part from files.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from node.errors import AinodeError


class MultipartError(AinodeError):
    """The request body is not a usable multipart/related message."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class ContentType:
    """A parsed ``Content-Type`` header."""

    media_type: str
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str | None) -> ContentType:
        value, params = parse_options_header(header or "")
        return cls(
            media_type=value.decode("latin-1").strip().lower(),
            params={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in params.items()},
        )


@dataclass(frozen=True)
class Part:
    """One body part, spooled to ``path`` (not yet fsynced)."""

    path: Path
    size: int
    sha256: str
    content_type: ContentType


@dataclass
class _Current:
    handle: IO[bytes]
    path: Path
    digest: Any
    size: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class PartSpooler:
    """Feed body chunks in; get spooled :class:`Part` files out.

    Parameters
    ----------
    boundary : str
        The ``boundary`` parameter of the request's Content-Type.
    directory : Path
        Where part files are written (same file system as the spool, so a
        part can be renamed into place).
    max_bytes : int
        Largest body accepted; crossing it raises :class:`MultipartError` (413).
    """

    def __init__(self, boundary: str, directory: Path, max_bytes: int) -> None:
        if not boundary or len(boundary) > 200:
            raise MultipartError("multipart/related Content-Type needs a boundary parameter")
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        self._max = max_bytes
        self._received = 0
        self._parts: list[Part] = []
        self._files: list[Path] = []
        self._current: _Current | None = None
        self._field = b""
        self._value = b""
        self._header_bytes = 0
        self._ended = False
        self._parser = MultipartParser(
            boundary.encode("latin-1"),
            {
                "on_part_begin": self._begin,
                "on_part_data": self._data,
                "on_part_end": self._end,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_end": self._on_end,
            },
            max_header_count=16,
        )

    # -- parser callbacks ------------------------------------------------------

    def _begin(self) -> None:
        path = self._dir / f"part-{uuid.uuid4().hex}.tmp"
        self._files.append(path)
        self._current = _Current(open(path, "wb"), path, hashlib.sha256())  # noqa: SIM115

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._current is None:
            return
        chunk = data[start:end]
        self._current.handle.write(chunk)
        self._current.digest.update(chunk)
        self._current.size += end - start

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._current is not None:
            name = self._field.decode("latin-1").strip().lower()
            self._current.headers[name] = self._value.decode("latin-1").strip()
        self._field = self._value = b""

    def _end(self) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        current.handle.close()
        self._parts.append(
            Part(
                current.path,
                current.size,
                current.digest.hexdigest(),
                ContentType.parse(current.headers.get("content-type")),
            )
        )

    def _on_end(self) -> None:
        self._ended = True

    # -- public ----------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk of the body."""
        self._received += len(chunk)
        if self._received > self._max:
            raise MultipartError(
                f"request body larger than the limit of {self._max // (1024 * 1024)} MB "
                "(api.max_upload_mb)",
                413,
            )
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise MultipartError(f"malformed multipart body: {exc}") from exc
        except OSError as exc:
            raise MultipartError(
                f"cannot spool the request body: {exc.strerror or exc}", 507
            ) from exc

    def finish(self) -> list[Part]:
        """Check the body was complete; return its parts in order."""
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise MultipartError(f"malformed multipart body: {exc}") from exc
        if not self._ended:
            raise MultipartError("multipart body is truncated (no closing boundary)")
        if not self._parts:
            raise MultipartError("multipart body holds no parts")
        return list(self._parts)

    def cleanup(self) -> None:
        """Delete every part file still in the spool directory."""
        if self._current is not None:
            self._current.handle.close()
            self._current = None
        for path in self._files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @property
    def received_bytes(self) -> int:
        return self._received


# -- responses ------------------------------------------------------------------


def new_boundary() -> str:
    return f"ainode-{secrets.token_hex(16)}"


def multipart_files(
    files: Sequence[tuple[Path, str]], boundary: str, chunk_size: int = 1 << 20
) -> Iterator[bytes]:
    """Stream ``(path, part content type)`` pairs as one multipart/related body."""
    for path, content_type in files:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("latin-1")
        with open(path, "rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")


def multipart_bytes(parts: Iterable[tuple[bytes, str]], boundary: str) -> Iterator[bytes]:
    """A multipart/related body from in-memory ``(data, content type)`` parts."""
    for data, content_type in parts:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("latin-1")
        yield data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")
