"""monai-bundle: run a configured, checksummed MONAI bundle on a series.

The node configures each bundle (a directory, the SHA-256 of its weights and
an optional label map) and registers it by name with
:meth:`MonaiBundlePipeline.configured`. The pipeline then:

* at configuration (node start-up): reads ``configs/metadata.json`` and the
  label map (:mod:`pipelines.bundle_spec`, no bundle code runs) and refuses a
  bundle with unmapped labels;
* in :meth:`~MonaiBundlePipeline.initialize` (once per worker): checks the
  SHA-256 of ``models/model.pt`` and refuses to load on a mismatch
  (:mod:`pipelines.bundle_weights`); only then parses
  ``configs/inference.json`` (or ``.yaml``) with MONAI's ``ConfigParser`` -
  bundles are code, ``$`` expressions are evaluated - to instantiate
  ``network_def`` (and ``anchor_generator`` for detection); loads the weights
  with ``torch.load(..., weights_only=True)``; puts the network on CUDA when
  available, else the CPU, in ``channels_last(_3d)`` memory format
  (:mod:`pipelines.bundle_network`); and picks the precision (below);
* in :meth:`~MonaiBundlePipeline.run`: runs the network itself under
  ``torch.inference_mode`` - sliding-window inference for segmentation and
  detection, one forward pass for classification - on the source volume
  reoriented and resampled as the bundle's preprocessing says
  (:mod:`pipelines.bundle_grid`), and maps the result back exactly onto the
  source frames (:mod:`pipelines.bundle_inference`,
  :mod:`pipelines.bundle_findings`).

Preprocessing is read from the inference configuration's ``preprocessing``
transforms and ``inferer`` (:mod:`pipelines.bundle_preprocessing`). Other
transforms (loading, channel handling, type conversion) are what this
pipeline does itself; any other transform is logged as ignored at start-up.
``inputs.image`` of the metadata may override with ``pixdim``, ``axcodes``
and ``intensity``.

Precision: ``"auto"`` (default) uses bf16 autocast where the device supports
it natively and a start-up self-check on a deterministic reference input
(:mod:`pipelines.bundle_precision`) shows argmax agreement with fp32 of at
least ``agreement_threshold`` (default 0.999); otherwise fp32. The choice is
in :attr:`MonaiBundlePipeline.precision` (and the measured agreement in
:attr:`MonaiBundlePipeline.agreement`) for the audit record.

Supported detection format: a RetinaNet-style network (``network_def``, e.g.
``monai.apps.detection.networks.retinanet_network.RetinaNet``) whose output
holds per-level classification and box-regression maps, with an
``anchor_generator`` in the inference configuration; boxes are decoded and
selected (score threshold, NMS) by MONAI's ``RetinaNetDetector``.

torch and MONAI load in :meth:`~MonaiBundlePipeline.initialize`, not when the
node lists or configures pipelines: this module imports them (through
:mod:`pipelines.bundle_inference`) only there.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pipelines.base import InputSpec, Pipeline
from pipelines.bundle_spec import BundleSpec, read_bundle_spec
from pipelines.bundle_weights import WEIGHTS_FILE, sha256_of, verify_weights
from pipelines.errors import PipelineError
from pipelines.findings import Findings
from pipelines.volume import Volume

if TYPE_CHECKING:
    import torch

    from pipelines.bundle_inference import BundleRunner

__all__ = ["PRECISIONS", "WEIGHTS_FILE", "MonaiBundlePipeline", "sha256_of"]

logger = logging.getLogger(__name__)

#: The precision policies a bundle may be configured with (see :mod:`pipelines.bundle_precision`).
PRECISIONS = ("auto", "bf16", "fp32")


class MonaiBundlePipeline(Pipeline):
    """A MONAI bundle run as an ainode pipeline; configure with :meth:`configured`.

    Attributes
    ----------
    precision : str
        After :meth:`initialize`: ``"bf16"`` or ``"fp32"``, the precision runs use.
    agreement : float | None
        The bf16-vs-fp32 argmax agreement measured at start-up (``None`` when
        no check ran: bf16 unsupported or precision forced).
    device : torch.device
        Where the network runs.
    """

    name = "monai-bundle"
    version = "0"
    accepts = InputSpec(modalities=frozenset({"CT"}))
    bundle_path: ClassVar[Path | None] = None
    weights_sha256: ClassVar[str] = ""
    spec: ClassVar[BundleSpec | None] = None
    agreement_threshold: ClassVar[float] = 0.999
    precision_policy: ClassVar[str] = "auto"
    detection_score_threshold: ClassVar[float] = 0.5

    precision: str
    agreement: float | None
    device: torch.device
    _runner: BundleRunner | None = None

    @classmethod
    def configured(
        cls,
        name: str,
        path: Path,
        sha256: str,
        label_map: Path | None = None,
        agreement_threshold: float = 0.999,
        *,
        precision: str = "auto",
        modalities: frozenset[str] | None = None,
        detection_score_threshold: float = 0.5,
    ) -> type[MonaiBundlePipeline]:
        """A pipeline class for one bundle, named ``name``, ready to register.

        Reads the bundle's metadata and label map now (no bundle code runs)
        and raises :class:`PipelineError` for a malformed bundle or an
        unmapped label. The weights are checked in :meth:`initialize`.

        Parameters
        ----------
        name : str
            Registry / route name, e.g. ``"spleen-ct"``.
        path : Path
            The bundle directory.
        sha256 : str
            Hex SHA-256 of ``models/model.pt`` (an optional ``sha256:`` prefix is allowed).
        label_map : Path | None
            YAML/JSON file mapping label names to codes (see :mod:`pipelines.bundle_spec`).
        agreement_threshold : float
            Least bf16-vs-fp32 argmax agreement for bf16 to be used.
        precision : str
            ``"auto"``, ``"bf16"`` or ``"fp32"``.
        modalities : frozenset[str] | None
            Override the Modality values accepted (default: from the metadata).
        detection_score_threshold : float
            Detections below this score are not reported.
        """
        digest = sha256.lower().removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise PipelineError(f"bundle {name}: sha256 must be 64 hex digits")
        if precision not in PRECISIONS:
            raise PipelineError(f"bundle {name}: precision must be one of {PRECISIONS}")
        if not 0.0 <= agreement_threshold <= 1.0:
            raise PipelineError(f"bundle {name}: agreement_threshold must be in [0, 1]")
        spec = read_bundle_spec(Path(path), label_map, modalities)
        accepts = InputSpec(
            modalities=spec.modalities,
            dimensions=spec.spatial_dims,
            min_frames=1,
        )
        attributes = {
            "name": name,
            "version": spec.version,
            "accepts": accepts,
            "model_checksum": f"sha256:{digest}",
            "bundle_path": Path(path),
            "weights_sha256": digest,
            "spec": spec,
            "agreement_threshold": agreement_threshold,
            "precision_policy": precision,
            "detection_score_threshold": detection_score_threshold,
            "__module__": __name__,
            "__doc__": f"MONAI bundle {spec.name} {spec.version} ({spec.task.value}).",
        }
        class_name = "Bundle_" + re.sub(r"\W", "_", name)
        return type(class_name, (cls,), attributes)

    # -- life cycle ---------------------------------------------------------

    def initialize(self) -> None:
        """Verify the weights, build the network, choose device and precision."""
        # torch and MONAI load here, once per worker, not when the node lists pipelines
        from pipelines.bundle_inference import BundleRunner

        spec, bundle = self._configuration()
        weights = verify_weights(self.name, bundle, self.weights_sha256)
        runner = BundleRunner.load(
            self.name,
            self.version,
            spec,
            bundle,
            weights,
            precision_policy=self.precision_policy,
            agreement_threshold=self.agreement_threshold,
            detection_score_threshold=self.detection_score_threshold,
        )
        self._runner = runner
        self.device = runner.device
        self.precision, self.agreement = runner.precision, runner.agreement
        logger.info(
            "bundle %s on %s, precision %s (agreement %s)",
            self.name,
            self.device,
            self.precision,
            self.agreement,
        )

    def finalize(self) -> None:
        """Drop the network (and the CUDA cache)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            release = runner.release  # a static method: keeps no reference to the network
            del runner
            release()

    def _configuration(self) -> tuple[BundleSpec, Path]:
        if self.spec is None or self.bundle_path is None:
            raise PipelineError(
                "monai-bundle is a pipeline type: register a bundle with "
                "MonaiBundlePipeline.configured(name, path, sha256, ...)"
            )
        return self.spec, self.bundle_path

    # -- runs -------------------------------------------------------------------

    def run(self, volume: Volume) -> Findings:
        """Segment, classify or detect in ``volume`` with the bundle's network."""
        self.check_input(volume)
        self._configuration()
        if self._runner is None:
            raise PipelineError(f"bundle {self.name}: run() before initialize()")
        return self._runner.run(volume)
