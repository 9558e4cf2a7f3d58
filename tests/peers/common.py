"""Helpers shared by every test peer: ports, deadlines, processes and logs.

The bottom of the package: it imports nothing from the other :mod:`peers`
modules, and each of them imports from it.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from pydicom.dataset import Dataset

T = TypeVar("T")

#: Loopback address on which every peer is reached.
LOOPBACK = "127.0.0.1"
#: How many lines of a peer's log an error message quotes.
LOG_TAIL_LINES = 40


class PeerError(RuntimeError):
    """A test peer failed to start, answer or do what it was asked."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on `host` right now.

    Parameters
    ----------
    host : str, optional
        Address to probe, by default ``127.0.0.1``.

    Returns
    -------
    int
        A port number the kernel handed out for an ephemeral bind. Another
        process may take it before the caller binds it; the peers below retry
        with a fresh port when their program fails to start.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns a truthy value or the deadline passes.

    Parameters
    ----------
    predicate : callable
        Called without arguments; its first truthy result is returned.
    timeout : float, optional
        Seconds before giving up, by default 10.
    interval : float, optional
        Seconds between polls, by default 0.05.
    what : str, optional
        Description of the awaited condition, used in the error message.
    ignore : tuple of exception types, optional
        Exceptions raised by `predicate` that mean "not yet" rather than
        failure (for example ``httpx.TransportError`` while a server starts).

    Returns
    -------
    T
        The first truthy value returned by `predicate`.

    Raises
    ------
    TimeoutError
        If the deadline passes; the last ignored exception is chained.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: object = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
            last_value = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f"last error: {last_error!r}" if last_error else f"last value: {last_value!r}"
            raise TimeoutError(
                f"timed out after {timeout:.1f} s waiting for {what} ({detail})"
            ) from last_error
        time.sleep(min(interval, remaining))


def require_program(program: str) -> str:
    """Return the full path of `program`, or skip the test if it is missing.

    Parameters
    ----------
    program : str
        Program name (looked up on ``$PATH``) or absolute path.

    Returns
    -------
    str
        The resolved path.
    """
    found = shutil.which(program)
    if found is None:
        pytest.skip(f"{program} is not installed")
    return found


def read_log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last `lines` lines of the log file at `path`."""
    if not path.exists():
        return "<no log>"
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def terminate(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop `process`: SIGTERM, wait up to `timeout` seconds, then SIGKILL.

    A `timeout` of zero sends SIGKILL straight away.
    """
    if process.poll() is not None:
        return
    if timeout > 0:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10.0)


def dataset_bytes(dataset: Dataset) -> bytes:
    """Encode `dataset` as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
