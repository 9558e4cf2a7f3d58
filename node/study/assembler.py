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
from collections.abc import Callable
from datetime import timedelta

from node.db.models import Instance, utcnow
from node.db.studies import StudyStore
from node.study.completeness import CompletenessCheck, Verdict
from node.study.planning import JobPlanner

logger = logging.getLogger(__name__)


class StudyAssembler:
    """Turns quiet studies into queued jobs (run periodically by the scheduler).

    Parameters
    ----------
    store : StudyStore
        The audit store.
    planner : JobPlanner
        Routes the series and plans their jobs.
    stable_seconds : float
        Quiet period after which a study counts as complete.
    on_jobs : callable, optional
        Called after jobs were queued (wakes the runner).
    """

    def __init__(
        self,
        store: StudyStore,
        planner: JobPlanner,
        stable_seconds: float,
        on_jobs: Callable[[list[int]], None] | None = None,
        completeness: CompletenessCheck | None = None,
    ) -> None:
        self._store = store
        self._planner = planner
        self._stable = timedelta(seconds=stable_seconds)
        self._on_jobs = on_jobs
        self._completeness = completeness

    def tick(self) -> list[int]:
        """Assemble every study that has been quiet long enough (and is complete).

        Returns the ids of the new jobs.
        """
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
        """Series a ``late_series: rerun`` route already analysed, to analyse again."""
        if not self._planner.reruns_late_series:
            return {}
        analysed = self._store.analysed_series(study_uid)
        return {
            series: rows
            for series, rows in self._store.study_series(study_uid).items()
            if series not in pending
            and any(self._planner.late_series(r) == "rerun" for r, s in analysed if s == series)
        }

    def assemble(self, study_uid: str, completeness: str | None = None) -> list[int]:
        """Route the new content of one study into jobs (one per series and pipeline)."""
        by_series = self._store.pending_series(study_uid)
        again = self._late_reruns(study_uid, by_series)
        planned, unrouted = self._planner.for_study(study_uid, by_series, again)
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
