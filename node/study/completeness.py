"""Evidence-based completeness: is a quiet study complete at the PACS that sent it?

When a study's sender is a configured source (known by the sender token of
its STOW-RS requests, or by its calling AE title), the quiet period is not
taken as proof: :class:`CompletenessCheck` asks the source how many instances
the study and each series hold (C-FIND / QIDO-RS,
:mod:`node.retrieve.counts`) and waits, up to
``completeness.max_wait_seconds`` after the last instance, for the rest; the
decision and its evidence go into the ``study_complete`` audit row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from node.config import CompletenessSettings, Source
from node.db.models import utcnow
from node.db.studies import StudyStore


@dataclass(frozen=True)
class Verdict:
    """Whether a quiet study may be analysed now, and the evidence for the audit record."""

    ready: bool
    note: str | None = None


class CompletenessCheck:
    """Evidence-based completeness: compare what arrived with what the sending PACS holds.

    Parameters
    ----------
    store : StudyStore
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
        store: StudyStore,
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
        """The configured source that sent the study.

        By recorded sender first, then by calling AE title.
        """
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
            f"{name} reports {total if total is not None else '?'} instances "
            f"in {len(expected)} series; "
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
