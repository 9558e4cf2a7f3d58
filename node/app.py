"""The one place the node is wired together.

Data flows one way, one stage per subpackage of ``node/``::

    ingress   (DIMSE C-STORE SCP, STOW-RS)  -> spool + audit database
    study     (assembler: is it complete?  -> router: which pipelines?
               -> planning: which jobs, and each job's ResultPlan)
    jobs      (runner -> worker processes: pipeline, then dicom_sr writers, as planned)
    egress    (C-STORE / STOW-RS to each destination: exactly its planned objects)

``retrieve`` pulls studies and priors from configured sources (inference
requests, completeness counts); ``http`` serves the REST API and DICOMweb;
``db`` holds the audit database. The scheduler drives the periodic stages;
every state change is a database row. :class:`Node` builds the graph in
:meth:`Node.__init__` and runs it in one life cycle (:meth:`Node.start`,
:meth:`Node.stop`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType

from apscheduler.schedulers.background import BackgroundScheduler

from dicom_sr.identity import DeviceIdentity
from node.config import Settings
from node.db.actions import JobActions
from node.db.engine import make_engine, migrate
from node.db.models import Job
from node.db.store import AuditStore
from node.egress.delivery import Egress
from node.http.api import ApiContext, create_api
from node.http.server import HttpServer
from node.ingress.dimse import ScpConfig, StorageScp
from node.ingress.stow import StowIngress
from node.jobs.loader import PipelineCatalog, check_pipelines
from node.jobs.runner import ProcessRunner
from node.jobs.spec import JobSpec, PriorInputs, SupersededOutput
from node.logs import install_log_hygiene
from node.metrics import NodeMetrics
from node.retrieve.counts import query_counts
from node.retrieve.prior import PriorFinder
from node.retrieve.requests import Retriever
from node.spool import Spool
from node.study.assembler import StudyAssembler
from node.study.completeness import CompletenessCheck
from node.study.plan import ResultPlan, ResultPlanner
from node.study.planning import JobPlanner

logger = logging.getLogger(__name__)


def ainode_version() -> str:
    try:
        return version("ainode")
    except PackageNotFoundError:
        return "0+unknown"


class Node:
    """A running ainode: SCP, scheduler, workers, HTTP API and database.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Parameters
    ----------
    settings : Settings
        The frozen settings.
    http : bool
        Whether to serve the HTTP API.
    """

    def __init__(self, settings: Settings, *, http: bool = True) -> None:
        self.settings = settings
        node = settings.node
        install_log_hygiene()
        check_pipelines(settings)
        self.pipelines = PipelineCatalog(settings.pipelines)
        self.storage_dir = Path(node.storage_dir).resolve()
        self.engine = make_engine(node.resolved_database_url)
        self.store = AuditStore(self.engine)
        self.metrics = NodeMetrics(self.store.counts)
        self.spool = Spool(self.storage_dir, node.min_free_disk_mb * 1024 * 1024)
        self.device = DeviceIdentity(
            software_versions=ainode_version(),
            device_serial_number=node.ae_title,
            institution_name=node.institution_name,
            device_name=node.ae_title,
        )
        # ingress
        self.scp = StorageScp(
            ScpConfig(
                node.ae_title,
                node.dicom_host,
                node.dicom_port,
                node.network_timeout_seconds,
                node.max_associations,
                node.allowed_calling_ae_titles,
                senders=_senders_by_ae(settings),
            ),
            self.spool,
            self.store,
            on_stored=self.metrics.on_instance,
        )
        self.stow = StowIngress(self.spool, self.store, on_stored=self.metrics.on_instance)
        # study: completeness, routing, planning
        self.planner = JobPlanner(
            settings.routes,
            ResultPlanner(settings.destinations, node.seg_series_number, node.sr_series_number),
            self.pipelines.info,
        )
        self.assembler = StudyAssembler(
            self.store,
            self.planner,
            node.study_stable_seconds,
            on_jobs=lambda _ids: self.runner.wake(),
            completeness=CompletenessCheck(
                self.store,
                settings.completeness,
                settings.source_for_calling_ae,
                lambda source, study: query_counts(
                    source, study, node.ae_title, settings.completeness.query_timeout_seconds
                ),
                recheck_seconds=max(1.0, min(5.0, node.study_stable_seconds / 2)),
                sources=settings.sources,
            ),
        )
        self.actions = JobActions(self.store, self.planner.replan)
        # jobs
        self.runner = ProcessRunner(
            self.store,
            self._job_spec,
            workers=node.workers,
            timeout=node.job_timeout_seconds,
            memory_limit_mb=node.worker_memory_limit_mb,
            poll_interval=node.poll_interval_seconds,
            on_done=self._job_done,
        )
        # egress
        self.egress = Egress(
            self.store,
            settings.destinations,
            node.ae_title,
            settings.egress,
            plan_of=self.plan_of,
            on_attempt=self.metrics.on_delivery,
        )
        # pull: inference requests
        self.retriever = Retriever(
            self.store,
            self.actions,
            self.spool,
            self.stow,
            settings.sources,
            node.ae_title,
            plan=lambda request, series: self.planner.for_request(
                request, series, tuple(settings.destinations)
            ),
            max_bytes=settings.api.max_upload_mb * 1024 * 1024,
            on_jobs=lambda _ids: self.runner.wake(),
            policy=settings.retrieval,
        )
        self.scheduler = BackgroundScheduler(
            timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1}
        )
        self._http = (
            HttpServer(create_api(self._api_context()), node.http_host, node.http_port)
            if http
            else None
        )
        self._running: contextlib.ExitStack | None = None

    def _api_context(self) -> ApiContext:
        settings = self.settings
        return ApiContext(
            store=self.store,
            metrics=self.metrics,
            health={"ae_title": settings.node.ae_title, "version": ainode_version()},
            api=settings.api,
            tokens=settings.api_tokens,
            actions=self.actions,
            stow=self.stow,
            sender_tokens=settings.sender_tokens,
            destinations=frozenset(settings.destinations),
            sources=frozenset(settings.sources),
            known_pipeline=self.pipelines.known,
            wake=self.wake,
        )

    # -- wiring callbacks --------------------------------------------------------

    def plan_of(self, job: Job | int) -> ResultPlan:
        """The result plan of a job (by row or id)."""
        row = self.store.job_row(job) if isinstance(job, int) else job
        if row is None:
            raise LookupError(f"no job {job}")
        return self.planner.plan_of(row)

    def _job_spec(self, job: Job) -> JobSpec:
        names = set((job.destinations or {}).get("names", []))
        return JobSpec(
            job_id=job.id,
            pipeline_name=job.pipeline_name,
            input_paths=tuple(i.path for i in job.inputs),
            plan=self.plan_of(job),
            output_dir=str(self.spool.result_dir(job.id)),
            device=self.device,
            withdrawals={
                destination: tuple(
                    SupersededOutput(
                        o.job_id,
                        o.variant,
                        o.sop_class_uid,
                        o.sop_instance_uid,
                        o.series_instance_uid,
                        o.path,
                    )
                    for o in outputs
                )
                for destination, outputs in self.store.withdrawals(job.id).items()
                if destination in names
            },
            pipeline_config=self.pipelines.config(job.pipeline_name),
            prior=self._find_prior(job),
        )

    def _find_prior(self, job: Job) -> PriorInputs | None:
        """Find and fetch the prior of a pipeline that compares with one.

        See :mod:`node.retrieve.prior`.

        Runs in the runner's slot thread before dispatch; raises ``JobError``
        (the job fails with its message) when there is no prior.
        """
        if not self.pipelines.compares_with_prior(job.pipeline_name):
            return None
        settings = self.settings
        finder = PriorFinder(
            self.store,
            self.spool,
            settings.sources,
            settings.node.ae_title,
            settings.source_for_calling_ae,
        )
        return finder.prior_for(job)

    def _job_done(self, job_id: int, succeeded: bool, seconds: float) -> None:
        self.metrics.on_job(job_id, succeeded, seconds)
        if succeeded:
            self.wake("egress")

    def wake(self, stage: str) -> None:
        """Run a stage now.

        ``runner``, or a scheduled one (``assembler``, ``egress``, ``retrieve``).
        """
        if stage == "runner":
            self.runner.wake()
            return
        if self._running is not None and self.scheduler.running:
            with contextlib.suppress(LookupError):
                self.scheduler.modify_job(stage, next_run_time=datetime.now(UTC))

    # -- life cycle ----------------------------------------------------------------

    @property
    def dicom_port(self) -> int:
        return self.scp.port

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    def start(self) -> Node:
        """Start every part; if one fails, stop those already started and re-raise."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        migrate(self.engine)
        try:
            with contextlib.ExitStack() as running:
                self.runner.start()
                running.callback(self.runner.stop)
                self._schedule()
                self.scheduler.start()
                running.callback(self.scheduler.shutdown, wait=True)
                self.scp.start()
                running.callback(self.scp.stop)
                if self._http:
                    self._http.start()
                    running.callback(self._http.stop)
                self._running = running.pop_all()
        except BaseException:
            self.engine.dispose()
            raise
        self.store.record_event(
            "node_started", f"ainode {ainode_version()} as {self.settings.node.ae_title}"
        )
        logger.info("ainode started: DICOM port %d, HTTP port %s", self.dicom_port, self.http_port)
        return self

    def _schedule(self) -> None:
        interval = self.settings.node.poll_interval_seconds
        ticks: list[tuple[str, Callable[[], object], float]] = [
            ("assembler", self.assembler.tick, interval),
            ("egress", self.egress.tick, interval),
            ("retrieve", self.retriever.tick, max(interval, 1.0)),
        ]
        self.actions.requeue_interrupted_requests()
        for name, tick, seconds in ticks:
            self.scheduler.add_job(_guarded(tick), "interval", seconds=seconds, id=name)

    def stop(self) -> None:
        """Stop what :meth:`start` started, in reverse order (HTTP and SCP first)."""
        running, self._running = self._running, None
        if running is None:
            return
        running.close()
        self.store.record_event("node_stopped", "clean shutdown")
        self.engine.dispose()
        logger.info("ainode stopped")

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _guarded(fn: Callable[[], object]) -> Callable[[], None]:
    """A scheduled tick that logs its failure and runs again at the next tick."""

    def run() -> None:
        try:
            fn()
        except Exception:
            logger.exception(
                "%s failed; will retry at the next tick", getattr(fn, "__qualname__", fn)
            )

    return run


def _senders_by_ae(settings: Settings) -> dict[str, str]:
    """``calling AE title -> source name``.

    The first source naming one wins (as in completeness).
    """
    senders: dict[str, str] = {}
    for name, source in settings.sources.items():
        for ae in source.sender_ae_titles:
            senders.setdefault(ae.strip().upper(), name)
    return senders
