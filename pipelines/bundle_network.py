"""Build a bundle's network from its inference configuration and checked weights.

Bundles are code: :func:`read_inference_config` parses ``configs/inference.json``
(or ``.yaml``) with MONAI's ``ConfigParser``, whose ``$`` expressions are
evaluated, so it is called only after :func:`pipelines.bundle_weights.verify_weights`.
:func:`build_network` instantiates ``network_def``, loads the weights with
``torch.load(..., weights_only=True)`` and puts the network on the device in
``channels_last(_3d)`` memory format; :func:`build_detector` wraps a
RetinaNet-style network in MONAI's ``RetinaNetDetector`` with the
configuration's ``anchor_generator``.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.bundle.config_parser import ConfigParser

from pipelines import bundle_grid as grid
from pipelines.bundle_preprocessing import Preprocessing
from pipelines.errors import PipelineError

logger = logging.getLogger(__name__)


def read_inference_config(bundle: Path) -> ConfigParser:
    """The bundle's inference configuration, with ``bundle_root`` set."""
    configs = bundle / "configs"
    candidates = [configs / f"inference.{ext}" for ext in ("json", "yaml", "yml")]
    config = next((c for c in candidates if c.is_file()), None)
    if config is None:
        raise PipelineError(f"bundle {bundle.name}: configs/inference.json or .yaml is missing")
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
        parser.read_meta(str(configs / "metadata.json"))
    except (OSError, ValueError) as exc:
        raise PipelineError(f"bundle {bundle.name}: {config.name} cannot be read: {exc}") from exc
    parser["bundle_root"] = str(bundle)
    if "network_def" not in parser.get():
        raise PipelineError(f"bundle {bundle.name}: {config.name} has no network_def")
    return parser


def build_network(
    name: str, parser: ConfigParser, weights: Path, device: torch.device, spatial_dims: int
) -> torch.nn.Module:
    """``network_def`` with the weights loaded, in eval mode on ``device``."""
    try:
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as exc:  # the bundle's own code: any failure is a configuration error
        raise PipelineError(f"bundle {name}: network_def cannot be built: {exc}") from exc
    if not isinstance(network, torch.nn.Module):
        raise PipelineError(f"bundle {name}: network_def is not a torch module")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise PipelineError(f"bundle {name}: weights cannot be loaded safely: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        raise PipelineError(f"bundle {name}: weights do not fit network_def: {exc}") from exc
    network = network.to(device).eval()
    # torch's stubs omit Module.to(memory_format=...), which torch accepts at run time
    converted: torch.nn.Module = network.to(  # type: ignore[call-overload]
        memory_format=grid.memory_format(spatial_dims)
    )
    return converted


def build_detector(
    name: str,
    parser: ConfigParser,
    network: torch.nn.Module,
    spatial_dims: int,
    preprocessing: Preprocessing,
    score_threshold: float,
) -> RetinaNetDetector:
    """MONAI's ``RetinaNetDetector`` around ``network``, with sliding-window inference."""
    if "anchor_generator" not in parser.get():
        raise PipelineError(f"bundle {name}: a detection bundle needs anchor_generator")
    anchors = parser.get_parsed_content("anchor_generator", instantiate=True)
    detector = RetinaNetDetector(network, anchors, spatial_dims=spatial_dims)
    detector.set_box_selector_parameters(
        score_thresh=score_threshold, nms_thresh=0.22, detections_per_img=100
    )
    detector.set_sliding_window_inferer(
        roi_size=preprocessing.window_size(name),
        sw_batch_size=preprocessing.sw_batch_size,
        overlap=preprocessing.overlap,
        mode=preprocessing.mode,
    )
    return detector.eval()
