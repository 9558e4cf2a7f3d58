"""Study assembly: decide when a study is complete, then route its series into jobs.

A study is a candidate when no new instance has arrived for
``study_stable_seconds`` (like Orthanc's *StableAge*). When its sender is a
configured source (known by the sender token of its STOW-RS requests, or by
its calling AE title), the quiet period is not taken as proof: the
:class:`CompletenessCheck` asks the source how many instances the study and
each series hold (C-FIND / QIDO-RS) and waits, up to
``completeness.max_wait_seconds`` after the last instance, for the rest;
the decision and its evidence are in the ``study_complete`` audit row.

Instances that arrive after a study's jobs were created make it pending
again. Each route's ``late_series`` policy says what then runs: ``add``
analyses the new or changed series and keeps earlier results; ``rerun``
analyses every series of the study the route matched again and replaces
the earlier results: the new job's rejection note (IHE IOCM) withdraws them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydicom.uid import generate_uid

from node.config import CompletenessSettings, Route, Source
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


#: Every result kind a destination may ask for (``formats``); UIDs are minted for all.
RESULT_KINDS = ("SEG", "SR", "SC", "PDF", "KO", "DERIVED", "REG", "REJECT")


def mint_result_uids(formats: Sequence[str] = RESULT_KINDS) -> dict[str, dict[str, str]]:
    """New Series and SOP Instance UIDs for each result object of one job.

    Minted once, when the job is queued, and recorded with it: a re-run of the
    same job writes the same objects, so a PACS never receives duplicates.
    """
    return {
        kind: {
            "series_instance_uid": generate_uid(UID_PREFIX),
            "sop_instance_uid": generate_uid(UID_PREFIX),
        }
        for kind in formats
    }


@dataclass(frozen=True)
class Verdict:
    """Whether a quiet study may be analysed now, and the evidence for the audit record."""

    ready: bool
    note: str | None = None


class CompletenessCheck:
    """Evidence-based completeness: compare what arrived with what the sending PACS holds.

    Parameters
    ----------
    store : AuditStore
        The audit store.
    settings : CompletenessSettings
        ``enabled``, ``max_wait_seconds``.
    find_source : callable
        ``calling AE title -> (name, Source) | None``.
    count : callable
        ``(Source, study UID) -> StudyCounts`` (raises on failure).
    recheck_seconds : float
        How often a waiting study's source is asked again.
    sources : mapping of str to Source, optional
        The configured sources by name, for instances recorded with their
        sender (a STOW-RS request made with a source's sender token).
    """

    def __init__(
        self,
        store: AuditStore,
        settings: CompletenessSettings,
        find_source: Callable[[str | None], tuple[str, Source] | None],
        count: Callable[[Source, str], Any],
        recheck_seconds: float = 2.0,
        sources: Mapping[str, Source] | None = None,
    ) -> None:
        self._store, self._settings = store, settings
        self._find_source, self._count = find_source, count
        self._recheck = recheck_seconds
        self._sources = dict(sources or {})
        self._next_check: dict[str, float] = {}

    def sending_source(self, study_uid: str) -> tuple[str, Source] | None:
        """The configured source that sent the study: by recorded sender first, then by calling AE title."""
        for name in sorted(self._store.study_sender_sources(study_uid)):
            source = self._sources.get(name)
            if source is not None:
                return name, source
        return next(
            (
                f
                for ae in sorted(self._store.study_senders(study_uid))
                if (f := self._find_source(ae)) is not None
            ),
            None,
        )

    def verdict(self, study_uid: str) -> Verdict:
        if not self._settings.enabled:
            return Verdict(True)
        found = self.sending_source(study_uid)
        if found is None:
            return Verdict(True)
        if time.monotonic() < self._next_check.get(study_uid, 0.0):
            return Verdict(False)
        name, source = found
        try:
            counts = self._count(source, study_uid)
        except Exception as exc:  # a PACS that cannot answer must not hold studies back
            self._next_check.pop(study_uid, None)
            return Verdict(
                True, f"completeness unknown ({name} did not answer: {exc}); quiet period only"
            )
        return self._compare(study_uid, name, counts)

    def _compare(self, study_uid: str, name: str, counts: Any) -> Verdict:
        own = self._store.result_series(study_uid)
        held = {series: len(rows) for series, rows in self._store.study_series(study_uid).items()}
        expected = {series: n for series, n in counts.series.items() if series not in own}
        total = sum(expected.values()) if expected else counts.study
        missing = {
            series: n - held.get(series, 0)
            for series, n in expected.items()
            if held.get(series, 0) < n
        }
        have = sum(held.values())
        evidence = (
            f"{name} reports {total if total is not None else '?'} instances in {len(expected)} series; "
            f"node holds {have}"
        )
        if not missing and (total is None or have >= total):
            self._next_check.pop(study_uid, None)
            return Verdict(True, f"complete by evidence: {evidence}")
        study = self._store.study_row(study_uid)
        waited = (utcnow() - study.last_received_at).total_seconds() if study else 0.0
        if waited >= self._settings.max_wait_seconds:
            self._next_check.pop(study_uid, None)
            return Verdict(
                True,
                f"INCOMPLETE after waiting {waited:.0f} s "
                f"(completeness.max_wait_seconds): {evidence}; "
                f"{sum(missing.values())} instances missing in {len(missing)} series; "
                "analysing what arrived",
            )
        if study_uid not in self._next_check:
            self._store.record_event(
                "completeness_wait",
                f"waiting for the rest of the study: {evidence}",
                study_instance_uid=study_uid,
            )
        self._next_check[study_uid] = time.monotonic() + self._recheck
        return Verdict(False)


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
        completeness: CompletenessCheck | None = None,
    ) -> None:
        self._store = store
        self._routes = tuple(routes)
        self._stable = timedelta(seconds=stable_seconds)
        self._pipeline_info = pipeline_info
        self._on_jobs = on_jobs
        self._completeness = completeness

    def tick(self) -> list[int]:
        """Assemble every study that has been quiet long enough (and is complete); return new job ids."""
        created: list[int] = []
        for study_uid in self._store.stable_studies(utcnow() - self._stable):
            verdict = self._completeness.verdict(study_uid) if self._completeness else Verdict(True)
            if verdict.ready:
                created.extend(self.assemble(study_uid, verdict.note))
        if created and self._on_jobs:
            self._on_jobs(created)
        return created

    def _late_reruns(
        self, study_uid: str, pending: dict[str, list[Instance]]
    ) -> dict[str, list[Instance]]:
        """Series already analysed by a ``late_series: rerun`` route, to analyse again with the new content."""
        if not any(r.late_series == "rerun" for r in self._routes):
            return {}
        analysed = self._store.analysed_series(study_uid)
        rerun_routes = {r.name for r in self._routes if r.late_series == "rerun"}
        return {
            series: rows
            for series, rows in self._store.study_series(study_uid).items()
            if series not in pending and any((r, series) in analysed for r in rerun_routes)
        }

    def assemble(self, study_uid: str, completeness: str | None = None) -> list[int]:
        """Route the new content of one study into jobs (one per series and pipeline)."""
        by_series = self._store.pending_series(study_uid)
        again = self._late_reruns(study_uid, by_series)
        planned: list[PlannedJob] = []
        unrouted: list[str] = []
        for series_uid, instances in {**by_series, **again}.items():
            attrs = series_attributes(instances)
            decisions = route(attrs, self._routes)
            if series_uid in again:
                decisions = [d for d in decisions if self._policy(d.route_name) == "rerun"]
            elif not decisions:
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
                        inputs=tuple(
                            (i.id, i.sop_instance_uid or "", i.path or "") for i in instances
                        ),
                        replaces_earlier=self._policy(decision.route_name) == "rerun",
                    )
                )
        pending_ids = [
            i.id for instances in by_series.values() for i in instances if not i.dispatched
        ]
        if again:
            note = f"late content: {len(again)} analysed series re-run (late_series: rerun)"
            completeness = f"{completeness}; {note}" if completeness else note
        job_ids = self._store.dispatch_study(
            study_uid, pending_ids, planned, unrouted, completeness
        )
        logger.info(
            "study complete: %d series, %d jobs, %d series without a route",
            len(by_series),
            len(job_ids),
            len(unrouted),
        )
        return job_ids

    def _policy(self, route_name: str) -> str:
        return next((r.late_series for r in self._routes if r.name == route_name), "add")
