"""Benchmark the node end to end on loopback (not a test: it measures, it never asserts).

Measures
--------
1. C-STORE ingest: instances/s and MB/s into the node's Storage SCP from dcmtk
   ``storescu`` (TCP_NODELAY=1) and from a pynetdicom SCU, for a 300-slice
   512x512 CT (the node writes each instance durably before answering).
2. Time from "study complete" (the assembler's decision, after the quiet
   period) to "SEG + SR stored in Orthanc" (the delivery's C-STORE
   responses), for the demo phantom and for the 300-slice 512x512 CT, with a
   real Orthanc as the PACS; and the pipeline's own phases (load, analyse, write).
3. Peak memory: the node process and its worker processes (max RSS).

Run: ``.venv/bin/python benchmarks/bench_node.py [--slices 300] [--size 512]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [
    str(ROOT),
    str(ROOT / "tests"),
]  # the project first: tests/dicom_sr must not shadow dicom_sr

import peers  # noqa: E402

from node.app import Node  # noqa: E402
from node.config import load_settings  # noqa: E402
from node.db.models import JobState  # noqa: E402
from node.demo.phantom import make_chest_phantom  # noqa: E402
from node.demo.scu import send_datasets  # noqa: E402


def _settings(workdir: Path, orthanc: peers.Orthanc | None, routes: bool) -> Any:
    overrides: dict[str, Any] = {
        "node": {
            "dicom_host": "127.0.0.1",
            "dicom_port": 0,
            "http_port": 0,
            "storage_dir": str(workdir),
            "study_stable_seconds": 1.0,
            "poll_interval_seconds": 0.1,
            "min_free_disk_mb": 64,
            "job_timeout_seconds": 600,
        },
    }
    if orthanc is not None:
        overrides["destinations"] = {
            "pacs": {
                "dimse": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
            }
        }
    if routes:
        overrides["routes"] = [
            {
                "name": "ct",
                "match": {"Modality": "CT"},
                "pipelines": ["ct-anatomy"],
                "send_to": ["pacs"] if orthanc else [],
            }
        ]
    return load_settings(overrides=overrides)


def bench_ingest(datasets: list[Any], tmp: Path) -> dict[str, Any]:
    files = []
    for i, ds in enumerate(datasets):
        path = tmp / "files" / f"{i:04d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    out: dict[str, Any] = {"instances": len(files), "megabytes": round(megabytes, 1)}
    with Node(_settings(tmp / "ingest-dcmtk", None, routes=False), http=False) as node:
        t0 = time.perf_counter()
        peers.storescu("127.0.0.1", node.dicom_port, "AINODE", files, check=True, timeout=600)
        seconds = time.perf_counter() - t0
    out["storescu"] = {
        "seconds": round(seconds, 2),
        "instances_per_s": round(len(files) / seconds, 1),
        "mb_per_s": round(megabytes / seconds, 1),
    }
    with Node(_settings(tmp / "ingest-pynetdicom", None, routes=False), http=False) as node:
        t0 = time.perf_counter()
        send_datasets(datasets, "127.0.0.1", node.dicom_port, "AINODE", timeout=120)
        seconds = time.perf_counter() - t0
    out["pynetdicom_scu"] = {
        "seconds": round(seconds, 2),
        "instances_per_s": round(len(files) / seconds, 1),
        "mb_per_s": round(megabytes / seconds, 1),
    }
    return out


def bench_round_trip(name: str, phantom: Any, orthanc: peers.Orthanc, tmp: Path) -> dict[str, Any]:
    with Node(_settings(tmp / f"rt-{name}", orthanc, routes=True), http=False) as node:
        orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
        t0 = time.perf_counter()
        send_datasets(phantom.datasets, "127.0.0.1", node.dicom_port, "AINODE", timeout=120)
        sent = time.perf_counter() - t0

        def delivered() -> Any:
            jobs = node.store.list_jobs(limit=1)
            if jobs and jobs[0].state in (
                JobState.DELIVERED,
                JobState.FAILED,
                JobState.DELIVERY_FAILED,
            ):
                return jobs[0]
            return None

        job = peers.wait_for(delivered, timeout=900, interval=0.1, what="results delivered")
        found = node.store.get_job(job.id)
        if found is None:
            raise SystemExit("job vanished")
        job, _deliveries, _ = found
        events = {e.kind: e.at for e in node.store.events(kind="study_complete")}
        complete_at = events["study_complete"]
    if job.state is not JobState.DELIVERED:
        return {"error": job.error or job.state.value}
    summary = job.summary or {}
    return {
        "instances": len(phantom.datasets),
        "send_s": round(sent, 2),
        "complete_to_results_in_orthanc_s": round(
            (job.delivered_at - complete_at).total_seconds(), 2
        ),
        "queue_wait_s": round((job.started_at - complete_at).total_seconds(), 2)
        if job.started_at
        else None,
        "job_run_s": round((job.finished_at - job.started_at).total_seconds(), 2),
        "delivery_s": round((job.delivered_at - job.finished_at).total_seconds(), 2),
        "worker_phases_s": summary.get("timings"),
        "segments": {s["label"]: s["volume_ml"] for s in summary.get("segments", [])},
        "true_volumes_ml": {k: round(v, 1) for k, v in phantom.true_volumes_ml.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="ainode-bench-") as tmpdir:
        tmp = Path(tmpdir)
        print(f"making a {args.slices}x{args.size}x{args.size} CT phantom ...", flush=True)
        spacing = 350.0 / args.size
        big = make_chest_phantom(
            n_slices=args.slices,
            rows=args.size,
            columns=args.size,
            pixel_spacing=(spacing, spacing),
            slice_thickness=1.0,
        )
        print("C-STORE ingest ...", flush=True)
        results["ingest"] = bench_ingest(big.datasets, tmp)
        print(json.dumps(results["ingest"], indent=2), flush=True)
        with peers.Orthanc() as orthanc:
            print("round trip: demo phantom ...", flush=True)
            results["round_trip_demo"] = bench_round_trip(
                "demo", make_chest_phantom(), orthanc, tmp
            )
            print(json.dumps(results["round_trip_demo"], indent=2), flush=True)
            print(f"round trip: {args.slices}-slice CT ...", flush=True)
            results["round_trip_large"] = bench_round_trip("large", big, orthanc, tmp)
            print(json.dumps(results["round_trip_large"], indent=2), flush=True)
    results["peak_rss_mb"] = {
        "node_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "largest_worker_or_child": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
    }
    print(json.dumps(results, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
