"""What a worker process does for one job: load the series, run the pipeline, write the plan.

This module runs inside the runner's worker processes, never on the network
thread. It reads the input files with pydicom, hands a :class:`Volume` to the
pipeline, and writes its findings as the job's
:class:`~node.study.plan.ResultPlan` says (:mod:`node.jobs.results`), with
the UIDs the planner minted when the job was queued (so a re-run produces
the same objects).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydicom.dataset import Dataset

from dicom_sr.identity import AlgorithmIdentity
from node.errors import InputError
from node.jobs.inputs import read_inputs
from node.jobs.loader import PipelineCache
from node.jobs.results import WriteContext, write_planned, write_rejection_notes
from node.jobs.spec import JobOutcome, JobSpec, PriorInputs
from pipelines.base import Pipeline
from pipelines.findings import Findings
from pipelines.volume import Volume, load_volume

logger = logging.getLogger(__name__)


def _summary(findings: Findings, voxel_ml: float) -> dict[str, Any]:
    labels = {s.description.number: s.description.label for s in findings.segments}
    return {
        "segments": [
            {
                "number": s.description.number,
                "label": s.description.label,
                "voxels": int(s.mask.sum()),
                "volume_ml": round(float(s.mask.sum()) * voxel_ml, 3),
            }
            for s in findings.segments
        ],
        "measurements": [
            {
                "segment": labels.get(m.segment_number) if m.segment_number else None,
                "concept": m.concept.meaning,
                "value": m.value,
                "unit": m.unit.value,
                "derivation": m.derivation.meaning if m.derivation else None,
            }
            for m in findings.measurements
        ],
        "notes": list(findings.notes),
        "frames": len(findings.source_sop_instance_uids),
    }


def _analyse(
    pipeline: Pipeline, volume: Volume, prior: PriorInputs | None
) -> tuple[Findings, list[Dataset]]:
    """``pipeline.run(volume)``, or ``run_with_prior`` when the node fetched a prior for it.

    Returns the findings and the prior's images (for the registration object's references).
    """
    run_with_prior = getattr(pipeline, "run_with_prior", None)
    if prior is None or run_with_prior is None:
        return pipeline.run(volume), []
    from pipelines.prior_compare import PriorSeries

    datasets = read_inputs(prior.input_paths)
    prior_volume = load_volume(datasets)
    frame_of_reference = str(datasets[0].get("FrameOfReferenceUID", ""))
    if not frame_of_reference:
        raise InputError("the prior series has no Frame of Reference UID")
    series = PriorSeries(
        prior_volume, prior.study_instance_uid, prior.series_instance_uid, frame_of_reference
    )
    findings: Findings = run_with_prior(volume, series)
    return findings, datasets


def _registration_summary(findings: Findings, prior: PriorInputs | None) -> list[dict[str, Any]]:
    """The transforms found, for the job summary (matrix: prior mm -> current mm)."""
    return [
        {
            "prior_study_instance_uid": r.prior_study_instance_uid,
            "prior_series_instance_uid": r.prior_series_instance_uid,
            "prior_frame_of_reference_uid": r.prior_frame_of_reference_uid,
            "prior_study_date": prior.study_date if prior else None,
            "source": prior.source if prior else None,
            "matrix": [[round(v, 6) for v in row] for row in r.matrix],
            "deformable": r.deformation is not None,
        }
        for r in findings.registrations
    ]


def execute_job(spec: JobSpec, cache: PipelineCache) -> JobOutcome:
    """Run one job end to end inside a worker; raise an AinodeError on failure."""
    t0 = time.perf_counter()
    pipeline = cache.get(spec.pipeline_name, spec.pipeline_config)
    t1 = time.perf_counter()
    datasets = read_inputs(spec.input_paths)
    volume = load_volume(datasets)
    pipeline.check_input(volume)
    t2 = time.perf_counter()
    findings, prior_images = _analyse(pipeline, volume, spec.prior)
    t3 = time.perf_counter()
    sources = [datasets[i] for i in volume.source_indices]
    if len({id(d) for d in sources}) != len(sources):  # multi-frame: one source image
        sources = list({id(d): d for d in sources}.values())
    algorithm = AlgorithmIdentity(
        name=pipeline.name, version=pipeline.version, model_checksum=pipeline.model_checksum
    )
    notes: list[str] = []
    ctx = WriteContext(spec, sources, findings, algorithm, prior_images)
    outputs = write_planned(ctx, notes)
    rejections, withdrawn = write_rejection_notes(ctx, sources[0])
    t4 = time.perf_counter()
    timings = {"initialize_s": t1 - t0, "load_s": t2 - t1, "analyse_s": t3 - t2, "write_s": t4 - t3}
    summary = _summary(findings, volume.voxel_volume_ml) | {
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "formats": [k.format_name for k in spec.plan.kinds],
        # which viewer profiles were written, with the kinds of each
        "variants": spec.plan.written_variants(),
        # for model pipelines: where and at which precision the network ran
        "precision": getattr(pipeline, "precision", None),
        "device": str(getattr(pipeline, "device", "cpu")),
        "model_checksum": pipeline.model_checksum,
    }
    summary["notes"] = [*summary["notes"], *notes]
    if withdrawn:
        summary["withdrawn"] = withdrawn  # per destination: what its rejection note lists
    if findings.registrations:
        summary["registrations"] = _registration_summary(findings, spec.prior)
    return JobOutcome(
        outputs=(*outputs, *rejections),
        summary=summary,
        pipeline_version=pipeline.version,
        timings=timings,
    )
