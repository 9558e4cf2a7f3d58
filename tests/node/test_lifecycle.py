"""The node's one life cycle: a start that fails part-way leaves nothing running."""

from __future__ import annotations

import multiprocessing
import socket
import threading
from pathlib import Path

import pytest

from node.app import Node
from node.config import Settings, load_settings


def _settings(tmp_path: Path, database_url: str, dicom_port: int = 0) -> Settings:
    node = {
        "dicom_host": "127.0.0.1",
        "dicom_port": dicom_port,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "storage_dir": str(tmp_path / "node"),
        "database_url": database_url,
        "min_free_disk_mb": 16,
        "poll_interval_seconds": 0.1,
    }
    return load_settings(overrides={"node": node})


def _threads(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def test_a_start_that_fails_stops_what_it_started(tmp_path: Path, sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = Node(_settings(tmp_path, sqlite_url, port))
        # the runner and the scheduler start before the Storage SCP, which cannot bind
        with pytest.raises(OSError):
            node.start()
    assert multiprocessing.active_children() == []  # the worker processes were stopped
    assert _threads("ainode-slot-") == []
    assert not node.scheduler.running
    assert _threads("ainode-http") == []  # never started: the SCP failed first
    node.stop()  # nothing left to stop: a no-op, not an error

    # the same database and storage serve the next node
    again = Node(_settings(tmp_path, sqlite_url))
    try:
        again.start()
        assert again.dicom_port > 0
    finally:
        again.stop()
    assert multiprocessing.active_children() == []
