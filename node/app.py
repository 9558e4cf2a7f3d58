"""The one place the node is wired together.

Data flows one way: DIMSE ingress -> spool + audit -> assembler (is the study
complete?) -> router (which pipelines) -> runner (worker processes: pipeline,
then ``dicom_sr`` writers) -> egress (C-STORE to destinations). The
scheduler drives the periodic stages; every state change is a database row.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler

from dicom_sr.identity import DeviceIdentity
from node.api import ApiContext, create_api
from node.assembler import CompletenessCheck, StudyAssembler, mint_result_uids
from node.config import Settings
from node.db.actions import JobActions
from node.db.engine import make_engine, migrate
from node.db.models import Job
from node.db.store import AuditStore
from node.egress import Egress
from node.errors import ConfigError, JobError
from node.ingress_dicomweb import StowIngress
from node.ingress_dimse import ScpConfig, StorageScp
from node.metrics import NodeMetrics
from node.retrieve import Retriever, plan_request_jobs, query_counts
from node.runner import ProcessRunner
from node.storage import Spool
from node.work import (
    JobSpec,
    PriorInputs,
    ResultVariant,
    SupersededOutput,
    configured_pipeline_class,
    pipeline_class,
)
from pipelines.errors import PipelineError

logger = logging.getLogger(__name__)


def ainode_version() -> str:
    try:
        return version("ainode")
    except PackageNotFoundError:
        return "0+unknown"


def pipeline_info(name: str) -> tuple[str | None, str | None]:
    """``(version, model checksum)`` of a pipeline, for the audit record."""
    cls = pipeline_class(name)
    return cls.version, cls.model_checksum


def check_pipelines(settings: Settings) -> None:
    """Fail at start-up, not at the first study, when a route names an unknown pipeline.

    Pipelines configured under ``pipelines:`` (MONAI bundles) are checked by
    their own settings model (path exists, checksum given).
    """
    for route in settings.routes:
        for name in route.pipelines:
            try:
                if name in settings.pipelines:
                    _check_bundle(name, settings.pipelines[name].model_dump(mode="json"))
                    continue
                pipeline_class(name)
            except (PipelineError, JobError) as exc:
                raise ConfigError(f"route {route.name!r}: {exc}") from exc


def _check_bundle(name: str, config: dict[str, Any]) -> None:
    """Read a configured bundle's metadata and label map, and check its weights' SHA-256 now."""
    from pipelines.monai_bundle import WEIGHTS_FILE, sha256_of

    configured_pipeline_class(name, config)
    expected = str(config["sha256"]).lower().removeprefix("sha256:")
    weights = Path(config["path"]) / WEIGHTS_FILE
    if not weights.exists():
        raise PipelineError(f"bundle {name}: weights file {weights} is missing")
    actual = sha256_of(weights)
    if actual != expected:
        raise PipelineError(
            f"bundle {name}: weights checksum mismatch (configured {expected[:12]}..., file {actual[:12]}...); "
            f"refusing to load: check the bundle or update pipelines.{name}.sha256"
        )


class _HttpServer:
    def __init__(self, app: Any, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="ainode-http", daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            deadline.wait(0.02)
        if not self._server.started:
            raise ConfigError("the HTTP API did not start (is the http_port already in use?)")

    @property
    def port(self) -> int:
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


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
        check_pipelines(settings)
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
        self.runner = ProcessRunner(
            self.store,
            self._job_spec,
            workers=node.workers,
            timeout=node.job_timeout_seconds,
            memory_limit_mb=node.worker_memory_limit_mb,
            poll_interval=node.poll_interval_seconds,
            on_done=self._job_done,
        )
        self.assembler = StudyAssembler(
            self.store,
            settings.routes,
            node.study_stable_seconds,
            self._pipeline_info,
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
        self.egress = Egress(
            self.store,
            settings.destinations,
            node.ae_title,
            settings.egress,
            on_attempt=self.metrics.on_delivery,
        )
        self.stow = StowIngress(self.spool, self.store, on_stored=self.metrics.on_instance)
        self.actions = JobActions(self.store, mint_result_uids)
        self.retriever = Retriever(
            self.store,
            self.actions,
            self.spool,
            self.stow,
            settings.sources,
            node.ae_title,
            plan=lambda request, series: plan_request_jobs(
                request,
                series,
                settings.routes,
                tuple(settings.destinations),
                self._pipeline_info,
                mint_result_uids,
            ),
            max_bytes=settings.api.max_upload_mb * 1024 * 1024,
            on_jobs=lambda _ids: self.runner.wake(),
            policy=settings.retrieval,
        )
        self.scheduler = BackgroundScheduler(
            timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1}
        )
        self._http = (
            _HttpServer(create_api(self._api_context()), node.http_host, node.http_port)
            if http
            else None
        )
        self._started = False

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
            known_pipeline=self._known_pipeline,
            wake=self.wake,
        )

    def _known_pipeline(self, name: str) -> bool:
        if name in self.settings.pipelines:
            return True
        try:
            pipeline_class(name)
        except (PipelineError, JobError):
            return False
        return True

    def _pipeline_info(self, name: str) -> tuple[str | None, str | None]:
        configured = self.settings.pipelines.get(name)
        if configured is not None:
            cls = configured_pipeline_class(name, configured.model_dump(mode="json"))
            return cls.version, cls.model_checksum
        return pipeline_info(name)

    def _formats(self, job: Job) -> tuple[str, ...]:
        """The result formats the job's destinations ask for (SEG + SR when it has none)."""
        wanted: set[str] = set()
        for name in (job.destinations or {}).get("names", []):
            destination = self.settings.destinations.get(name)
            if destination is not None:
                wanted.update(destination.formats)
        return _ordered(wanted) or ("seg", "sr")

    def _variants(self, job: Job) -> tuple[ResultVariant, ...]:
        """One result variant per distinct profile among the job's destinations."""
        grouped: dict[str, tuple[set[str], dict[str, Any]]] = {}
        for name in (job.destinations or {}).get("names", []):
            destination = self.settings.destinations.get(name)
            if destination is None:
                continue
            formats, _ = grouped.setdefault(
                destination.variant,
                (set(), destination.profile.effective(destination.formats).model_dump()),
            )
            formats.update(destination.formats)
        return tuple(
            ResultVariant.from_settings(key, _ordered(formats), options)
            for key, (formats, options) in grouped.items()
        )

    # -- wiring callbacks --------------------------------------------------------

    def _job_spec(self, job: Job) -> JobSpec:
        node = self.settings.node
        return JobSpec(
            job_id=job.id,
            pipeline_name=job.pipeline_name,
            input_paths=tuple(i.path for i in job.inputs),
            result_uids=job.result_uids,
            output_dir=str(self.spool.result_dir(job.id)),
            seg_series_number=node.seg_series_number,
            sr_series_number=node.sr_series_number,
            device=self.device,
            formats=self._formats(job),
            variants=self._variants(job),
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
                if destination in (job.destinations or {}).get("names", [])
            },
            pipeline_config=(
                self.settings.pipelines[job.pipeline_name].model_dump(mode="json")
                if job.pipeline_name in self.settings.pipelines
                else None
            ),
            prior=self._find_prior(job),
        )

    def _find_prior(self, job: Job) -> PriorInputs | None:
        """For a pipeline that compares with a prior (``run_with_prior``): find and fetch it (:mod:`node.prior`).

        Runs in the runner's slot thread before dispatch; raises ``JobError``
        (the job fails with its message) when there is no prior.
        """
        if job.pipeline_name in self.settings.pipelines:
            return None
        if not hasattr(pipeline_class(job.pipeline_name), "run_with_prior"):
            return None
        from node.prior import PriorFinder

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
        """Run a stage now: ``runner``, or a scheduled one (``assembler``, ``egress``, ``retrieve``)."""
        if stage == "runner":
            self.runner.wake()
            return
        if self._started:
            try:
                self.scheduler.modify_job(stage, next_run_time=_now())
            except LookupError:
                pass

    # -- life cycle ----------------------------------------------------------------

    @property
    def dicom_port(self) -> int:
        return self.scp.port

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    def start(self) -> Node:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        migrate(self.engine)
        self.runner.start()
        interval = self.settings.node.poll_interval_seconds
        self.scheduler.add_job(
            _guarded(self.assembler.tick), "interval", seconds=interval, id="assembler"
        )
        self.scheduler.add_job(
            _guarded(self.egress.tick), "interval", seconds=interval, id="egress"
        )
        self.actions.requeue_interrupted_requests()
        self.scheduler.add_job(
            _guarded(self.retriever.tick), "interval", seconds=max(interval, 1.0), id="retrieve"
        )
        self.scheduler.start()
        self.scp.start()
        if self._http:
            self._http.start()
        self._started = True
        self.store.record_event(
            "node_started", f"ainode {ainode_version()} as {self.settings.node.ae_title}"
        )
        logger.info("ainode started: DICOM port %d, HTTP port %s", self.dicom_port, self.http_port)
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.scp.stop()
        if self._http:
            self._http.stop()
        self.scheduler.shutdown(wait=True)
        self.runner.stop()
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


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _guarded(fn: Any) -> Any:
    def run() -> None:
        try:
            fn()
        except Exception:
            logger.exception(
                "%s failed; will retry at the next tick", getattr(fn, "__qualname__", fn)
            )

    return run


_FORMAT_ORDER = ("seg", "sr", "sc", "pdf", "ko")


def _ordered(formats: set[str]) -> tuple[str, ...]:
    """Result formats in the order they are written."""
    return tuple(f for f in _FORMAT_ORDER if f in formats)


def _senders_by_ae(settings: Settings) -> dict[str, str]:
    """``calling AE title -> source name``; the first source naming an AE title wins (as in completeness)."""
    senders: dict[str, str] = {}
    for name, source in settings.sources.items():
        for ae in source.sender_ae_titles:
            senders.setdefault(ae.strip().upper(), name)
    return senders
