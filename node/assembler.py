"""Study assembly: decide when a study is complete, then route its series into jobs.

A study is complete when no new instance has arrived for
``study_stable_seconds`` (like Orthanc's *StableAge*). Instances that arrive
after a study's jobs were created make it pending again; the series they
belong to are analysed again as a whole in a new job, so nothing is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

from pydicom.uid import generate_uid

from node.config import Route
from node.db.models import Instance, utcnow
from node.db.store import AuditStore, PlannedJob
from node.router import SeriesAttributes, route

logger = logging.getLogger(__name__)

#: Root for UIDs the node mints (a UUID-derived 2.25 root needs no registration).
UID_PREFIX: str | None = None


def series_attributes(instances: Sequence[Instance]) -> SeriesAttributes:
    """Collect the routing attributes of one series from its instance rows."""
    first = instances[0]
    return SeriesAttributes(
        series_instance_uid=first.series_instance_uid or "",
        modality=first.modality,
        body_part_examined=first.body_part_examined,
        sop_class_uids=frozenset(i.sop_class_uid for i in instances if i.sop_class_uid),
        series_description=first.series_description,
        study_description=first.study_description,
        calling_ae_titles=frozenset(i.calling_ae_title for i in instances if i.calling_ae_title),
    )


def mint_result_uids(formats: Sequence[str] = ("SEG", "SR")) -> dict[str, dict[str, str]]:
    """New Series and SOP Instance UIDs for each result object of one job."""
    return {
        kind: {"series_instance_uid": generate_uid(UID_PREFIX), "sop_instance_uid": generate_uid(UID_PREFIX)}
        for kind in formats
    }


class StudyAssembler:
    """Turns quiet studies into queued jobs (run periodically by the scheduler).

    Parameters
    ----------
    store : AuditStore
        The audit store.
    routes : sequence of Route
        Routing rules from the settings.
    stable_seconds : float
        Quiet period after which a study counts as complete.
    pipeline_info : callable
        ``name -> (version, model checksum)`` for the audit record.
    on_jobs : callable, optional
        Called after jobs were queued (wakes the runner).
    """

    def __init__(
        self,
        store: AuditStore,
        routes: Sequence[Route],
        stable_seconds: float,
        pipeline_info: Callable[[str], tuple[str | None, str | None]],
        on_jobs: Callable[[list[int]], None] | None = None,
    ) -> None:
        self._store = store
        self._routes = tuple(routes)
        self._stable = timedelta(seconds=stable_seconds)
        self._pipeline_info = pipeline_info
        self._on_jobs = on_jobs

    def tick(self) -> list[int]:
        """Assemble every study that has been quiet long enough; return new job ids."""
        created: list[int] = []
        for study_uid in self._store.stable_studies(utcnow() - self._stable):
            created.extend(self.assemble(study_uid))
        if created and self._on_jobs:
            self._on_jobs(created)
        return created

    def assemble(self, study_uid: str) -> list[int]:
        """Route the new content of one study into jobs (one per series and pipeline)."""
        by_series = self._store.pending_series(study_uid)
        planned: list[PlannedJob] = []
        unrouted: list[str] = []
        for series_uid, instances in by_series.items():
            attrs = series_attributes(instances)
            decisions = route(attrs, self._routes)
            if not decisions:
                unrouted.append(series_uid)
                continue
            for decision in decisions:
                version, checksum = self._pipeline_info(decision.pipeline_name)
                planned.append(
                    PlannedJob(
                        study_instance_uid=study_uid,
                        series_instance_uid=series_uid,
                        modality=attrs.modality,
                        route_name=decision.route_name,
                        pipeline_name=decision.pipeline_name,
                        pipeline_version=version,
                        model_checksum=checksum,
                        destinations=decision.send_to,
                        result_uids=mint_result_uids(),
                        inputs=tuple((i.id, i.sop_instance_uid or "", i.path or "") for i in instances),
                    )
                )
        pending_ids = [i.id for instances in by_series.values() for i in instances if not i.dispatched]
        job_ids = self._store.dispatch_study(study_uid, pending_ids, planned, unrouted)
        logger.info("study complete: %d series, %d jobs, %d series without a route",
                    len(by_series), len(job_ids), len(unrouted))
        return job_ids
