"""The spool: received instances and written results, durably on disk.

Layout under ``storage_dir``::

    spool/<study>/<series>/<sop>.dcm     received instances (DICOM Part 10)
    results/job-<id>/<kind>-<sop>.dcm    result objects a job wrote

UIDs are sanitised before they become path components, and every file is
written to a temporary name, fsynced, renamed into place and its directory
fsynced, so a file that exists is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from node.errors import StorageError
from node.part10 import content_digest

_UID_SAFE = re.compile(r"[^0-9.]")


def safe_uid(uid: str) -> str:
    """A file-name-safe form of a UID.

    A conformant UID (digits and dots, at most 64 characters) is kept as it
    is; anything else (path separators, ``..``, control characters, overlong
    values) is replaced by ``x`` plus a hash of the original, so a hostile UID
    can never leave its directory or collide with a valid one.
    """
    if uid and len(uid) <= 64 and not _UID_SAFE.search(uid) and not uid.startswith("."):
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def fsync_path(path: Path) -> None:
    """fsync a file or a directory.

    For a file, its data reaches the disk; for a directory, a rename into it
    survives a crash.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` durably: temp file, fsync, rename, fsync directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"cannot write {path.name}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class Spool:
    """Paths and free-space checks for one node's storage directory."""

    root: Path
    min_free_bytes: int

    def instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return (
            self.root
            / "spool"
            / safe_uid(study_uid)
            / safe_uid(series_uid)
            / f"{safe_uid(sop_uid)}.dcm"
        )

    def result_dir(self, job_id: int) -> Path:
        return self.root / "results" / f"job-{job_id}"

    def has_room(self, incoming_bytes: int = 0) -> bool:
        """Whether storing ``incoming_bytes`` more keeps ``min_free_bytes`` free."""
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        return free - incoming_bytes >= self.min_free_bytes

    def store(
        self, study_uid: str, series_uid: str, sop_uid: str, data: bytes | memoryview
    ) -> tuple[Path, str]:
        """Store one instance durably; return its path and content digest.

        The digest is the SHA-256 of the data set without its Part 10 header
        (:func:`node.part10.content_digest`): the same instance with another
        File Meta header is the same content. An identical re-send rewrites
        nothing. A *changed* re-send of the same SOP instance is kept beside
        the first copy (``<sop>.<sha12>.dcm``) and never overwrites it, so a
        job reading the earlier copy is never handed a file that changes under
        it, and the audit trail can point at both versions.
        """
        digest = content_digest(data)
        path, exists = self._place(study_uid, series_uid, sop_uid, digest)
        if not exists:
            write_atomic(path, data)
        return path, digest

    def keep(
        self, study_uid: str, series_uid: str, sop_uid: str, source: Path, data: bytes
    ) -> tuple[Path, str]:
        """:meth:`store` for an instance already in a file on the spool's file system (STOW-RS).

        ``data`` is the content of ``source`` (read once by the caller).
        ``source`` is renamed into place (fsynced) or, when the spool already
        holds the same content, removed.
        """
        digest = content_digest(data)
        path, exists = self._place(study_uid, series_uid, sop_uid, digest)
        try:
            if exists:
                source.unlink()
                return path, digest
            fsync_path(source)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, path)
            fsync_path(path.parent)
        except OSError as exc:
            raise StorageError(f"cannot store: {exc.strerror or exc}") from exc
        return path, digest

    def _place(
        self, study_uid: str, series_uid: str, sop_uid: str, digest: str
    ) -> tuple[Path, bool]:
        """Where content ``digest`` of this instance goes, and whether it is there already."""
        path = self.instance_path(study_uid, series_uid, sop_uid)
        if not path.exists() or _digest_of(path) == digest:
            return path, path.exists()
        beside = path.with_name(f"{path.stem}.{digest[:12]}.dcm")
        return beside, beside.exists()


def _digest_of(path: Path) -> str | None:
    try:
        return content_digest(path.read_bytes())
    except OSError:
        return None
