"""Routing: which pipelines run on a series, and where their results go.

Rules match on a series' DICOM attributes (PS3.3 General Series/Study
modules) and on the calling AE title. Every matching route applies, so one
series may go to several pipelines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from node.config import Route, RouteMatch


@dataclass(frozen=True)
class SeriesAttributes:
    """The attributes of one series that routing looks at."""

    series_instance_uid: str
    modality: str | None
    body_part_examined: str | None
    sop_class_uids: frozenset[str]
    series_description: str | None
    study_description: str | None
    calling_ae_titles: frozenset[str]


@dataclass(frozen=True)
class RouteDecision:
    """One pipeline to run on one series, and where to send its results."""

    route_name: str
    pipeline_name: str
    send_to: tuple[str, ...]


def _one_of(allowed: tuple[str, ...] | None, value: str | None) -> bool:
    if allowed is None:
        return True
    return value is not None and value.strip().upper() in {a.strip().upper() for a in allowed}


def _any_of(allowed: tuple[str, ...] | None, values: frozenset[str]) -> bool:
    if allowed is None:
        return True
    wanted = {a.strip().upper() for a in allowed}
    return any(v.strip().upper() in wanted for v in values)


def _search(pattern: str | None, value: str | None) -> bool:
    if pattern is None:
        return True
    return value is not None and re.search(pattern, value, re.IGNORECASE) is not None


def matches(match: RouteMatch, series: SeriesAttributes) -> bool:
    """Whether ``series`` satisfies every condition of ``match``."""
    return (
        _one_of(match.Modality, series.modality)
        and _one_of(match.BodyPartExamined, series.body_part_examined)
        and _any_of(match.SOPClassUID, series.sop_class_uids)
        and _any_of(match.CallingAETitle, series.calling_ae_titles)
        and _search(match.SeriesDescription, series.series_description)
        and _search(match.StudyDescription, series.study_description)
    )


def route(series: SeriesAttributes, routes: Sequence[Route]) -> list[RouteDecision]:
    """All (route, pipeline) pairs that apply to ``series``, in configuration order."""
    decisions: list[RouteDecision] = []
    for rule in routes:
        if matches(rule.match, series):
            decisions.extend(
                RouteDecision(rule.name, pipeline, rule.send_to) for pipeline in rule.pipelines
            )
    return decisions
