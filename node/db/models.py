"""The audit database schema (SQLAlchemy 2 declarative models).

Every state change of the node is a row here: received and rejected
instances, studies, jobs and their events, result objects, delivery
attempts. Migrations live in ``node/db/migrations`` (alembic); keep the two in
step (``alembic revision --autogenerate``).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the audit database")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class InstanceStatus(enum.StrEnum):
    """What became of one received instance."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class JobState(enum.StrEnum):
    """A job's life: queued -> running -> succeeded -> delivered (or failed)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DELIVERED = "delivered"
    DELIVERY_FAILED = "delivery_failed"
    CANCELLED = "cancelled"


class RequestState(enum.StrEnum):
    """An inference request: queued -> retrieving -> running -> done (or failed)."""

    QUEUED = "queued"
    RETRIEVING = "retrieving"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DeliveryState(enum.StrEnum):
    """A delivery of one job's results to one destination."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Study(Base):
    """A study the node has received instances of."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    first_received_at: Mapped[datetime]
    last_received_at: Mapped[datetime]
    instance_count: Mapped[int] = mapped_column(default=0)
    completed_at: Mapped[datetime | None]
    status_detail: Mapped[str | None] = mapped_column(Text)


class Instance(Base):
    """One received (or refused) DICOM instance."""

    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_pending", "study_instance_uid", "dispatched"),
        Index("ix_instances_series", "series_instance_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part_examined: Mapped[str | None] = mapped_column(String(64))
    series_description: Mapped[str | None] = mapped_column(String(64))
    study_description: Mapped[str | None] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64))
    calling_ae_title: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16), default="dimse")
    #: The configured source (``sources:`` name) that sent it, when known: by calling
    #: AE title (C-STORE) or by the API token it presented (STOW-RS).
    sender: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[InstanceStatus] = mapped_column(_enum(InstanceStatus))
    dimse_status: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    dispatched: Mapped[bool] = mapped_column(default=False)


class Job(Base):
    """One pipeline run on one series, and the delivery of its results."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    route_name: Mapped[str] = mapped_column(String(64))
    pipeline_name: Mapped[str] = mapped_column(String(64))
    pipeline_version: Mapped[str | None] = mapped_column(String(64))
    model_checksum: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[JobState] = mapped_column(_enum(JobState))
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    result_uids: Mapped[dict[str, Any]] = mapped_column(JSON)
    destinations: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The job's result plan (``node.study.plan.ResultPlan``, JSON form): what it writes,
    #: with which identities, for which destinations. NULL for jobs queued before 0004.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    inference_request_id: Mapped[int | None] = mapped_column(
        ForeignKey("inference_requests.id"), index=True
    )
    #: The job that replaced this one (``late_series: rerun``): its results withdraw these.
    superseded_by_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)

    inputs: Mapped[list[JobInput]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobInput.id"
    )
    outputs: Mapped[list[Output]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        order_by="Output.id",
        foreign_keys="Output.job_id",
    )
    events: Mapped[list[Event]] = relationship(
        back_populates="job", order_by="Event.id", viewonly=True
    )


class JobInput(Base):
    """An instance a job analysed."""

    __tablename__ = "job_inputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="inputs")


#: ``Output.variant`` of a rejection note (kind ``REJECT``) names the one destination it is
#: for: ``"to:" + destination name``.
REJECTION_FOR = "to:"


class Output(Base):
    """A result object a job wrote (SEG, SR, ...)."""

    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The viewer profile it was written for (a destination's ``profile``, see
    #: :attr:`node.config.ResultProfile.key`); ``None`` for objects every destination
    #: gets alike (PDF, derived series, registrations); for a rejection note,
    #: :data:`REJECTION_FOR` and the destination's name.
    variant: Mapped[str | None] = mapped_column(String(64))

    job: Mapped[Job] = relationship(back_populates="outputs")


class Delivery(Base):
    """The delivery of one job's results to one destination (with its retries)."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[DeliveryState] = mapped_column(_enum(DeliveryState))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryAttempt(Base):
    """One attempt to send one output to one destination."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    succeeded: Mapped[bool]
    #: C-STORE status, or the STOW-RS FailureReason (PS3.18 Table 10.5.3-1; same code space).
    dimse_status: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None]


class InferenceRequest(Base):
    """A request to pull a study from a source, analyse it and send the results (pull mode)."""

    __tablename__ = "inference_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(64))
    pipelines: Mapped[dict[str, Any]] = mapped_column(JSON)
    destinations: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[RequestState] = mapped_column(_enum(RequestState), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    retrieved_instances: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    #: Retrieval attempts so far; a failed one is retried (``retrieval``) from ``next_attempt_at``.
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]


class Event(Base):
    """The audit trail: one row per thing that happened, in order."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    calling_ae_title: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job | None] = relationship(back_populates="events")
