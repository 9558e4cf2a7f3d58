"""The start-up precision self-check of a bundle's network: bf16 or fp32.

Policy ``"auto"`` uses bf16 autocast where the device supports it natively
and the network's output on a deterministic reference input
(:func:`pipelines.bundle_grid.reference_input`) agrees with fp32 in its
argmax at least ``agreement_threshold`` of the time; otherwise fp32.
``"bf16"`` and ``"fp32"`` force the precision (bf16 only where supported).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector

from pipelines import bundle_grid as grid
from pipelines.bundle_preprocessing import Preprocessing
from pipelines.bundle_spec import BundleSpec, Task
from pipelines.errors import PipelineError

logger = logging.getLogger(__name__)


def choose_precision(
    name: str,
    spec: BundleSpec,
    preprocessing: Preprocessing,
    network: torch.nn.Module,
    detector: RetinaNetDetector | None,
    device: torch.device,
    *,
    policy: str,
    agreement_threshold: float,
) -> tuple[str, float | None]:
    """``("bf16" | "fp32", measured agreement or None)`` under ``policy``."""
    if policy == "fp32":
        return "fp32", None
    if not grid.bf16_supported(device):
        if policy == "bf16":
            raise PipelineError(f"bundle {name}: bf16 forced but not supported on {device}")
        return "fp32", None
    if policy == "bf16":
        return "bf16", None
    shape = _reference_shape(name, spec, preprocessing)
    run = partial(_reference_output, network, detector, spec, device, shape)
    measured = grid.agreement(run, grid.argmax_agreement)
    return ("bf16" if measured >= agreement_threshold else "fp32"), measured


def _reference_shape(name: str, spec: BundleSpec, preprocessing: Preprocessing) -> tuple[int, ...]:
    """``[batch, channel, *spatial]`` of the reference input."""
    if spec.task is Task.CLASSIFICATION:
        return (8, spec.in_channels, *preprocessing.classification_size(name, None))
    return (1, spec.in_channels, *preprocessing.window_size(name))


def _reference_output(
    network: torch.nn.Module,
    detector: RetinaNetDetector | None,
    spec: BundleSpec,
    device: torch.device,
    shape: tuple[int, ...],
    precision: str,
) -> torch.Tensor:
    """The network's output on the reference input at ``precision``, as float32."""
    reference = grid.reference_input(shape).to(device)
    with torch.inference_mode(), grid.autocast(device, precision):
        output = network(reference.contiguous(memory_format=grid.memory_format(spec.spatial_dims)))
    if spec.task is Task.DETECTION:
        maps = _classification_maps(output, detector)
        return torch.cat([m.float().reshape(-1) for m in maps]).reshape(-1, 1)
    result: torch.Tensor = output.float()
    return result


def _classification_maps(output: Any, detector: RetinaNetDetector | None) -> Any:
    """The per-level classification maps of a RetinaNet head's output."""
    if not isinstance(output, dict):
        return output[: len(output) // 2]
    if detector is None:
        raise PipelineError("a detection network needs its detector for the self-check")
    return output[detector.cls_key]
