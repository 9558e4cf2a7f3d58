"""The job runner: queued jobs run in worker processes, one job per worker at a time.

The runner's interface is narrow (:class:`JobRunner`: ``start``, ``wake``,
``stop``), and all job state lives in the database, so this local process
pool can later be swapped for a distributed engine.

Each worker slot is a thread that claims the oldest queued job, hands it to
its own long-lived worker process (spawned, so pipelines are initialised once
per process and reused), and waits with the per-job timeout. A job that
raises fails with its message; a worker that crashes (segfault, out of
memory, ``kill -9``) or runs past the timeout is killed and replaced, and
only that job fails. Jobs left running by a node that died are queued again
at start-up.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any, Protocol

from node.db.jobs import JobStore
from node.db.models import Job
from node.jobs.loader import PipelineCache
from node.jobs.spec import JobOutcome, JobSpec
from node.jobs.worker import execute_job
from node.logs import install_log_hygiene
from pipelines.errors import AinodeError

logger = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")


class JobRunner(Protocol):
    """What the rest of the node needs from a runner."""

    def start(self) -> None: ...

    def wake(self) -> None: ...

    def stop(self) -> None: ...


def _limit_memory(limit_mb: int) -> None:
    if limit_mb > 0:
        import resource

        limit = limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _worker_main(conn: Connection, memory_limit_mb: int, threads: int) -> None:
    """Worker process: run job specs received on ``conn`` until told to stop."""
    _limit_memory(memory_limit_mb)
    if threads > 0:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    logging.basicConfig(level=logging.WARNING)
    install_log_hygiene()
    cache = PipelineCache()
    try:
        while True:
            try:
                spec = conn.recv()
            except EOFError:
                return
            if spec is None:
                return
            try:
                conn.send(("ok", execute_job(spec, cache)))
            except AinodeError as exc:
                conn.send(("error", str(exc)))
            except MemoryError:
                conn.send(("error", "pipeline ran out of memory (worker memory limit)"))
            except Exception as exc:  # a bug in a pipeline: report it, keep the worker
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                conn.send(("error", f"pipeline error: {tb}"))
    finally:
        cache.close()


class _Worker:
    """One worker process and the pipe to it."""

    def __init__(self, memory_limit_mb: int, threads: int) -> None:
        parent, child = _SPAWN.Pipe()
        self.conn = parent
        self.process: SpawnProcess = _SPAWN.Process(
            target=_worker_main,
            args=(child, memory_limit_mb, threads),
            daemon=True,
            name="ainode-worker",
        )
        self.process.start()
        child.close()

    def run(self, spec: JobSpec, timeout: float) -> tuple[str, Any]:
        """Send ``spec`` and wait for its answer.

        Returns ``("ok", outcome)``, ``("error", msg)``, ``("crash", msg)`` or
        ``("timeout", msg)``.
        """
        try:
            self.conn.send(spec)
            if not self.conn.poll(timeout):
                return "timeout", f"job ran longer than its {timeout:.0f} s timeout; worker killed"
            return self.conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError, BrokenPipeError):
            self.process.join(5)
            code = self.process.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            return "crash", f"worker process died during the job ({how})"

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self, grace: float = 5.0) -> None:
        try:
            if self.process.is_alive():
                self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(grace)
        self.conn.close()


class ProcessRunner:
    """Local worker-process pool behind the :class:`JobRunner` interface.

    Parameters
    ----------
    store : JobStore
        Where jobs are claimed and their outcome recorded.
    build_spec : callable
        ``Job -> JobSpec`` (paths, result identities, device identity).
    workers : int
        Number of jobs run at once.
    timeout : float
        Per-job timeout in seconds.
    memory_limit_mb : int
        Address-space limit per worker process (0: none).
    poll_interval : float
        How often an idle slot checks the queue without being woken.
    on_done : callable, optional
        ``(job_id, succeeded, seconds)`` after each job (metrics, egress wake-up).
    """

    def __init__(
        self,
        store: JobStore,
        build_spec: Callable[[Job], JobSpec],
        *,
        workers: int,
        timeout: float,
        memory_limit_mb: int = 0,
        poll_interval: float = 0.5,
        threads_per_worker: int = 0,
        on_done: Callable[[int, bool, float], None] | None = None,
    ) -> None:
        self._store = store
        self._build_spec = build_spec
        self._n = workers
        self._timeout = timeout
        self._memory_limit = memory_limit_mb
        self._threads = threads_per_worker
        self._poll = poll_interval
        self._on_done = on_done
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._slots: list[threading.Thread] = []
        self._workers: list[_Worker | None] = []
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        requeued = self._store.requeue_interrupted()
        if requeued:
            logger.warning(
                "re-queued %d jobs interrupted by a restart: %s", len(requeued), requeued
            )
        self._workers = [_Worker(self._memory_limit, self._threads) for _ in range(self._n)]
        for slot in range(self._n):
            thread = threading.Thread(
                target=self._slot_loop, args=(slot,), name=f"ainode-slot-{slot}", daemon=True
            )
            thread.start()
            self._slots.append(thread)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop at once: running jobs are interrupted and queued again for the next start."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            for slot, worker in enumerate(self._workers):
                if worker is not None and worker.alive() and slot in self._busy:
                    worker.process.kill()  # idle workers get to finalize their pipelines below
        for thread in self._slots:
            thread.join(timeout=30)
        with self._lock:
            for worker in self._workers:
                if worker is not None:
                    worker.stop()
            self._workers = []
        self._slots = []

    def _slot_loop(self, slot: int) -> None:
        while not self._stopping.is_set():
            try:
                job = self._store.claim_next_job()
            except Exception:
                logger.exception("cannot claim a job (database unavailable?)")
                job = None
            if job is None:
                self._wake.wait(self._poll)
                self._wake.clear()
                continue
            self._run(slot, job)

    def _worker(self, slot: int) -> _Worker:
        with self._lock:
            worker = self._workers[slot]
            if worker is None or not worker.alive():
                worker = _Worker(self._memory_limit, self._threads)
                self._workers[slot] = worker
            return worker

    def _run(self, slot: int, job: Job) -> None:
        started = time.perf_counter()
        try:
            spec = self._build_spec(job)
        except AinodeError as exc:
            self._store.fail_job(job.id, str(exc))
            return
        worker = self._worker(slot)
        with self._lock:
            self._busy.add(slot)
        try:
            kind, payload = worker.run(spec, self._timeout)
        finally:
            with self._lock:
                self._busy.discard(slot)
        seconds = time.perf_counter() - started
        if kind in ("crash", "timeout"):
            with self._lock:
                broken = self._workers[slot]
                if broken is not None:
                    broken.process.kill()
                    broken.stop(grace=1)
                self._workers[slot] = None
        if kind != "ok" and self._stopping.is_set():
            self._store.requeue_job(job.id, "node shut down while the job was running")
            return
        if kind == "ok" and isinstance(payload, JobOutcome):
            self._store.finish_job(
                job.id, payload.outputs, payload.summary, payload.pipeline_version
            )
            logger.info("job %d succeeded in %.2f s", job.id, seconds)
        else:
            self._store.fail_job(job.id, str(payload))
            logger.warning("job %d failed: %s", job.id, payload)
        if self._on_done:
            self._on_done(job.id, kind == "ok", seconds)
