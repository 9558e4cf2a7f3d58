"""The base of the per-stage stores: sessions and the audit trail."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from node.db.engine import session_factory
from node.db.models import (
    Event,
)

logger = logging.getLogger(__name__)


class StoreBase:
    """Sessions on the process's one engine, and the audit trail every stage appends to.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The process's single engine (already migrated).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)
        self._pg = engine.dialect.name == "postgresql"

    def session(self) -> Session:
        """A new session (use as a context manager)."""
        return self._sessions()

    def transaction(self) -> AbstractContextManager[Session]:
        """A new session inside a transaction (``with store.transaction() as s:``)."""
        return self._sessions.begin()

    def record_event(
        self,
        kind: str,
        detail: str | None = None,
        *,
        study_instance_uid: str | None = None,
        job_id: int | None = None,
        calling_ae_title: str | None = None,
    ) -> None:
        """Append one row to the audit trail."""
        with self._sessions.begin() as s:
            s.add(
                Event(
                    kind=kind,
                    detail=detail,
                    study_instance_uid=study_instance_uid,
                    job_id=job_id,
                    calling_ae_title=calling_ae_title,
                )
            )


def chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    """``items`` in slices of ``size`` (bounded IN lists)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
