"""Run a loaded bundle's network on a volume, under ``torch.inference_mode``.

Sliding-window inference for segmentation and detection, one forward pass
for classification, on the source volume reoriented and resampled as the
bundle's preprocessing says (:mod:`pipelines.bundle_grid`); the result is
mapped back exactly onto the source frames and turned into findings by
:mod:`pipelines.bundle_findings`. :meth:`BundleRunner.load` builds the
runner once per worker: configuration, network, detector, device and the
precision self-check (:mod:`pipelines.bundle_precision`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.inferers.utils import sliding_window_inference

from pipelines import bundle_grid as grid
from pipelines.bundle_findings import FindingsBuilder
from pipelines.bundle_network import build_detector, build_network, read_inference_config
from pipelines.bundle_precision import choose_precision
from pipelines.bundle_preprocessing import Preprocessing
from pipelines.bundle_spec import BundleSpec, Task
from pipelines.errors import PipelineError
from pipelines.findings import Findings
from pipelines.volume import Volume

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class BundleRunner:
    """A bundle's network on its device at its precision, ready to run on volumes.

    Attributes
    ----------
    device : torch.device
        Where the network runs.
    precision : str
        ``"bf16"`` or ``"fp32"``.
    agreement : float | None
        The bf16-vs-fp32 argmax agreement measured by the self-check.
    """

    name: str
    spec: BundleSpec
    preprocessing: Preprocessing
    device: torch.device
    network: torch.nn.Module
    detector: RetinaNetDetector | None
    precision: str
    agreement: float | None
    findings: FindingsBuilder
    detection_score_threshold: float

    @classmethod
    def load(
        cls,
        name: str,
        version: str,
        spec: BundleSpec,
        bundle: Path,
        weights: Path,
        *,
        precision_policy: str,
        agreement_threshold: float,
        detection_score_threshold: float,
    ) -> BundleRunner:
        """Parse the configuration, build the network and choose device and precision.

        ``weights`` must have been checked
        (:func:`pipelines.bundle_weights.verify_weights`): parsing runs bundle code.
        """
        parser = read_inference_config(bundle)
        preprocessing = Preprocessing(spec)
        preprocessing.read(parser)
        device = grid.best_device()
        network = build_network(name, parser, weights, device, spec.spatial_dims)
        detector = (
            build_detector(
                name, parser, network, spec.spatial_dims, preprocessing, detection_score_threshold
            )
            if spec.task is Task.DETECTION
            else None
        )
        precision, agreement = choose_precision(
            name,
            spec,
            preprocessing,
            network,
            detector,
            device,
            policy=precision_policy,
            agreement_threshold=agreement_threshold,
        )
        return cls(
            name=name,
            spec=spec,
            preprocessing=preprocessing,
            device=device,
            network=network,
            detector=detector,
            precision=precision,
            agreement=agreement,
            findings=FindingsBuilder(name, version, spec, precision),
            detection_score_threshold=detection_score_threshold,
        )

    @staticmethod
    def release() -> None:
        """Empty the CUDA cache once a runner's network is dropped."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def run(self, volume: Volume) -> Findings:
        """Segment, classify or detect in ``volume`` as the bundle's task says."""
        if self.spec.task is Task.SEGMENTATION:
            return self._segment(volume)
        if self.spec.task is Task.CLASSIFICATION:
            return self._classify(volume)
        return self._detect(volume)

    def _oriented(self, volume: Volume) -> tuple[grid.Orientation, np.ndarray]:
        """The volume in network axis order (3-D) or ``(column, row)`` order (2-D)."""
        if self.spec.spatial_dims == 2:
            return grid.PLANAR_2D, grid.PLANAR_2D.to_network(volume.voxels[0])
        if volume.planar:
            orientation = grid.IDENTITY_3D
        else:
            orientation = grid.orientation_for(volume, self.preprocessing.axcodes)
        return orientation, orientation.to_network(volume.voxels)

    def _network_input(
        self, volume: Volume
    ) -> tuple[grid.Orientation, tuple[int, ...], torch.Tensor]:
        """Reoriented, intensity-scaled, resampled ``[1, C, *spatial]`` tensor on the device."""
        orientation, array = self._oriented(volume)
        invert = str(volume.header.get("PhotometricInterpretation", "")) == "MONOCHROME1"
        array = self.preprocessing.intensity(array, invert)
        tensor = torch.from_numpy(array)[None, None].to(self.device)
        spacing = (
            tuple(volume.spacing[p] for p in (2, 1))
            if self.spec.spatial_dims == 2
            else orientation.spacing(volume.spacing)
        )
        size = grid.resampled_shape(array.shape, spacing, self.preprocessing.pixdim)
        tensor = grid.resize(tensor, size)
        if self.spec.in_channels > 1:
            tensor = tensor.repeat(1, self.spec.in_channels, *([1] * len(size)))
        return orientation, tuple(array.shape), tensor

    def _predictor(self) -> Callable[[torch.Tensor], torch.Tensor]:
        fmt = grid.memory_format(self.spec.spatial_dims)

        def predict(window: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.network(window.contiguous(memory_format=fmt))
            return result.float()

        return predict

    def _segment(self, volume: Volume) -> Findings:
        orientation, oriented_shape, tensor = self._network_input(volume)
        with torch.inference_mode(), grid.autocast(self.device, self.precision):
            logits = sliding_window_inference(
                tensor,
                self.preprocessing.window_size(self.name),
                self.preprocessing.sw_batch_size,
                self._predictor(),
                overlap=self.preprocessing.overlap,
                mode=self.preprocessing.mode,
            )
            logits = torch.as_tensor(logits).float()
            probabilities = (
                torch.softmax(logits, dim=1) if logits.shape[1] > 1 else torch.sigmoid(logits)
            )
            if probabilities.shape[1] == 1:
                probabilities = torch.cat([1 - probabilities, probabilities], dim=1)
            labels = grid.argmax_on_source(probabilities, oriented_shape).numpy()
        label_volume = np.ascontiguousarray(orientation.to_source(labels))
        if self.spec.spatial_dims == 2:
            label_volume = label_volume[np.newaxis]
        return self.findings.segmentation(volume, label_volume)

    def _classify(self, volume: Volume) -> Findings:
        _, oriented_shape, tensor = self._network_input(volume)
        size = self.preprocessing.classification_size(self.name, oriented_shape)
        if tuple(tensor.shape[2:]) != tuple(size):  # MONAI Resize's default mode: area
            tensor = torch.nn.functional.interpolate(tensor, size=tuple(size), mode="area")
        with torch.inference_mode(), grid.autocast(self.device, self.precision):
            logits = self._predictor()(tensor)[0].float().reshape(-1)
        probabilities: list[float]
        if logits.numel() == 1:
            positive = float(torch.sigmoid(logits)[0])
            probabilities = [1.0 - positive, positive]
        else:
            probabilities = torch.softmax(logits, dim=0).cpu().tolist()
        return self.findings.classification(volume, probabilities)

    def _detect(self, volume: Volume) -> Findings:
        if self.detector is None:
            raise PipelineError(f"bundle {self.name}: detector not initialised")
        orientation, oriented_shape, tensor = self._network_input(volume)
        network_shape = tuple(tensor.shape[2:])
        with torch.inference_mode(), grid.autocast(self.device, self.precision):
            result = self.detector(tensor, use_inferer=True)[0]
        boxes = result[self.detector.target_box_key].float().cpu().numpy()
        scores = result[self.detector.pred_score_key].float().cpu().numpy()
        classes = result[self.detector.target_label_key].cpu().numpy()
        source_boxes = grid.boxes_to_source(boxes, network_shape, oriented_shape, orientation)
        if self.spec.spatial_dims == 2:  # (row, column) -> (frame, row, column)
            source_boxes = np.column_stack(
                [
                    np.zeros(len(boxes)),
                    source_boxes[:, :2],
                    np.ones(len(boxes)),
                    source_boxes[:, 2:],
                ]
            )
        return self.findings.detection(
            volume, source_boxes, scores, classes, self.detection_score_threshold
        )
