"""``ainode demo``: the whole path on loopback, with no configuration.

A node starts in-process (SQLite and spool in a fresh folder), a synthetic
chest CT phantom with known organ volumes is sent to it by real C-STORE, the
node analyses it with ``ct-anatomy``, and a loopback Storage SCP standing in
for the PACS receives the SEG and SR. A summary compares measured and true
volumes and says where everything is.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from node.app import Node
from node.config import load_settings
from node.db.models import JobState
from node.demo.phantom import Phantom, make_chest_phantom
from node.demo.scu import send_datasets
from node.dimse import quiet_pynetdicom, set_nodelay
from node.errors import AinodeError
from node.spool import safe_uid, write_atomic

PACS_AE = "DEMOPACS"


class LoopbackPacs:
    """A Storage SCP on 127.0.0.1 that writes what it receives to a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._server: ThreadedAssociationServer | None = None

    def __enter__(self) -> LoopbackPacs:
        quiet_pynetdicom()
        ae = AE(ae_title=PACS_AE)
        ae.supported_contexts = AllStoragePresentationContexts
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_CONN_OPEN, lambda e: set_nodelay(e.assoc)),
        ]
        self._server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.server_address[1])

    def _store(self, event: Any) -> int:
        uid = safe_uid(str(event.request.AffectedSOPInstanceUID))
        write_atomic(self.folder / f"{uid}.dcm", event.encoded_dataset())
        return 0x0000

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.dcm"))

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()


@dataclass(frozen=True)
class DemoResult:
    """What the demo did, for the summary and for tests."""

    workdir: Path
    phantom: Phantom
    job: dict[str, Any]
    received_files: tuple[Path, ...]
    seconds: dict[str, float]
    database_url: str


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AinodeError(f"demo: timed out waiting for {what}")


def run_demo(workdir: Path | None = None, report: Any = None, timeout: float = 300.0) -> DemoResult:
    """Run the demo; ``report(stage, detail)`` is called as it progresses."""
    say = report or (lambda stage, detail="": None)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="ainode-demo-"))
    if workdir.exists() and any(workdir.iterdir()):
        raise AinodeError(f"demo: {workdir} is not empty; give a new or empty folder")
    (workdir / "pacs").mkdir(parents=True, exist_ok=True)
    say("phantom", "making a synthetic chest CT (64 slices) with known volumes")
    phantom = make_chest_phantom()
    with LoopbackPacs(workdir / "pacs") as pacs:
        settings = load_settings(
            overrides={
                "node": {
                    "ae_title": "AINODE",
                    "dicom_host": "127.0.0.1",
                    "dicom_port": 0,
                    "http_port": 0,
                    "storage_dir": str(workdir / "node"),
                    "study_stable_seconds": 2,
                    "poll_interval_seconds": 0.2,
                    "min_free_disk_mb": 64,
                },
                "destinations": {
                    "pacs": {"dimse": {"ae_title": PACS_AE, "host": "127.0.0.1", "port": pacs.port}}
                },
                "routes": [
                    {
                        "name": "ct",
                        "match": {"Modality": "CT"},
                        "pipelines": ["ct-anatomy"],
                        "send_to": ["pacs"],
                    }
                ],
            }
        )
        with Node(settings, http=False) as node:
            t0 = time.perf_counter()
            n = len(phantom.datasets)
            send_datasets(
                phantom.datasets,
                "127.0.0.1",
                node.dicom_port,
                "AINODE",
                "DEMOSCU",
                progress=lambda i: say("send", f"{i}/{n}"),
            )
            t_sent = time.perf_counter()
            say(
                "assemble",
                f"waiting {settings.node.study_stable_seconds:g} s for the study to be complete",
            )
            jobs = _wait(lambda: node.store.list_jobs(limit=1), timeout, "the study to be complete")
            job_id = jobs[0].id
            say("analyse", f"job {job_id}: ct-anatomy running in a worker process")

            def settled() -> Any:
                job = node.store.list_jobs(limit=1)[0]
                if job.state in (JobState.DELIVERED, JobState.FAILED, JobState.DELIVERY_FAILED):
                    return job
                if job.state is JobState.SUCCEEDED:
                    say("deliver", "sending SEG + SR to the loopback PACS")
                return None

            _wait(settled, timeout, "the job to finish")
            t_done = time.perf_counter()
            found = node.store.get_job(job_id)
            if found is None:
                raise AinodeError("demo: job vanished")
            from node.http.schemas import job_detail

            detail = job_detail(*found)
            database_url = settings.node.resolved_database_url
    return DemoResult(
        workdir=workdir,
        phantom=phantom,
        job=detail,
        received_files=tuple(pacs.files()),
        seconds=_phases(detail, t_sent - t0, t_done - t0),
        database_url=database_url,
    )


def _phases(job: dict[str, Any], send: float, total: float) -> dict[str, float]:
    def gap(a: str, b: str) -> float:
        return (job[b] - job[a]).total_seconds() if job.get(a) and job.get(b) else float("nan")

    after_complete = gap("created_at", "delivered_at")
    return {
        "send (C-STORE)": send,
        "quiet period": total - send - after_complete,
        "queue": gap("created_at", "started_at"),
        "analysis + SEG/SR": gap("started_at", "finished_at"),
        "delivery": gap("finished_at", "delivered_at"),
        "total": total,
    }


def describe_received(files: tuple[Path, ...]) -> list[tuple[str, str, str, str]]:
    """``(modality, series description, SOP class name, file)`` for each received object."""
    rows = []
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        rows.append(
            (str(ds.Modality), str(ds.get("SeriesDescription", "")), ds.SOPClassUID.name, str(path))
        )
    return rows
