"""prior-compare: register a prior study onto the current one.

No networking here: the node finds and fetches the prior (C-FIND, then
C-MOVE / C-GET), loads it with :func:`~pipelines.volume.load_volume` and calls
:meth:`PriorComparePipeline.run_with_prior` with a :class:`PriorSeries`.
Plain :meth:`~PriorComparePipeline.run` (no prior) raises :class:`InputError`.
The registration itself is :func:`pipelines.registration.register` (torch,
imported only when a job runs, so that listing pipelines stays cheap).

Conventions: ``Registration.matrix`` maps prior patient coordinates (LPS, mm)
to current patient coordinates; ``Registration.deformation`` (``[3, frame,
row, column]`` mm on the current grid) completes it: a current point ``p``
corresponds to the prior point ``inv(matrix) @ p + u(p)``.

Volumes now vs prior (CT): ``ct-anatomy`` runs on both series, each on its
own grid; the current segments become ``Findings.segments`` (so the SEG and
the SR's TID 1411 groups reference them) with their ``ct-anatomy``
measurements, and each current segment whose structure (tracking id) is also
found in the prior gets three more rows (PS3.16 TID 1419 style):

=================  ========  ================================================
concept            unit      value
=================  ========  ================================================
SCT 118565006      mL        Volume now (from ``ct-anatomy``)
99AINODE PRIORVOL  mL        Volume of the structure in the prior series
99AINODE VOLCHG    mL        Volume now minus volume of prior
99AINODE VOLCHGPCT %         ``100 * (now - prior) / prior``
=================  ========  ================================================

The local codes (scheme ``99AINODE``, PS3.3 8.2) stand in where PS3.16 has
no concept for "volume in the prior study" or "change since prior". MR
series are registered only (no weight-free MR segmentation; a note says so).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pipelines import codes
from pipelines.base import InputSpec, Pipeline
from pipelines.ct_anatomy import CtAnatomyPipeline
from pipelines.errors import InputError
from pipelines.findings import Code, Findings, FindingsError, Measurement, Registration
from pipelines.volume import Volume

if TYPE_CHECKING:
    from pipelines.registration import RegistrationParameters

logger = logging.getLogger(__name__)

#: Volume of the same structure in the prior series (local code, no PS3.16 concept).
PRIOR_VOLUME = Code("PRIORVOL", codes.LOCAL_SCHEME, "Volume of prior")
#: Volume now minus volume of prior, in mL.
VOLUME_CHANGE = Code("VOLCHG", codes.LOCAL_SCHEME, "Change in volume")
#: Volume change relative to the prior, in percent.
VOLUME_CHANGE_PERCENT = Code("VOLCHGPCT", codes.LOCAL_SCHEME, "Percent change in volume")


@dataclass(frozen=True, eq=False)
class PriorSeries:
    """A prior series fetched by the node, with its identifying UIDs."""

    volume: Volume
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str


class PriorComparePipeline(Pipeline):
    """Registration of the most recent prior (fetched by the node) onto the current series.

    Parameters
    ----------
    deformable : bool
        Add a dense deformation after the affine stage.
    parameters : RegistrationParameters | None
        Optimisation settings (``affine_iterations=0`` gives rigid only).
    compare_volumes : bool
        For CT, segment both series with ``ct-anatomy`` and report volumes
        now vs prior (module docstring).
    """

    name = "prior-compare"
    version = "0.2.0"
    accepts = InputSpec(modalities=frozenset({"CT", "MR"}), min_frames=8, dimensions=3)
    model_checksum = None

    def __init__(
        self,
        deformable: bool = True,
        parameters: RegistrationParameters | None = None,
        compare_volumes: bool = True,
    ) -> None:
        self.deformable = deformable
        self.parameters = parameters
        self.compare_volumes = compare_volumes

    def run(self, volume: Volume) -> Findings:
        """Refuse: this pipeline needs a prior (see :meth:`run_with_prior`)."""
        raise InputError("prior-compare needs the prior study; the node calls run_with_prior")

    def run_with_prior(self, volume: Volume, prior: PriorSeries) -> Findings:
        """Register ``prior`` onto ``volume`` and compare structure volumes (CT).

        Raises
        ------
        InputError
            When either volume is not accepted or the modalities differ.
        """
        self.check_input(volume)
        self.check_input(prior.volume)
        if prior.volume.modality != volume.modality:
            raise InputError(f"prior is {prior.volume.modality}, current is {volume.modality}")
        registration, note = self._register(volume, prior)
        findings = Findings(
            pipeline_name=self.name,
            pipeline_version=self.version,
            source_sop_instance_uids=volume.sop_instance_uids,
            registrations=(registration,),
            notes=(note,),
            source_frame_numbers=volume.source_frame_numbers,
        )
        if not self.compare_volumes:
            return findings
        if volume.modality != "CT":
            return replace(
                findings,
                notes=(*findings.notes, "Volumes now vs prior: CT only; MR is registered only."),
            )
        return _with_volume_comparison(findings, volume, prior.volume)

    def _register(self, volume: Volume, prior: PriorSeries) -> tuple[Registration, str]:
        from pipelines.registration import register

        result = register(volume, prior.volume, self.deformable, self.parameters)
        registration = Registration(
            prior_study_instance_uid=prior.study_instance_uid,
            prior_series_instance_uid=prior.series_instance_uid,
            prior_frame_of_reference_uid=prior.frame_of_reference_uid,
            matrix=tuple(_matrix_row(row) for row in result.matrix),
            deformation=result.displacement,
        )
        return (
            registration,
            f"NCC {result.ncc_before:.4f} before, {result.ncc_after:.4f} after registration",
        )


def _with_volume_comparison(findings: Findings, volume: Volume, prior: Volume) -> Findings:
    """``findings`` plus the current ct-anatomy segments and the volume-now-vs-prior rows."""
    anatomy = CtAnatomyPipeline()
    try:
        now = anatomy.run(volume)
    except InputError as exc:
        return replace(
            findings, notes=(*findings.notes, f"Volumes now vs prior: not measured ({exc}).")
        )
    try:
        before = anatomy.run(prior)
    except InputError as exc:
        note = f"Volumes now vs prior: the prior could not be segmented ({exc})."
        return replace(
            findings,
            segments=now.segments,
            measurements=now.measurements,
            notes=(*findings.notes, *now.notes, note),
        )
    prior_ml = {
        s.description.tracking_id: _volume_ml(before, s.description.number) for s in before.segments
    }
    rows: list[Measurement] = []
    notes: list[str] = []
    for segment in now.segments:
        key, label = segment.description.tracking_id, segment.description.label
        if key not in prior_ml:
            notes.append(f"{label}: not found in the prior; no comparison.")
            continue
        rows.extend(
            volume_change(
                _volume_ml(now, segment.description.number),
                prior_ml[key],
                segment.description.number,
            )
        )
    missing = sorted(set(prior_ml) - {s.description.tracking_id for s in now.segments})
    notes.extend(
        f"{key}: found in the prior ({prior_ml[key]:.1f} mL) but not now." for key in missing
    )
    return replace(
        findings,
        segments=now.segments,
        measurements=(*now.measurements, *rows),
        notes=(*findings.notes, *now.notes, *notes),
    )


def _volume_ml(findings: Findings, number: int) -> float:
    return next(
        m.value
        for m in findings.measurements
        if m.segment_number == number and m.concept == codes.VOLUME
    )


def volume_change(now_ml: float, prior_ml: float, segment_number: int) -> tuple[Measurement, ...]:
    """Prior volume, change (mL) and change (%) of one segment (module docstring codes)."""
    rows = [
        Measurement(
            concept=PRIOR_VOLUME,
            value=prior_ml,
            unit=codes.MILLILITER,
            segment_number=segment_number,
        ),
        Measurement(
            concept=VOLUME_CHANGE,
            value=now_ml - prior_ml,
            unit=codes.MILLILITER,
            segment_number=segment_number,
        ),
    ]
    if prior_ml > 0:
        rows.append(
            Measurement(
                concept=VOLUME_CHANGE_PERCENT,
                value=100.0 * (now_ml - prior_ml) / prior_ml,
                unit=codes.PERCENT,
                segment_number=segment_number,
            )
        )
    return tuple(rows)


def _matrix_row(row: Sequence[float]) -> tuple[float, float, float, float]:
    """One row of a 4x4 affine as plain floats."""
    if len(row) != 4:
        raise FindingsError("registration matrix must be 4x4")
    return float(row[0]), float(row[1]), float(row[2]), float(row[3])
