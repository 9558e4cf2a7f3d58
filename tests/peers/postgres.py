"""The PostgreSQL server (CI and this machine run one): a fresh database per test.

The server is ``AINODE_TEST_POSTGRES_URL`` (default: trust authentication at
127.0.0.1:5432, database ``test``); each test gets its own database, dropped
afterwards even when connections are left open.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from .common import PeerError

#: The PostgreSQL server the tests use.
POSTGRES_ADMIN_URL = os.environ.get(
    "AINODE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def fresh_database(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """A new, empty database on the server; yields its SQLAlchemy URL.

    Raises
    ------
    PeerError
        When the server cannot be reached (the message says how to point the
        tests at another server, or skip the PostgreSQL tests).
    """
    admin = create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    name = f"ainode_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise PeerError(
            f"PostgreSQL at {admin_url} is needed for the postgres tests "
            f"({type(exc).__name__}; set AINODE_TEST_POSTGRES_URL, or "
            "AINODE_TEST_SKIP_POSTGRES=1 to skip them)"
        ) from exc
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
