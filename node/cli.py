"""The ``ainode`` command line: serve, demo, jobs, pipelines, check-config.

This is the only module that prints; everything else logs.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from node.errors import AinodeError, ConfigError

app = typer.Typer(
    help="ainode: a clinical AI node for DICOM imaging networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="Jobs recorded in the audit database.", invoke_without_command=True)
app.add_typer(jobs_app, name="jobs")
console = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration file.", exists=False, dir_okay=False),
]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    # APScheduler logs every stage tick at INFO and a warning whenever a tick is
    # still running when the next is due; neither is news for an administrator.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _settings(config: Path | None) -> Any:
    from node.config import load_settings

    if config is not None and not config.exists():
        raise ConfigError(
            f"config file {config} does not exist (see docs/admin-guide.md for an example)"
        )
    return load_settings(config)


def _fail(exc: AinodeError) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


@app.command()
def serve(
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run the node (DICOM SCP, scheduler, workers, HTTP API) until SIGINT/SIGTERM."""
    _setup_logging(log_level)
    from node.app import Node

    try:
        node = Node(_settings(config)).start()
    except AinodeError as exc:
        _fail(exc)
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    s = node.settings.node
    console.print(
        f"ainode [bold]{s.ae_title}[/] listening: DICOM {s.dicom_host}:{node.dicom_port}, "
        f"HTTP http://{s.http_host}:{node.http_port}  (Ctrl-C to stop)"
    )
    stop.wait()
    console.print("stopping ...")
    node.stop()


@app.command("check-config")
def check_config(config: Annotated[Path, typer.Argument(help="YAML configuration file.")]) -> None:
    """Validate a configuration file and the pipelines its routes name."""
    from node.jobs.loader import check_pipelines

    try:
        settings = _settings(config)
        check_pipelines(settings)
    except AinodeError as exc:
        _fail(exc)
        return
    console.print(
        f"[green]ok[/]: {len(settings.routes)} routes, {len(settings.destinations)} destinations"
    )


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Folder for the demo's files (default: a new temp folder).")
    ] = None,
) -> None:
    """Run the whole path on loopback: phantom CT -> node -> SEG + SR -> loopback PACS."""
    _setup_logging("WARNING")
    from node.demo import run_demo

    with console.status("starting ...") as status:

        def report(stage: str, detail: str = "") -> None:
            status.update(f"[bold]{stage}[/] {detail}")

        try:
            result = run_demo(workdir, report)
        except AinodeError as exc:
            _fail(exc)
            return
    _print_demo(result)


def _print_demo(result: Any) -> None:
    from node.demo import describe_received

    job = result.job
    console.print(
        f"\n[bold]Job {job['id']}[/]: {job['pipeline']} {job['pipeline_version']} on "
        f"{len(job['inputs'])} CT images -> [bold]{job['state']}[/]"
    )
    truth = result.phantom.true_volumes_ml
    table = Table(title="Segments: measured vs true volume")
    for col in ("segment", "measured mL", "true mL", "error %", "mean HU"):
        table.add_column(col, justify="right" if col != "segment" else "left")
    summary = job["summary"] or {}
    means = {
        m["segment"]: m["value"]
        for m in summary.get("measurements", [])
        if m.get("derivation") == "Mean"
    }
    for seg in summary.get("segments", []):
        label = seg["label"]
        true = _truth_for(label, truth)
        error = f"{100 * (seg['volume_ml'] - true) / true:+.1f}" if true else "-"
        table.add_row(
            label,
            f"{seg['volume_ml']:.1f}",
            f"{true:.1f}" if true else "-",
            error,
            f"{means[label]:.0f}" if label in means else "-",
        )
    console.print(table)
    laa = [m for m in summary.get("measurements", []) if "950" in m["concept"]]
    if laa:
        console.print(
            f"Emphysema index (%LAA-950): measured {laa[0]['value']:.2f} %, "
            f"true {result.phantom.true_laa950_percent:.2f} %"
        )
    timings = Table(title="Timings (s)")
    for key in result.seconds:
        timings.add_column(key, justify="right")
    timings.add_row(*(f"{v:.2f}" for v in result.seconds.values()))
    console.print(timings)
    files = Table(title="Received by the loopback PACS")
    for col in ("modality", "series description", "SOP class", "file"):
        files.add_column(col)
    for modality, description, sop_class, path in describe_received(result.received_files):
        files.add_row(modality, description, sop_class, Path(path).name)
    console.print(files)
    console.print(
        f"Results as the PACS received them: {result.workdir / 'pacs'}\n"
        f"Audit database: {result.database_url}\nWork folder: {result.workdir}\n"
        f"Try: ainode jobs --database-url {result.database_url}"
    )


def _truth_for(label: str, truth: dict[str, float]) -> float | None:
    key = label.lower()
    for name, value in truth.items():
        if name in key:
            return value
    return None


def _store(config: Path | None, database_url: str | None) -> Any:
    from node.db.engine import make_engine
    from node.db.store import AuditStore

    url = database_url or _settings(config).node.resolved_database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise ConfigError(
            f"no audit database at {url}; start the node first, or pass --config / --database-url"
        )
    return AuditStore(make_engine(url))


DbOption = Annotated[
    str | None, typer.Option("--database-url", help="Audit database URL (overrides the config).")
]


@jobs_app.callback()
def jobs(
    ctx: typer.Context,
    config: ConfigOption = None,
    database_url: DbOption = None,
    limit: Annotated[int, typer.Option(help="How many recent jobs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List recent jobs with their state and timings."""
    ctx.obj = {"config": config, "database_url": database_url}
    if ctx.invoked_subcommand is not None:
        return
    from node.http.schemas import job_view

    try:
        rows = [job_view(j) for j in _store(config, database_url).list_jobs(limit=limit)]
    except AinodeError as exc:
        _fail(exc)
        return
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title=f"Recent jobs ({len(rows)})")
    for col in ("id", "state", "pipeline", "modality", "series", "created", "run s", "error"):
        table.add_column(col, no_wrap=col in ("id", "state", "pipeline", "run s"))
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["state"],
            f"{r['pipeline']} {r['pipeline_version'] or ''}",
            r["modality"] or "",
            "…" + r["series_instance_uid"][-12:],
            f"{r['created_at']:%Y-%m-%d %H:%M:%S}",
            f"{r['run_seconds']:.2f}" if r["run_seconds"] is not None else "",
            (r["error"] or "")[:60],
        )
    console.print(table)


def _plan_table(plan: dict[str, Any]) -> Table:
    """The job's result plan: each planned object and where it goes."""
    table = Table(title="Result plan")
    for col in ("kind", "profile", "series", "description", "to"):
        table.add_column(col)
    for o in plan["objects"]:
        to = ", ".join(o["destinations"]) or ("(kept)" if o["write"] else "(referenced only)")
        table.add_row(
            o["kind"],
            o["variant"] or "all",
            str(o["series_number"]),
            o["series_description"],
            to,
        )
    return table


@jobs_app.command("show")
def jobs_show(
    ctx: typer.Context,
    job_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One job's full history: inputs, outputs, deliveries, events."""
    from node.http.schemas import job_detail

    try:
        found = _store(ctx.obj["config"], ctx.obj["database_url"]).get_job(job_id)
    except AinodeError as exc:
        _fail(exc)
        return
    if found is None:
        err.print(f"[red]no job {job_id}[/]")
        raise typer.Exit(code=1)
    d = job_detail(*found)
    if as_json:
        console.print_json(json.dumps(d, default=str))
        return
    console.print(
        f"[bold]Job {d['id']}[/] {d['state']}: route {d['route']}, pipeline {d['pipeline']} "
        f"{d['pipeline_version']}, {len(d['inputs'])} inputs, attempts {d['attempts']}"
    )
    if d["error"]:
        console.print(f"[red]error:[/] {d['error']}")
    history = Table(title="History")
    for col in ("time (UTC)", "event", "detail"):
        history.add_column(col)
    for e in d["events"]:
        history.add_row(f"{e['at']:%Y-%m-%d %H:%M:%S.%f}"[:-3], e["kind"], e["detail"] or "")
    console.print(history)
    if d.get("plan"):
        console.print(_plan_table(d["plan"]))
    outputs = Table(title="Outputs")
    for col in ("kind", "profile", "SOP Instance UID", "bytes", "path"):
        outputs.add_column(col)
    for o in d["outputs"]:
        outputs.add_row(
            o["kind"],
            o.get("variant") or "all",
            o["sop_instance_uid"],
            str(o["size_bytes"]),
            o["path"],
        )
    console.print(outputs)
    attempts = Table(title="Delivery attempts")
    for col in ("attempt", "output", "ok", "status", "error"):
        attempts.add_column(col)
    for a in d["delivery_attempts"]:
        attempts.add_row(
            str(a["attempt"]),
            str(a["output_id"]),
            "yes" if a["succeeded"] else "no",
            f"0x{a['dimse_status']:04X}" if a["dimse_status"] is not None else "",
            a["error"] or "",
        )
    console.print(attempts)


@app.command()
def pipelines(config: ConfigOption = None) -> None:
    """List the pipelines: installed ones, and with --config the configured MONAI bundles."""
    from node.jobs.loader import configured_pipeline_class
    from pipelines import registry

    table = Table(title="Pipelines")
    for col in ("name", "kind", "version", "accepts", "model checksum"):
        table.add_column(col, no_wrap=col in ("name", "kind", "version"))
    try:
        found = {name: ("installed", cls) for name, cls in registry.available().items()}
        if config is not None:
            for name, item in _settings(config).pipelines.items():
                found[name] = (
                    item.type,
                    configured_pipeline_class(name, item.model_dump(mode="json")),
                )
    except AinodeError as exc:
        _fail(exc)
        return
    for name, (kind, cls) in sorted(found.items()):
        table.add_row(name, kind, cls.version, cls.accepts.describe(), cls.model_checksum or "-")
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    app()
