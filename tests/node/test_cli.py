"""The ``ainode`` command line: demo, jobs, serve (as a real process), pipelines, check-config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import peers
import pytest
from typer.testing import CliRunner

from node.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    workdir = tmp_path_factory.mktemp("demo")
    result = runner.invoke(app, ["demo", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    return result.output, workdir


def test_demo_summary(demo_run: tuple[str, Path]) -> None:
    output, workdir = demo_run
    assert "delivered" in output
    for text in (
        "Segments: measured vs true volume",
        "Lungs",
        "Body",
        "Bone",
        "%LAA-950",
        "Received by the loopback PACS",
        "AI ct-anatomy SEG",
        "Segmentation Storage",
        "Comprehensive 3D SR",
    ):
        assert text in output, text
    received = sorted((workdir / "pacs").glob("*.dcm"))
    assert len(received) == 2
    assert (workdir / "node" / "ainode.db").exists()


def test_jobs_table_and_show(demo_run: tuple[str, Path]) -> None:
    _, workdir = demo_run
    url = f"sqlite:///{workdir / 'node' / 'ainode.db'}"
    listing = runner.invoke(app, ["jobs", "--database-url", url])
    assert listing.exit_code == 0, listing.output
    assert "ct-anatomy" in listing.output and "delivered" in listing.output
    show = runner.invoke(app, ["jobs", "--database-url", url, "show", "1"])
    assert show.exit_code == 0, show.output
    for text in (
        "History",
        "job_queued",
        "job_started",
        "job_succeeded",
        "delivery_succeeded",
        "SEG",
        "SR",
        "profile",
        "default",
        "Result plan",
        "AI ct-anatomy SEG",
    ):
        assert text in show.output, text
    as_json = runner.invoke(app, ["jobs", "--database-url", url, "show", "1", "--json"])
    plan = json.loads(as_json.output)["plan"]
    assert {o["kind"] for o in plan["objects"] if o["destinations"]} == {"SEG", "SR"}
    missing = runner.invoke(app, ["jobs", "--database-url", url, "show", "999"])
    assert missing.exit_code == 1 and "no job 999" in missing.output


def test_jobs_without_database_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["jobs", "--database-url", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 2
    assert "start the node first" in result.output


def test_pipelines_lists_ct_anatomy() -> None:
    result = runner.invoke(app, ["pipelines"])
    assert result.exit_code == 0, result.output
    assert "ct-anatomy" in result.output and "CT" in result.output


def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("node:\n  dicom_prot: 104\n")
    result = runner.invoke(app, ["check-config", str(config)])
    assert result.exit_code == 2
    assert "node.dicom_prot: unknown key" in result.output


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    dicom_port, http_port = peers.free_port(), peers.free_port()
    config = tmp_path / "ainode.yaml"
    config.write_text(
        "node:\n"
        f"  dicom_host: 127.0.0.1\n  dicom_port: {dicom_port}\n  http_port: {http_port}\n"
        f"  storage_dir: {tmp_path / 'data'}\n  min_free_disk_mb: 16\n"
        "routes:\n  - name: ct\n    match: {Modality: CT}\n    pipelines: [ct-anatomy]\n"
    )
    ainode = Path(sys.executable).with_name("ainode")
    process = subprocess.Popen(
        [str(ainode), "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        health = peers.wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2).json(),
            timeout=60,
            what="the node's /healthz",
            ignore=(httpx.HTTPError,),
        )
        assert health["status"] == "ok" and health["ae_title"] == "AINODE"
        assert peers.echoscu("127.0.0.1", dicom_port, "AINODE").returncode == 0
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
        assert "ainode_jobs" in metrics
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "stopping" in output


def test_pipelines_lists_configured_bundles(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "ainode_cli_bundles", Path(__file__).resolve().parent.parent / "pipelines" / "bundles.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    bundle = module.build_classification_bundle(tmp_path / "cls", steps=1)
    config = tmp_path / "ainode.yaml"
    config.write_text(
        f"pipelines:\n  xray-cls:\n    type: monai-bundle\n    path: {bundle.path}\n"
        f"    sha256: {bundle.sha256}\n"
    )
    result = runner.invoke(app, ["pipelines", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (
        "xray-cls" in result.output
        and "monai-bundle" in result.output
        and "ct-anatomy" in result.output
    )
