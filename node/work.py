"""What a worker process does for one job: load the series, run the pipeline, write results.

This module runs inside the runner's worker processes, never on the network
thread. It reads the input files with pydicom, hands a :class:`Volume` to the
pipeline, turns its findings into DICOM objects with ``dicom_sr``, and writes
them atomically under the job's result directory using the UIDs the node
minted when it queued the job (so a re-run produces the same objects).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

import dicom_sr
import dicom_sr.kos
from dicom_sr.codes import REJECTED_FOR_QUALITY_REASONS
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity, derived_uid
from dicom_sr.profile import ScFrames, SegmentationType, ViewerProfile
from dicom_sr.seg import segments_overlap
from node.db.models import REJECTION_FOR
from node.db.store import WrittenOutput
from node.errors import InputError, JobError
from node.storage import safe_uid, write_atomic
from pipelines import registry
from pipelines.base import Pipeline
from pipelines.findings import Findings
from pipelines.volume import Volume, load_volume

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriorInputs:
    """The prior series the node fetched for a prior-compare job (see :mod:`node.prior`).

    Parameters
    ----------
    input_paths : tuple[str, ...]
        Spool paths of the prior series' instances.
    study_instance_uid, series_instance_uid : str
        The prior's identity, as found by C-FIND.
    study_date : str
        The prior's Study Date (DA), for the summary.
    source : str
        Name of the configured source it came from.
    """

    input_paths: tuple[str, ...]
    study_instance_uid: str
    series_instance_uid: str
    study_date: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not self.input_paths:
            raise JobError("a prior series needs at least one instance")


#: Result formats whose objects depend on the destination's profile (see
#: :class:`node.config.ResultProfile`); the others are written once per job.
PROFILED_FORMATS = ("seg", "sr", "sc", "ko")
#: The variant whose objects carry the UIDs minted for the job.
DEFAULT_VARIANT = "default"


@dataclass(frozen=True)
class ResultVariant:
    """One set of viewer-profiled result objects, for the destinations sharing a profile.

    Parameters
    ----------
    key : str
        :attr:`node.config.ResultProfile.key`, recorded with each output.
    formats : tuple[str, ...]
        What those destinations asked for (any of seg, sr, sc, pdf, ko).
    profile : ViewerProfile
        How to shape the SEG and the Secondary Captures.
    """

    key: str
    formats: tuple[str, ...]
    profile: ViewerProfile = field(default_factory=ViewerProfile)

    @classmethod
    def from_settings(
        cls, key: str, formats: tuple[str, ...], options: dict[str, Any]
    ) -> ResultVariant:
        """From a destination's ``profile`` options (:class:`node.config.ResultProfile` fields)."""
        return cls(
            key,
            formats,
            ViewerProfile(
                segmentation_type=SegmentationType(str(options.get("seg_type", "binary")).upper()),
                omit_empty_frames=bool(options.get("omit_empty_frames", True)),
                transfer_syntax_uid=(
                    JPEG2000Lossless
                    if options.get("seg_compression") == "jpeg2000-lossless"
                    else ExplicitVRLittleEndian
                ),
                sc_frames=ScFrames(str(options.get("sc_frames", "key")).upper()),
            ),
        )


@dataclass(frozen=True)
class SupersededOutput:
    """A result object of an earlier job this job replaces (``late_series: rerun``)."""

    job_id: int
    variant: str | None
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    path: str


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one job (picklable)."""

    job_id: int
    pipeline_name: str
    input_paths: tuple[str, ...]
    result_uids: dict[str, dict[str, str]]
    output_dir: str
    seg_series_number: int
    sr_series_number: int
    device: DeviceIdentity
    formats: tuple[str, ...] = ("seg", "sr")
    series_numbers: dict[str, int] = field(default_factory=dict)
    pipeline_config: dict[str, Any] | None = None
    prior: PriorInputs | None = None
    #: One per distinct destination profile; empty: one default variant of ``formats``.
    variants: tuple[ResultVariant, ...] = ()
    #: Per destination, what of the earlier jobs this one replaces it accepted:
    #: a rejection note for that destination withdraws them.
    withdrawals: dict[str, tuple[SupersededOutput, ...]] = field(default_factory=dict)

    def result_variants(self) -> tuple[ResultVariant, ...]:
        """The variants to write, the default one (if any) first."""
        variants = self.variants or (ResultVariant(DEFAULT_VARIANT, self.formats),)
        return tuple(sorted(variants, key=lambda v: (v.key != DEFAULT_VARIANT, v.key)))


@dataclass(frozen=True)
class JobOutcome:
    """What a worker reports back for a successful job."""

    outputs: tuple[WrittenOutput, ...]
    summary: dict[str, Any]
    pipeline_version: str
    timings: dict[str, float] = field(default_factory=dict)


def pipeline_class(name: str) -> type[Pipeline]:
    """A registered pipeline by name, or ``"package.module:Class"`` for an unregistered one."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise JobError(f"cannot import pipeline {name!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
            raise JobError(f"{name!r} is not a Pipeline subclass")
        return cls
    return registry.get(name)


def configured_pipeline_class(name: str, config: dict[str, Any]) -> type[Pipeline]:
    """The class of a pipeline configured under ``pipelines:`` (a checksummed MONAI bundle).

    Only ``metadata.json`` and the label map are read here; weights load in
    ``initialize()`` in the worker, after their SHA-256 is checked.
    """
    if config.get("type") != "monai-bundle":
        raise JobError(f"pipeline {name!r}: unknown type {config.get('type')!r}")
    from pipelines.monai_bundle import MonaiBundlePipeline

    label_map = config.get("label_map")
    return MonaiBundlePipeline.configured(
        name,
        Path(config["path"]),
        config["sha256"],
        Path(label_map) if label_map else None,
        agreement_threshold=float(config.get("bf16_agreement_threshold", 0.999)),
    )


class PipelineCache:
    """Pipelines initialised once per worker process and reused across jobs."""

    def __init__(self) -> None:
        self._pipelines: dict[str, Pipeline] = {}

    def get(self, name: str, config: dict[str, Any] | None = None) -> Pipeline:
        if name not in self._pipelines:
            cls = configured_pipeline_class(name, config) if config else pipeline_class(name)
            pipeline = cls()
            pipeline.initialize()
            self._pipelines[name] = pipeline
        return self._pipelines[name]

    def close(self) -> None:
        for pipeline in self._pipelines.values():
            try:
                pipeline.finalize()
            except Exception:
                logger.exception("pipeline %s failed to finalize", pipeline.name)
        self._pipelines.clear()


#: Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1):
#: present, possibly empty, in every conformant image. Some senders leave them out;
#: the node reads tolerantly and fills them empty so the results are conformant.
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _tolerate(ds: Dataset) -> Dataset:
    for keyword in _TYPE2_PATIENT_STUDY:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _read_inputs(paths: Sequence[str]) -> list[Dataset]:
    datasets = []
    for path in paths:
        try:
            datasets.append(_tolerate(dcmread(path)))
        except FileNotFoundError as exc:
            raise InputError(f"input instance missing from the spool: {Path(path).name}") from exc
        except Exception as exc:
            raise InputError(
                f"input instance {Path(path).name} cannot be read: {type(exc).__name__}"
            ) from exc
    return datasets


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


def _write(ds: Dataset, out_dir: Path, kind: str, variant: str | None = None) -> WrittenOutput:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getbuffer()
    path = out_dir / f"{kind}-{safe_uid(str(ds.SOPInstanceUID))}.dcm"
    write_atomic(path, data)
    return WrittenOutput(
        kind=kind,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        path=str(path),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        variant=variant,
    )


#: The kind recorded for each result object, by its Modality (SC keeps the source's).
_KIND_BY_MODALITY = {"SEG": "SEG", "SR": "SR", "DOC": "PDF", "KO": "KO", "REG": "REG"}
#: ImageType value 3 of derived image series (reformats, MIPs): the pipeline's primary output.
_DERIVED_IMAGE_TYPES = {"REFORMATTED", "MIP", "MINIP"}
_DESCRIPTIONS = {
    "seg": "SEG",
    "sr": "report",
    "sc": "overlay (not for diagnosis)",
    "pdf": "PDF report",
    "ko": "key images",
    "derived": "",
    "reg": "registration",
    "reject": "withdrawn results",
}
_DEFAULT_SERIES_OFFSET = {
    "seg": 0,
    "sr": 1,
    "sc": 2,
    "pdf": 3,
    "ko": 4,
    "reg": 5,
    "reject": 6,
    "derived": 10,
}
#: Written whenever a pipeline finds them, whatever a destination's formats: they are
#: the primary output of reformat and prior-compare.
PRIMARY_KINDS = ("derived", "reg")


def _identities(
    spec: JobSpec, pipeline: Pipeline, formats: Sequence[str], variant: str = DEFAULT_VARIANT
) -> dict[str, ResultIdentity]:
    """One identity per result format, from the UIDs minted when the job was queued.

    The default variant's objects carry the minted UIDs; another variant's
    profiled objects (SEG, SR, SC, KO) get UIDs derived from them and the
    variant's key: the same on every re-run, distinct from the default's.
    """
    identities = {}
    for fmt in formats:
        uids = spec.result_uids.get(fmt.upper())
        if uids is None:
            raise JobError(f"no result UIDs were minted for format {fmt!r}; re-run the job")
        series_uid, sop_uid = uids["series_instance_uid"], uids["sop_instance_uid"]
        if variant != DEFAULT_VARIANT and fmt in PROFILED_FORMATS:
            series_uid = derived_uid("variant-series", series_uid, variant)
            sop_uid = derived_uid("variant-instance", sop_uid, variant)
        number = (
            spec.series_numbers.get(fmt) or spec.seg_series_number + _DEFAULT_SERIES_OFFSET[fmt]
        )
        if fmt == "sr":
            number = spec.series_numbers.get(fmt) or spec.sr_series_number
        identities[fmt] = ResultIdentity(
            series_instance_uid=series_uid,
            sop_instance_uid=sop_uid,
            series_number=number,
            series_description=f"AI {pipeline.name} {_DESCRIPTIONS[fmt]}".strip()[:64],
        )
    return identities


def _writable(variant: ResultVariant, findings: Findings, notes: list[str]) -> ResultVariant:
    """``variant``, or, when its LABELMAP cannot hold overlapping segments, the same as BINARY.

    One destination's profile must not cost every destination its results;
    the choice is in the job summary's notes.
    """
    if variant.profile.segmentation_type is not SegmentationType.LABELMAP or not segments_overlap(
        findings
    ):
        return variant
    notes.append(
        f"profile {variant.key}: the segments overlap, which a LABELMAP SEG cannot hold; "
        "wrote a BINARY SEG instead"
    )
    return replace(
        variant, profile=replace(variant.profile, segmentation_type=SegmentationType.BINARY)
    )


def _reference(old: SupersededOutput, source: Dataset) -> Dataset:
    """What a rejection note needs of a withdrawn object: its header, or its UIDs when the file is gone."""
    try:
        return dcmread(old.path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - gone, truncated or not DICOM: the UIDs in the audit record suffice
        ds = Dataset()
        for keyword in _TYPE2_PATIENT_STUDY:
            setattr(ds, keyword, source.get(keyword, ""))
        ds.SOPClassUID, ds.SOPInstanceUID = old.sop_class_uid, old.sop_instance_uid
        ds.SeriesInstanceUID, ds.StudyInstanceUID = old.series_instance_uid, source.StudyInstanceUID
        return ds


def _rejection_notes(
    spec: JobSpec,
    pipeline: Pipeline,
    source: Dataset,
    algorithm: AlgorithmIdentity,
) -> tuple[list[WrittenOutput], dict[str, list[str]]]:
    """IHE IOCM rejection notes withdrawing the results of the jobs this one replaces.

    One note per destination, listing exactly the objects that destination
    accepted from those jobs and has not had withdrawn yet (an IOCM archive
    refuses a note naming objects it does not hold). The notes share one
    series; each has its own SOP Instance UID, derived from the job's and
    the destination's name. Returns the notes and, per destination, the SOP
    Instance UIDs withdrawn (for the job summary).
    """
    outputs, withdrawn = [], {}
    [base] = _identities(spec, pipeline, ["reject"]).values()
    for destination, olds in sorted(spec.withdrawals.items()):
        if not olds:
            continue
        earlier = ", ".join(str(j) for j in sorted({o.job_id for o in olds}))
        reason = (
            f"Withdrawn: results of job {earlier}, superseded by job {spec.job_id} "
            "(the series changed after it was analysed; late_series: rerun)"
        )
        identity = replace(
            base, sop_instance_uid=derived_uid("reject", base.sop_instance_uid, destination)
        )
        note = dicom_sr.kos.write_rejection_note(
            [_reference(o, source) for o in olds],
            source,
            identity,
            spec.device,
            algorithm,
            reason=reason,
        )
        outputs.append(_write(note, Path(spec.output_dir), "REJECT", REJECTION_FOR + destination))
        withdrawn[destination] = [o.sop_instance_uid for o in olds]
    return outputs, withdrawn


def _write_variants(
    spec: JobSpec,
    pipeline: Pipeline,
    sources: list[Dataset],
    findings: Findings,
    algorithm: AlgorithmIdentity,
    prior_images: list[Dataset],
    notes: list[str],
) -> list[WrittenOutput]:
    """Write the job's result objects: one profiled set per variant, the rest once.

    The first variant also carries what every destination gets alike (PDF,
    derived series, registrations); those outputs have no variant.
    """
    variants = tuple(_writable(v, findings, notes) for v in spec.result_variants())
    shared = [
        f
        for f in dict.fromkeys(f for v in variants for f in v.formats)
        if f not in PROFILED_FORMATS
    ]
    out_dir = Path(spec.output_dir)
    outputs: list[WrittenOutput] = []
    for index, variant in enumerate(variants):
        profiled = [f for f in variant.formats if f in PROFILED_FORMATS]
        formats = profiled + (shared if index == 0 else [])
        # the SR and KOS reference a SEG even when the destinations do not take it
        keys = [
            *formats,
            *(["seg"] if "seg" not in formats and {"sr", "ko"} & set(formats) else []),
        ]
        keys += list(PRIMARY_KINDS) if index == 0 else []
        if not formats and index:
            continue
        objects = dicom_sr.write_results(
            sources,
            findings,
            device=spec.device,
            algorithm=algorithm,
            formats=formats,
            identities=_identities(spec, pipeline, keys, variant.key),
            profile=variant.profile,
            prior_images=prior_images,
            primary_outputs=index == 0,
        )
        for ds in objects:
            kind = _kind(ds)
            outputs.append(
                _write(ds, out_dir, kind, variant.key if kind.lower() in PROFILED_FORMATS else None)
            )
    return outputs


def _kind(ds: Dataset) -> str:
    """The kind recorded for a result object (egress selects by it)."""
    title = ds.get("ConceptNameCodeSequence")
    if ds.Modality == "KO" and title and title[0].CodeValue == REJECTED_FOR_QUALITY_REASONS.value:
        return "REJECT"
    image_type = list(ds.get("ImageType", []))
    if len(image_type) > 2 and str(image_type[2]).upper() in _DERIVED_IMAGE_TYPES:
        return "DERIVED"
    return _KIND_BY_MODALITY.get(str(ds.Modality), "SC")


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

    datasets = _read_inputs(prior.input_paths)
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
    datasets = _read_inputs(spec.input_paths)
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
    outputs = tuple(
        _write_variants(spec, pipeline, sources, findings, algorithm, prior_images, notes)
    )
    notes_out, withdrawn = _rejection_notes(spec, pipeline, sources[0], algorithm)
    outputs += tuple(notes_out)
    t4 = time.perf_counter()
    timings = {"initialize_s": t1 - t0, "load_s": t2 - t1, "analyse_s": t3 - t2, "write_s": t4 - t3}
    summary = _summary(findings, volume.voxel_volume_ml) | {
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "formats": list(spec.formats),
        # which viewer profiles were written, with the formats of each (egress checks it)
        "variants": {v.key: list(v.formats) for v in spec.result_variants()},
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
        outputs=outputs, summary=summary, pipeline_version=pipeline.version, timings=timings
    )
