"""Job planning: routing decisions become jobs, each with its :class:`ResultPlan`.

One planner for every way a job comes about: a complete pushed study
(:meth:`JobPlanner.for_study`), an inference request
(:meth:`JobPlanner.for_request`) and a re-run (:meth:`JobPlanner.replan`).
Each job gets freshly minted result UIDs and, from them, its result plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydicom.uid import generate_uid

from dicom_sr.kinds import ResultKind
from node.config import Route
from node.db.jobs import PlannedJob
from node.db.models import InferenceRequest, Instance, Job
from node.study.plan import ResultPlan, ResultPlanner
from node.study.router import SeriesAttributes, route

#: Root for UIDs the node mints (a UUID-derived 2.25 root needs no registration).
UID_PREFIX: str | None = None
#: Modalities of objects that are results or documents, not images to analyse.
NON_IMAGE_MODALITIES = frozenset({"SR", "SEG", "KO", "PR", "REG", "RTSTRUCT", "DOC", "OT"})


def mint_result_uids() -> dict[str, dict[str, str]]:
    """New Series and SOP Instance UIDs for each kind of result object of one job.

    Minted once, when the job is queued, and recorded with it (the plan's
    UIDs derive from them): a re-run of the same job writes the same
    objects, so a PACS never receives duplicates.
    """
    return {
        kind.value: {
            "series_instance_uid": generate_uid(UID_PREFIX),
            "sop_instance_uid": generate_uid(UID_PREFIX),
        }
        for kind in ResultKind
    }


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


class JobPlanner:
    """Plans jobs and their results.

    Parameters
    ----------
    routes : sequence of Route
        The routing rules.
    results : ResultPlanner
        Plans each job's result objects from its destinations.
    pipeline_info : callable
        ``name -> (version, model checksum)`` for the audit record.
    mint : callable
        New result UIDs for one job (:func:`mint_result_uids`).
    """

    def __init__(
        self,
        routes: Sequence[Route],
        results: ResultPlanner,
        pipeline_info: Callable[[str], tuple[str | None, str | None]],
        mint: Callable[[], dict[str, dict[str, str]]] = mint_result_uids,
    ) -> None:
        self._routes = tuple(routes)
        self._results = results
        self._pipeline_info = pipeline_info
        self._mint = mint

    def late_series(self, route_name: str) -> str:
        """A route's ``late_series`` policy (``add`` for a route no longer configured)."""
        return next((r.late_series for r in self._routes if r.name == route_name), "add")

    @property
    def reruns_late_series(self) -> bool:
        """Whether any route re-runs analysed series when late content arrives."""
        return any(r.late_series == "rerun" for r in self._routes)

    def for_study(
        self,
        study_uid: str,
        pending: Mapping[str, Sequence[Instance]],
        again: Mapping[str, Sequence[Instance]],
    ) -> tuple[list[PlannedJob], list[str]]:
        """The jobs of a complete study's new content; also the series no route matched.

        ``pending``: series with new instances; ``again``: analysed series that
        ``late_series: rerun`` routes analyse again (only those routes run).
        """
        planned: list[PlannedJob] = []
        unrouted: list[str] = []
        for series_uid, instances in {**pending, **again}.items():
            attrs = series_attributes(list(instances))
            decisions = route(attrs, self._routes)
            if series_uid in again:
                decisions = [d for d in decisions if self.late_series(d.route_name) == "rerun"]
            elif not decisions:
                unrouted.append(series_uid)
                continue
            for decision in decisions:
                planned.append(
                    self.job(
                        study_uid,
                        attrs,
                        instances,
                        decision.route_name,
                        decision.pipeline_name,
                        decision.send_to,
                        replaces_earlier=self.late_series(decision.route_name) == "rerun",
                    )
                )
        return planned, unrouted

    def for_request(
        self,
        request: InferenceRequest,
        series: Mapping[str, Sequence[Instance]],
        configured: Sequence[str],
    ) -> list[PlannedJob]:
        """The jobs of an inference request.

        With named pipelines: each runs on every image series of the study.
        Without: the routes decide, as for a pushed study. Results go to the
        request's destinations, or (when it names none) to the destination
        named like the source (of ``configured``), else to the routes'.
        """
        wanted = list(request.pipelines.get("names", []))
        named = [d for d in request.destinations.get("names", []) if d != "*"]
        default = [request.source] if request.source in configured else None
        planned = []
        for instances in series.values():
            attrs = series_attributes(list(instances))
            if wanted:
                if (attrs.modality or "").upper() in NON_IMAGE_MODALITIES:
                    continue
                pairs: list[tuple[str | None, str, tuple[str, ...]]] = [
                    (None, name, ()) for name in wanted
                ]
            else:
                pairs = [
                    (d.route_name, d.pipeline_name, d.send_to) for d in route(attrs, self._routes)
                ]
            for route_name, pipeline, send_to in pairs:
                planned.append(
                    self.job(
                        request.study_instance_uid,
                        attrs,
                        instances,
                        route_name or f"request-{request.id}",
                        pipeline,
                        tuple(named or default or send_to),
                    )
                )
        return planned

    def job(
        self,
        study_uid: str,
        attrs: SeriesAttributes,
        instances: Sequence[Instance],
        route_name: str,
        pipeline: str,
        destinations: Sequence[str],
        *,
        replaces_earlier: bool = False,
    ) -> PlannedJob:
        """One job: its inputs, the audit record's pipeline identity, its minted UIDs and plan."""
        version, checksum = self._pipeline_info(pipeline)
        seed = self._mint()
        plan = self._results.plan(pipeline, destinations, seed, replaces_earlier=replaces_earlier)
        return PlannedJob(
            study_instance_uid=study_uid,
            series_instance_uid=attrs.series_instance_uid,
            modality=attrs.modality,
            route_name=route_name,
            pipeline_name=pipeline,
            pipeline_version=version,
            model_checksum=checksum,
            destinations=tuple(destinations),
            result_uids=seed,
            plan=plan.as_json(),
            inputs=tuple((i.id, i.sop_instance_uid or "", i.path or "") for i in instances),
            replaces_earlier=replaces_earlier,
        )

    def replan(self, job: Job) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
        """New UIDs and a new plan for a re-run of ``job`` (destinations as now configured)."""
        seed = self._mint()
        names = list((job.destinations or {}).get("names", []))
        return seed, self._results.plan(job.pipeline_name, names, seed).as_json()

    def plan_of(self, job: Job) -> ResultPlan:
        """The job's stored plan; for a job queued before plans were stored, planned now.

        Such a job is planned from its minted UIDs and the destinations as now
        configured, with a rejection note per destination (written only where
        there is something to withdraw).
        """
        if job.plan:
            return ResultPlan.from_json(job.plan)
        names = list((job.destinations or {}).get("names", []))
        return self._results.plan(job.pipeline_name, names, job.result_uids, replaces_earlier=True)
