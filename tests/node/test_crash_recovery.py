"""kill -9 of a serving node loses nothing: the restarted node finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import peers
import pytest

from node.db.engine import make_engine
from node.db.models import InstanceStatus, JobState
from node.db.store import AuditStore
from node.demo.scu import send_datasets

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent.parent


def _serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    ainode = Path(sys.executable).with_name("ainode")
    # the project root before tests/, or tests/dicom_sr would shadow the dicom_sr package
    path = os.pathsep.join(
        p for p in (str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")) if p
    )
    env = os.environ | {"PYTHONPATH": path, "AINODE_TEST_SLOW_SECONDS": "4"}
    with open(log, "ab") as out:
        # its own session: kill -9 takes the node and its workers, like a container stop
        return subprocess.Popen(
            [str(ainode), "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def test_kill_9_during_a_job_loses_nothing(tmp_path: Path, chest_phantom: object) -> None:
    dicom_port = peers.free_port()
    config = tmp_path / "ainode.yaml"
    config.write_text(
        "node:\n"
        f"  dicom_host: 127.0.0.1\n  dicom_port: {dicom_port}\n  http_port: {peers.free_port()}\n"
        f"  storage_dir: {tmp_path / 'data'}\n  min_free_disk_mb: 16\n  study_stable_seconds: 1\n"
        "  poll_interval_seconds: 0.1\n"
        "routes:\n  - name: ct\n    match: {Modality: CT}\n"
        "    pipelines: ['faulty_pipelines:Slow']\n"
    )
    log = tmp_path / "serve.log"
    process = _serve(config, log)
    store = AuditStore(make_engine(f"sqlite:///{tmp_path / 'data' / 'ainode.db'}"))
    try:
        peers.wait_for(
            lambda: peers.echoscu("127.0.0.1", dicom_port, "AINODE").returncode == 0,
            timeout=60,
            what="the node to listen",
        )
        datasets = chest_phantom.datasets  # type: ignore[attr-defined]
        send_datasets(datasets, "127.0.0.1", dicom_port, "AINODE", "CRASHTEST")
        peers.wait_for(
            lambda: [j for j in store.list_jobs() if j.state is JobState.RUNNING],
            timeout=60,
            what="the job to run",
        )
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        [job] = store.list_jobs()
        assert job.state is JobState.RUNNING  # what a dead node leaves behind

        process = _serve(config, log)

        def finished() -> object:
            jobs = store.list_jobs()
            return (
                jobs[0] if jobs and jobs[0].state in (JobState.SUCCEEDED, JobState.FAILED) else None
            )

        job = peers.wait_for(finished, timeout=120, what="the job to finish after restart")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.attempts == 2
    instances = store.instances()
    assert len(instances) == len(datasets)
    assert all(i.status is InstanceStatus.STORED and Path(i.path or "").exists() for i in instances)
    assert "job_requeued" in [e.kind for e in store.events()]
    found = store.get_job(job.id)
    assert found is not None and sorted(o.kind for o in found[0].outputs) == ["SEG", "SR"]
