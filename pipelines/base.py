"""The pipeline contract: what a pipeline accepts and its life cycle.

A pipeline is a class with a ``name``, a ``version`` and an :class:`InputSpec`.
The node instantiates it once per worker, calls :meth:`Pipeline.initialize`
(load models), then :meth:`Pipeline.check_input` and :meth:`Pipeline.run` for
each series, and :meth:`Pipeline.finalize` at shutdown. ``run`` returns plain
:class:`~pipelines.findings.Findings`; it never writes DICOM.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import ClassVar

from pipelines.errors import InputError, PipelineError
from pipelines.findings import Findings
from pipelines.volume import Volume

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputSpec:
    """Which series a pipeline can analyse.

    Parameters
    ----------
    modalities : frozenset[str]
        Accepted Modality (0008,0060) values, e.g. ``frozenset({"CT"})``.
    sop_class_uids : frozenset[str] | None
        Accepted SOP Class UIDs (PS3.4 B.5); ``None`` accepts any image class.
    min_frames : int
        Fewest frames (slices) the volume must have.
    dimensions : int
        ``3`` for volumetric pipelines, ``2`` for those that analyse exactly
        one frame.
    """

    modalities: frozenset[str]
    sop_class_uids: frozenset[str] | None = None
    min_frames: int = 1
    dimensions: int = 3

    def __post_init__(self) -> None:
        if not self.modalities:
            raise PipelineError("an InputSpec must accept at least one modality")
        if self.min_frames < 1:
            raise PipelineError(f"min_frames must be >= 1, got {self.min_frames}")
        if self.dimensions not in (2, 3):
            raise PipelineError(f"dimensions must be 2 or 3, got {self.dimensions}")
        if self.dimensions == 2 and self.min_frames != 1:
            raise PipelineError("a 2-D pipeline analyses exactly one frame (min_frames = 1)")

    def describe(self) -> str:
        """A one-line human summary, e.g. ``"CT, 3-D, >= 1 frame"``."""
        parts = [", ".join(sorted(self.modalities)), f"{self.dimensions}-D"]
        if self.dimensions == 3:
            parts.append(f">= {self.min_frames} frame{'s' if self.min_frames != 1 else ''}")
        if self.sop_class_uids is not None:
            parts.append(f"{len(self.sop_class_uids)} SOP class(es)")
        return ", ".join(parts)

    def mismatch(self, volume: Volume) -> str | None:
        """Why ``volume`` is not accepted, or ``None`` when it is."""
        if volume.modality not in self.modalities:
            return f"modality {volume.modality or 'missing'} not in {sorted(self.modalities)}"
        if self.sop_class_uids is not None and volume.sop_class_uid not in self.sop_class_uids:
            return f"SOP class {volume.sop_class_uid or 'missing'} not accepted"
        n_frames = volume.shape[0]
        if self.dimensions == 2 and n_frames != 1:
            return f"a 2-D pipeline needs exactly one frame, got {n_frames}"
        if n_frames < self.min_frames:
            return f"{n_frames} frame(s), at least {self.min_frames} needed"
        return None


class Pipeline(abc.ABC):
    """Base class of every analysis pipeline.

    Subclasses set the class attributes and implement :meth:`run`. Instances
    are created once per worker process and reused across jobs, so
    :meth:`run` must not keep per-series state.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"ct-anatomy"``; recorded as the algorithm name
        in SEG / SR (PS3.3 C.8.20.3, Algorithm Name).
    version : str
        Algorithm Version, recorded with every result.
    accepts : InputSpec
        Which series the pipeline analyses.
    model_checksum : str | None
        SHA-256 of the model weights, or ``None`` for a weight-free pipeline.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    accepts: ClassVar[InputSpec]
    model_checksum: ClassVar[str | None] = None

    def initialize(self) -> None:
        """Load models and other expensive resources; called once per worker."""
        logger.debug("pipeline %s initialised", getattr(self, "name", type(self).__name__))

    @abc.abstractmethod
    def run(self, volume: Volume) -> Findings:
        """Analyse one volume and return what was found."""

    def finalize(self) -> None:
        """Release what :meth:`initialize` acquired; called once at shutdown."""
        logger.debug("pipeline %s finalised", getattr(self, "name", type(self).__name__))

    def check_input(self, volume: Volume) -> None:
        """Raise :class:`~pipelines.errors.InputError` when ``volume`` is not accepted."""
        reason = self.accepts.mismatch(volume)
        if reason is not None:
            raise InputError(f"{self.name} does not accept this series: {reason}")
