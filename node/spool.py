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
        """Store one instance durably; return its path and SHA-256.

        An identical re-send rewrites nothing. A *changed* re-send of the same
        SOP instance is kept beside the first copy (``<sop>.<sha12>.dcm``), so
        a job reading the earlier copy is never handed a file that changes
        under it, and the audit trail can point at both versions.
        """
        path = self.instance_path(study_uid, series_uid, sop_uid)
        digest = hashlib.sha256(data).hexdigest()
        if path.exists():
            if _sha256_of(path) == digest:
                return path, digest
            path = path.with_name(f"{path.stem}.{digest[:12]}.dcm")
            if path.exists():
                return path, digest
        write_atomic(path, data)
        return path, digest


def _sha256_of(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
