"""Read-side queries for the REST API and the DICOMweb service: filtered pages, files by UID."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from node.db.models import Instance, InstanceStatus, Job, JobState, Output, Study
from node.db.store import AuditStore


@dataclass(frozen=True)
class JobFilter:
    """Conditions on jobs; ``None`` means any."""

    state: JobState | None = None
    pipeline: str | None = None
    modality: str | None = None
    route: str | None = None
    study_instance_uid: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class StudyFilter:
    """Conditions on studies; ``None`` means any."""

    modality: str | None = None
    study_instance_uid: str | None = None
    received_after: datetime | None = None
    received_before: datetime | None = None
    pipeline: str | None = None


@dataclass(frozen=True)
class StudyRow:
    """A study with what the node did with it."""

    study: Study
    modalities: tuple[str, ...]
    jobs: dict[str, int]


@dataclass(frozen=True)
class DicomFile:
    """A DICOM file the node holds, by its UIDs (a result object or a received instance)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str
    kind: str  # "result" or "input"


class Listings:
    """Filtered, paginated reads over the audit database."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    def jobs(self, where: JobFilter, limit: int, offset: int) -> tuple[list[Job], int]:
        """One page of jobs (newest first) and the total matching ``where``."""
        query = _job_conditions(select(Job), where)
        with self._store.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = list(s.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset)))
            return rows, int(total)

    def studies(self, where: StudyFilter, limit: int, offset: int) -> tuple[list[StudyRow], int]:
        """One page of studies (most recently received first) and the total."""
        query = select(Study)
        if where.study_instance_uid:
            query = query.where(Study.study_instance_uid == where.study_instance_uid)
        if where.received_after:
            query = query.where(Study.last_received_at >= where.received_after)
        if where.received_before:
            query = query.where(Study.first_received_at <= where.received_before)
        if where.modality:
            query = query.where(
                exists().where(
                    Instance.study_instance_uid == Study.study_instance_uid,
                    func.upper(Instance.modality) == where.modality.upper(),
                )
            )
        if where.pipeline:
            query = query.where(
                exists().where(
                    Job.study_instance_uid == Study.study_instance_uid,
                    Job.pipeline_name == where.pipeline,
                )
            )
        with self._store.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            studies = list(
                s.scalars(
                    query.order_by(Study.last_received_at.desc(), Study.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )
            return [self._study_row(s, study) for study in studies], int(total)

    def study(self, study_uid: str) -> StudyRow | None:
        with self._store.session() as s:
            study = s.scalar(select(Study).where(Study.study_instance_uid == study_uid))
            return self._study_row(s, study) if study is not None else None

    @staticmethod
    def _study_row(s: Session, study: Study) -> StudyRow:
        modalities = s.scalars(
            select(Instance.modality)
            .where(
                Instance.study_instance_uid == study.study_instance_uid,
                Instance.modality.is_not(None),
            )
            .distinct()
        )
        jobs = s.execute(
            select(Job.state, func.count())
            .where(Job.study_instance_uid == study.study_instance_uid)
            .group_by(Job.state)
        )
        return StudyRow(
            study, tuple(sorted(m for m in modalities if m)), {state.value: n for state, n in jobs}
        )

    # -- files for DICOMweb -----------------------------------------------------

    def result_files(
        self,
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[DicomFile]:
        """Result objects the node wrote, optionally narrowed by UIDs."""
        query = select(Output, Job.study_instance_uid).join(Job, Job.id == Output.job_id)
        if study_uid:
            query = query.where(Job.study_instance_uid == study_uid)
        if series_uid:
            query = query.where(Output.series_instance_uid == series_uid)
        if sop_uid:
            query = query.where(Output.sop_instance_uid == sop_uid)
        with self._store.session() as s:
            return [
                DicomFile(
                    study,
                    o.series_instance_uid,
                    o.sop_instance_uid,
                    o.sop_class_uid,
                    o.transfer_syntax_uid,
                    o.path,
                    "result",
                )
                for o, study in s.execute(query.order_by(Output.id))
            ]

    def input_files(
        self,
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[DicomFile]:
        """Received instances the node holds (newest copy of each SOP instance)."""
        query = select(Instance).where(Instance.status == InstanceStatus.STORED)
        if study_uid:
            query = query.where(Instance.study_instance_uid == study_uid)
        if series_uid:
            query = query.where(Instance.series_instance_uid == series_uid)
        if sop_uid:
            query = query.where(Instance.sop_instance_uid == sop_uid)
        newest: dict[str, DicomFile] = {}
        with self._store.session() as s:
            for i in s.scalars(query.order_by(Instance.id)):
                newest[i.sop_instance_uid or ""] = DicomFile(
                    i.study_instance_uid or "",
                    i.series_instance_uid or "",
                    i.sop_instance_uid or "",
                    i.sop_class_uid or "",
                    i.transfer_syntax_uid or "",
                    i.path or "",
                    "input",
                )
        return list(newest.values())


def _job_conditions(query: Select[Job], where: JobFilter) -> Select[Job]:
    if where.state is not None:
        query = query.where(Job.state == where.state)
    if where.pipeline:
        query = query.where(Job.pipeline_name == where.pipeline)
    if where.modality:
        query = query.where(func.upper(Job.modality) == where.modality.upper())
    if where.route:
        query = query.where(Job.route_name == where.route)
    if where.study_instance_uid:
        query = query.where(Job.study_instance_uid == where.study_instance_uid)
    if where.created_after:
        query = query.where(Job.created_at >= where.created_after)
    if where.created_before:
        query = query.where(Job.created_at <= where.created_before)
    return query
