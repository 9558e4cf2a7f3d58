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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines.base import InputSpec, Pipeline
from pipelines.errors import InputError
from pipelines.findings import Findings, Registration
from pipelines.volume import Volume

if TYPE_CHECKING:
    from pipelines.registration import RegistrationParameters

logger = logging.getLogger(__name__)

@dataclass(frozen=True, eq=False)
class PriorSeries:
    """A prior series fetched by the node, with its identifying UIDs."""

    volume: Volume
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str


class PriorComparePipeline(Pipeline):
    """Registration of the most recent prior (fetched by the node) onto the current series."""

    name = "prior-compare"
    version = "0.1.0"
    accepts = InputSpec(modalities=frozenset({"CT", "MR"}), min_frames=8, dimensions=3)
    model_checksum = None

    def __init__(self, deformable: bool = True, parameters: RegistrationParameters | None = None) -> None:
        self.deformable = deformable
        self.parameters = parameters

    def run(self, volume: Volume) -> Findings:
        """Refuse: this pipeline needs a prior (see :meth:`run_with_prior`)."""
        raise InputError("prior-compare needs the prior study; the node calls run_with_prior")

    def run_with_prior(self, volume: Volume, prior: PriorSeries) -> Findings:
        """Register ``prior`` onto ``volume``; the node's hook once it has fetched the prior.

        Raises
        ------
        InputError
            When either volume is not accepted or the modalities differ.
        """
        self.check_input(volume)
        self.check_input(prior.volume)
        if prior.volume.modality != volume.modality:
            raise InputError(f"prior is {prior.volume.modality}, current is {volume.modality}")
        from pipelines.registration import register

        result = register(volume, prior.volume, self.deformable, self.parameters)
        registration = Registration(
            prior_study_instance_uid=prior.study_instance_uid,
            prior_series_instance_uid=prior.series_instance_uid,
            prior_frame_of_reference_uid=prior.frame_of_reference_uid,
            matrix=tuple(tuple(float(v) for v in row) for row in result.matrix),
            deformation=result.displacement,
        )
        return Findings(
            pipeline_name=self.name,
            pipeline_version=self.version,
            source_sop_instance_uids=volume.sop_instance_uids,
            registrations=(registration,),
            notes=(f"NCC {result.ncc_before:.4f} before, {result.ncc_after:.4f} after registration",),
        )
