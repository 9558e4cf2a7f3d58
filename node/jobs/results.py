"""Write a job's result objects exactly as its :class:`~node.study.plan.ResultPlan` says.

Runs in the worker. Each object is written atomically under the job's
result directory with the identity the plan gives it, so a re-run writes
the very same objects. What a planned object becomes depends on the
findings: a kind without content (SC without segments, a PDF of nothing)
writes nothing, as :func:`dicom_sr.write_results` documents.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

import dicom_sr
import dicom_sr.kos
from dicom_sr.identity import AlgorithmIdentity, ResultIdentity
from dicom_sr.kinds import ResultKind
from dicom_sr.profile import ScFrames, SegmentationType, ViewerProfile
from dicom_sr.seg import segments_overlap
from node.config import ResultProfile
from node.db.jobs import WrittenOutput
from node.jobs.inputs import TYPE2_PATIENT_STUDY
from node.jobs.spec import JobSpec, SupersededOutput
from node.spool import safe_uid, write_atomic
from node.study.plan import PlannedObject, PlannedVariant
from pipelines.findings import Findings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteContext:
    """What every writer call of one job shares."""

    spec: JobSpec
    sources: Sequence[Dataset]
    findings: Findings
    algorithm: AlgorithmIdentity
    prior_images: Sequence[Dataset] = ()


def identity(planned: PlannedObject) -> ResultIdentity:
    """The writer's identity of a planned object."""
    return ResultIdentity(
        series_instance_uid=planned.series_instance_uid,
        sop_instance_uid=planned.sop_instance_uid,
        series_number=planned.series_number,
        series_description=planned.series_description,
    )


def viewer_profile(profile: ResultProfile) -> ViewerProfile:
    """A destination's configured profile as the writers take it."""
    return ViewerProfile(
        segmentation_type=SegmentationType(profile.seg_type.upper()),
        omit_empty_frames=profile.omit_empty_frames,
        transfer_syntax_uid=(
            JPEG2000Lossless
            if profile.seg_compression == "jpeg2000-lossless"
            else ExplicitVRLittleEndian
        ),
        sc_frames=ScFrames(profile.sc_frames.upper()),
    )


def write_planned(ctx: WriteContext, notes: list[str]) -> list[WrittenOutput]:
    """Write every planned object of the job (but the rejection notes); return the outputs."""
    plan, out_dir = ctx.spec.plan, Path(ctx.spec.output_dir)
    outputs: list[WrittenOutput] = []
    for variant in plan.variants:
        planned = plan.profiled(variant.key)
        formats = [o.kind.format_name for o in planned if o.write]
        if not formats:
            continue
        objects = dicom_sr.write_results(
            ctx.sources,
            ctx.findings,
            device=ctx.spec.device,
            algorithm=ctx.algorithm,
            formats=formats,
            identities={o.kind.format_name: identity(o) for o in planned},
            profile=_writable(variant, ctx.findings, notes),
            primary_outputs=False,
        )
        outputs.extend(write_output(ds, out_dir, variant.key) for ds in objects)
    shared = {o.kind: o for o in plan.shared()}
    if ResultKind.PDF in shared:
        objects = dicom_sr.write_results(
            ctx.sources,
            ctx.findings,
            device=ctx.spec.device,
            algorithm=ctx.algorithm,
            formats=[ResultKind.PDF.format_name],
            identities={ResultKind.PDF.format_name: identity(shared[ResultKind.PDF])},
            primary_outputs=False,
        )
        outputs.extend(write_output(ds, out_dir) for ds in objects)
    derived, registration = shared.get(ResultKind.DERIVED), shared.get(ResultKind.REG)
    objects = dicom_sr.write_primary_outputs(
        ctx.sources,
        ctx.findings,
        ctx.spec.device,
        ctx.algorithm,
        derived=identity(derived) if derived else None,
        registration=identity(registration) if registration else None,
        prior_images=ctx.prior_images,
    )
    outputs.extend(write_output(ds, out_dir) for ds in objects)
    return outputs


def _writable(variant: PlannedVariant, findings: Findings, notes: list[str]) -> ViewerProfile:
    """The variant's profile, or, when its LABELMAP cannot hold overlapping segments, BINARY.

    One destination's profile must not cost every destination its results;
    the choice is in the job summary's notes.
    """
    profile = viewer_profile(variant.profile)
    if profile.segmentation_type is not SegmentationType.LABELMAP or not segments_overlap(findings):
        return profile
    notes.append(
        f"profile {variant.key}: the segments overlap, which a LABELMAP SEG cannot hold; "
        "wrote a BINARY SEG instead"
    )
    return replace(profile, segmentation_type=SegmentationType.BINARY)


def write_rejection_notes(
    ctx: WriteContext, source: Dataset
) -> tuple[list[WrittenOutput], dict[str, list[str]]]:
    """IHE IOCM rejection notes withdrawing the results of the jobs this one replaces.

    One note per destination the plan has one for, listing exactly the
    objects that destination accepted from those jobs and has not had
    withdrawn yet (an IOCM archive refuses a note naming objects it does not
    hold); a destination with nothing to withdraw gets none. Returns the
    notes and, per destination, the SOP Instance UIDs withdrawn (for the job
    summary).
    """
    spec = ctx.spec
    outputs, withdrawn = [], {}
    for planned in spec.plan.rejection_notes():
        (destination,) = planned.destinations
        olds = spec.withdrawals.get(destination, ())
        if not olds:
            continue
        earlier = ", ".join(str(j) for j in sorted({o.job_id for o in olds}))
        reason = (
            f"Withdrawn: results of job {earlier}, superseded by job {spec.job_id} "
            "(the series changed after it was analysed; late_series: rerun)"
        )
        note = dicom_sr.kos.write_rejection_note(
            [_reference(o, source) for o in olds],
            source,
            identity(planned),
            spec.device,
            ctx.algorithm,
            reason=reason,
        )
        outputs.append(write_output(note, Path(spec.output_dir), planned.variant))
        withdrawn[destination] = [o.sop_instance_uid for o in olds]
    return outputs, withdrawn


def _reference(old: SupersededOutput, source: Dataset) -> Dataset:
    """What a rejection note needs of a withdrawn object: its header, or its recorded UIDs."""
    try:
        return dcmread(old.path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - gone, truncated or not DICOM: the audit record's UIDs suffice
        ds = Dataset()
        for keyword in TYPE2_PATIENT_STUDY:
            setattr(ds, keyword, source.get(keyword, ""))
        ds.SOPClassUID, ds.SOPInstanceUID = old.sop_class_uid, old.sop_instance_uid
        ds.SeriesInstanceUID, ds.StudyInstanceUID = old.series_instance_uid, source.StudyInstanceUID
        return ds


def write_output(ds: Dataset, out_dir: Path, variant: str | None = None) -> WrittenOutput:
    """Write one result object atomically; ``variant`` is recorded for profiled kinds and notes."""
    kind = ResultKind.of_dataset(ds)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getbuffer()
    path = out_dir / f"{kind.value}-{safe_uid(str(ds.SOPInstanceUID))}.dcm"
    write_atomic(path, data)
    keep_variant = kind.profiled or kind is ResultKind.REJECT
    return WrittenOutput(
        kind=kind.value,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        path=str(path),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        variant=variant if keep_variant else None,
    )
