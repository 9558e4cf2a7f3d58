"""Shared fixtures: audit databases (SQLite and PostgreSQL), nodes, phantoms."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peers
import pytest

from node.config import Settings, load_settings


def _postgres_database() -> Iterator[str]:
    """A fresh database on the PostgreSQL peer (skipped only with AINODE_TEST_SKIP_POSTGRES=1)."""
    try:
        with peers.postgres.fresh_database() as url:
            yield url
    except peers.PeerError as exc:
        if os.environ.get("AINODE_TEST_SKIP_POSTGRES") == "1":
            pytest.skip(f"PostgreSQL unavailable and AINODE_TEST_SKIP_POSTGRES=1: {exc}")
        raise


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty audit database: SQLite in a temp folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


#: The API token every test node accepts (``Authorization: Bearer ...``).
from testing_constants import TEST_API_TOKEN


@pytest.fixture(scope="session")
def chest_phantom() -> Any:
    """The synthetic chest CT phantom with known volumes (made once)."""
    from node.demo.phantom import make_chest_phantom

    return make_chest_phantom()


def node_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    """Settings for a node on loopback with free ports and short timings."""
    node = {
        "ae_title": "AINODE",
        "dicom_host": "127.0.0.1",
        "dicom_port": 0,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "storage_dir": str(tmp_path / "node"),
        "database_url": database_url,
        "study_stable_seconds": 1.0,
        "poll_interval_seconds": 0.1,
        "min_free_disk_mb": 16,
        "job_timeout_seconds": 120,
        "network_timeout_seconds": 10,
    }
    node.update(overrides.pop("node", {}))
    api = {"tokens": [TEST_API_TOKEN], **overrides.pop("api", {})}
    return load_settings(overrides={"node": node, "api": api, **overrides})


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start nodes (stopped at teardown): ``make_node(database_url, routes=..., ...)``."""
    from node.app import Node

    started: list[Node] = []

    def factory(database_url: str, *, http: bool = True, **overrides: Any) -> Node:
        node = Node(node_settings(tmp_path, database_url, **overrides), http=http)
        node.start()
        started.append(node)
        return node

    yield factory
    for node in reversed(started):
        node.stop()
