"""The ingest store: every instance received (stored, duplicate) or refused, and its study."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db.base import StoreBase
from node.db.models import (
    Instance,
    InstanceStatus,
    Study,
    utcnow,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedInstance:
    """What ingress knows about an instance it has just written to the spool."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str | None
    body_part_examined: str | None
    series_description: str | None
    study_description: str | None
    transfer_syntax_uid: str
    calling_ae_title: str | None
    source: str
    size_bytes: int
    sha256: str
    path: str
    #: The configured source that sent it (by calling AE title or STOW-RS token), if known.
    sender: str | None = None


class IngestStore(StoreBase):
    """What ingress records: stored instances, refused ones."""

    def record_instance(self, received: ReceivedInstance) -> InstanceStatus:
        """Record a stored instance; an identical re-send is a duplicate (not re-analysed)."""
        now = utcnow()
        with self._sessions.begin() as s:
            previous = s.scalar(
                select(Instance.sha256)
                .where(
                    Instance.sop_instance_uid == received.sop_instance_uid,
                    Instance.status == InstanceStatus.STORED,
                )
                .order_by(Instance.id.desc())
                .limit(1)
            )
            status = (
                InstanceStatus.DUPLICATE if previous == received.sha256 else InstanceStatus.STORED
            )
            s.add(
                Instance(
                    **received.__dict__,
                    received_at=now,
                    status=status,
                    dimse_status=0,
                    dispatched=status is InstanceStatus.DUPLICATE,
                )
            )
            self._touch_study(s, received.study_instance_uid, now, status)
        return status

    def _touch_study(
        self, s: Session, study_uid: str, now: datetime, status: InstanceStatus
    ) -> None:
        study = s.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        if study is None:
            s.add(
                Study(
                    study_instance_uid=study_uid,
                    first_received_at=now,
                    last_received_at=now,
                    instance_count=1,
                )
            )
            return
        if status is InstanceStatus.STORED:
            study.last_received_at = now
            study.instance_count += 1
            study.completed_at = None

    def record_rejection(
        self,
        *,
        reason: str,
        dimse_status: int | None,
        calling_ae_title: str | None,
        source: str,
        sop_instance_uid: str | None = None,
        sop_class_uid: str | None = None,
        study_instance_uid: str | None = None,
        size_bytes: int | None = None,
        sender: str | None = None,
    ) -> None:
        """Record an instance the node refused, with the status it answered.

        The sender is recorded too, when known.
        """
        with self._sessions.begin() as s:
            s.add(
                Instance(
                    sop_instance_uid=sop_instance_uid,
                    sop_class_uid=sop_class_uid,
                    study_instance_uid=study_instance_uid,
                    calling_ae_title=calling_ae_title,
                    source=source,
                    sender=sender,
                    size_bytes=size_bytes,
                    status=InstanceStatus.REJECTED,
                    dimse_status=dimse_status,
                    error=reason,
                    dispatched=True,
                )
            )
