"""Benchmark STOW-RS ingest into the node on loopback, beside C-STORE.

It measures, it never asserts.

For a CT series (default 300 slices of 512x512), measures instances/s and
MB/s into the node's ``POST /dicom-web/studies``:

* the whole series in one multipart/related request (streamed, chunked),
* batches of 50 instances per request,
* one instance per request on a kept-alive connection,
* dicomweb-client's ``store_instances`` (the whole series, built in memory),

and, in the same run for comparison, dcmtk ``storescu`` (TCP_NODELAY=1) into
the node's Storage SCP. Each instance is written durably (fsync) and recorded
in the audit database before the node answers. Then, with ``api.serve_inputs``,
WADO-RS Retrieve Frames (native frame 1 of every instance, one request each on
a kept-alive connection, as OHIF loads a series) and Retrieve Rendered (JPEG).

Run: ``.venv/bin/python benchmarks/bench_dicomweb.py [--slices 300] [--size 512]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [
    str(ROOT),
    str(ROOT / "tests"),
]  # the project first: tests/dicom_sr must not shadow dicom_sr

import peers
from dicomweb_client import DICOMwebClient

from node.app import Node
from node.config import load_settings
from node.demo.phantom import make_chest_phantom
from node.multipart import multipart_files, new_boundary

TOKEN = "benchmark-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _settings(workdir: Path, serve_inputs: bool = False) -> Any:
    return load_settings(
        overrides={
            "node": {
                "dicom_host": "127.0.0.1",
                "dicom_port": 0,
                "http_port": 0,
                "storage_dir": str(workdir),
                "study_stable_seconds": 3600,
                "min_free_disk_mb": 64,
            },
            "api": {"tokens": [TOKEN], "max_upload_mb": 8192, "serve_inputs": serve_inputs},
        }
    )


def _post(client: httpx.Client, url: str, files: Sequence[Path]) -> None:
    boundary = new_boundary()
    body: Iterator[bytes] = multipart_files([(f, "application/dicom") for f in files], boundary)
    response = client.post(
        url,
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            **AUTH,
        },
    )
    if response.status_code != 200:
        raise SystemExit(f"STOW-RS answered {response.status_code}: {response.text[:300]}")


def _rate(count: int, megabytes: float, seconds: float) -> dict[str, float]:
    return {
        "seconds": round(seconds, 2),
        "instances_per_s": round(count / seconds, 1),
        "mb_per_s": round(megabytes / seconds, 1),
    }


def _stow(
    files: list[Path], megabytes: float, tmp: Path, name: str, batch: int
) -> dict[str, float]:
    with Node(_settings(tmp / name)) as node, httpx.Client(timeout=600) as client:
        url = f"http://127.0.0.1:{node.http_port}/dicom-web/studies"
        t0 = time.perf_counter()
        for start in range(0, len(files), batch):
            _post(client, url, files[start : start + batch])
        seconds = time.perf_counter() - t0
        stored = len(node.store.instances())
    if stored != len(files):
        raise SystemExit(f"{name}: {stored} of {len(files)} instances recorded")
    return _rate(len(files), megabytes, seconds)


def _dicomweb_client(datasets: list[Any], megabytes: float, tmp: Path) -> dict[str, float]:
    with Node(_settings(tmp / "dicomweb-client")) as node:
        client = DICOMwebClient(
            f"http://127.0.0.1:{node.http_port}/dicom-web", headers=AUTH, timeout=600
        )
        t0 = time.perf_counter()
        client.store_instances(datasets)
        seconds = time.perf_counter() - t0
    return _rate(len(datasets), megabytes, seconds)


def _storescu(files: list[Path], megabytes: float, tmp: Path) -> dict[str, float]:
    with Node(_settings(tmp / "storescu"), http=False) as node:
        t0 = time.perf_counter()
        peers.storescu("127.0.0.1", node.dicom_port, "AINODE", files, check=True, timeout=600)
        seconds = time.perf_counter() - t0
    return _rate(len(files), megabytes, seconds)


def _wado_frames(files: list[Path], datasets: list[Any], tmp: Path) -> dict[str, dict[str, float]]:
    """Frames and rendered images of every instance, one request each (how OHIF loads a series)."""
    with (
        Node(_settings(tmp / "wado", serve_inputs=True)) as node,
        httpx.Client(timeout=60) as client,
    ):
        base = f"http://127.0.0.1:{node.http_port}/dicom-web"
        _post(client, f"{base}/studies", files)
        urls = [
            f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
            for ds in datasets
        ]
        results = {}
        for label, suffix, accept in (
            (
                "wado_frames_native",
                "/frames/1",
                'multipart/related; type="application/octet-stream"',
            ),
            ("wado_rendered_jpeg", "/rendered", "image/jpeg"),
        ):
            received = 0
            t0 = time.perf_counter()
            for url in urls:
                response = client.get(url + suffix, headers={"Accept": accept, **AUTH})
                if response.status_code != 200:
                    raise SystemExit(f"{label}: {response.status_code} {response.text[:200]}")
                received += len(response.content)
            seconds = time.perf_counter() - t0
            results[label] = {
                "requests_per_s": round(len(urls) / seconds, 1),
                "ms_per_request": round(1000 * seconds / len(urls), 2),
                "mb_per_s": round(received / 1e6 / seconds, 1),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    phantom = make_chest_phantom(n_slices=args.slices, rows=args.size, columns=args.size)
    with tempfile.TemporaryDirectory(prefix="ainode-bench-dicomweb-") as name:
        tmp = Path(name)
        files = []
        for i, ds in enumerate(phantom.datasets):
            path = tmp / "files" / f"{i:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        results: dict[str, Any] = {
            "machine": platform.platform(),
            "instances": len(files),
            "megabytes": round(megabytes, 1),
            "stow_one_request": _stow(files, megabytes, tmp, "one", len(files)),
            "stow_batches_of_50": _stow(files, megabytes, tmp, "fifty", 50),
            "stow_one_per_request": _stow(files, megabytes, tmp, "single", 1),
            "dicomweb_client_store_instances": _dicomweb_client(phantom.datasets, megabytes, tmp),
            "cstore_storescu": _storescu(files, megabytes, tmp),
        }
        results |= _wado_frames(files, phantom.datasets, tmp)
    text = json.dumps(results, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
