"""monai-bundle: run a configured, checksummed MONAI bundle on a series.

The node configures each bundle (a directory, the SHA-256 of its weights and
an optional label map) and registers it by name with
:meth:`MonaiBundlePipeline.configured`. The pipeline then:

* at configuration (node start-up): reads ``configs/metadata.json`` and the
  label map (:mod:`pipelines.bundle_spec`, no bundle code runs) and refuses a
  bundle with unmapped labels;
* in :meth:`~MonaiBundlePipeline.initialize` (once per worker): checks the
  SHA-256 of ``models/model.pt`` and refuses to load on a mismatch; only then
  parses ``configs/inference.json`` (or ``.yaml``) with MONAI's
  ``ConfigParser`` - bundles are code, ``$`` expressions are evaluated - to
  instantiate ``network_def`` (and ``anchor_generator`` for detection);
  loads the weights with ``torch.load(..., weights_only=True)``; puts the
  network on CUDA when available, else the CPU, in ``channels_last(_3d)``
  memory format; and picks the precision (below);
* in :meth:`~MonaiBundlePipeline.run`: runs the network itself under
  ``torch.inference_mode`` - sliding-window inference for segmentation and
  detection, one forward pass for classification - on the source volume
  reoriented and resampled as the bundle's preprocessing says
  (:mod:`pipelines.bundle_grid`), and maps the result back exactly onto the
  source frames.

Preprocessing read from the inference configuration's ``preprocessing``
transforms (by their ``_target_`` name): ``Orientation(d)`` (``axcodes``),
``Spacing(d)`` (``pixdim``), ``ScaleIntensityRange(d)`` (``a_min``, ``a_max``,
``b_min``, ``b_max``, ``clip``), ``ScaleIntensity(d)`` (min-max to [0, 1]),
``NormalizeIntensity(d)`` (``nonzero``), ``Resize(d)`` (``spatial_size``,
classification); and ``inferer`` (``roi_size``, ``sw_batch_size``,
``overlap``, ``mode``). Other transforms (loading, channel handling, type
conversion) are what this pipeline does itself; any other transform is
logged as ignored at start-up. ``inputs.image`` of the metadata may override
with ``pixdim``, ``axcodes`` and ``intensity``.

Precision: ``"auto"`` (default) uses bf16 autocast where the device supports
it natively and a start-up self-check on a deterministic reference input
(:func:`pipelines.bundle_grid.reference_input`) shows argmax agreement with
fp32 of at least ``agreement_threshold`` (default 0.999); otherwise fp32. The
choice is in :attr:`MonaiBundlePipeline.precision` (and the measured
agreement in :attr:`MonaiBundlePipeline.agreement`) for the audit record.

Supported detection format: a RetinaNet-style network (``network_def``, e.g.
``monai.apps.detection.networks.retinanet_network.RetinaNet``) whose output
holds per-level classification and box-regression maps, with an
``anchor_generator`` in the inference configuration; boxes are decoded and
selected (score threshold, NMS) by MONAI's ``RetinaNetDetector``.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pipelines import codes
from pipelines.base import InputSpec, Pipeline
from pipelines.bundle_spec import BundleSpec, Task, read_bundle_spec
from pipelines.errors import PipelineError
from pipelines.findings import (
    Classification,
    Detection,
    Findings,
    Measurement,
    Segment,
    SegmentDescription,
)
from pipelines.volume import Volume

if TYPE_CHECKING:  # torch and MONAI load in initialize(), not when the node lists pipelines
    import torch
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.bundle import ConfigParser

    from pipelines import bundle_grid as grid

logger = logging.getLogger(__name__)

WEIGHTS_FILE = Path("models") / "model.pt"
PRECISIONS = ("auto", "bf16", "fp32")
_PALETTE = (
    (221, 130, 101),
    (144, 238, 144),
    (111, 184, 210),
    (216, 101, 79),
    (183, 156, 220),
    (241, 214, 145),
    (250, 250, 210),
    (128, 174, 128),
    (188, 65, 28),
    (145, 60, 66),
)
_HANDLED = {
    "LoadImage",
    "EnsureChannelFirst",
    "EnsureType",
    "CastToType",
    "ToTensor",
    "AddChannel",
    "EnsureChannelFirstd",
    "Orientation",
    "Spacing",
    "ScaleIntensityRange",
    "ScaleIntensity",
    "NormalizeIntensity",
    "Resize",
    "Compose",
}


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Preprocessing:
    """Orientation, spacing, intensity and inferer settings of a bundle."""

    def __init__(self, spec: BundleSpec) -> None:
        self.axcodes: str | None = spec.axcodes
        self.pixdim: tuple[float, ...] | None = spec.pixdim
        self.window: dict[str, Any] | None = dict(spec.intensity) if spec.intensity else None
        self.min_max = False
        self.normalize_nonzero: bool | None = None
        self.resize: tuple[int, ...] | None = None
        self.roi_size: tuple[int, ...] | None = None
        self.sw_batch_size = 1
        self.overlap = 0.25
        self.mode = "constant"

    def read(self, parser: ConfigParser) -> None:
        """Fill in what the metadata did not say from ``preprocessing`` and ``inferer``."""
        transforms = _transform_list(parser)
        for index, target in transforms:
            base = target.split(".")[-1].split("#")[-1].rstrip("d")
            key = f"preprocessing#transforms#{index}" if index >= 0 else "preprocessing"
            if base == "Orientation" and self.axcodes is None:
                self.axcodes = str(parser.get_parsed_content(f"{key}#axcodes"))
            elif base == "Spacing" and self.pixdim is None:
                self.pixdim = tuple(float(v) for v in parser.get_parsed_content(f"{key}#pixdim"))
            elif base == "ScaleIntensityRange" and self.window is None:
                self.window = {
                    k: parser.get_parsed_content(f"{key}#{k}")
                    for k in ("a_min", "a_max", "b_min", "b_max", "clip")
                    if k in parser.get(key, {})
                }
            elif base == "ScaleIntensity" and self.window is None:
                self.min_max = True
            elif base == "NormalizeIntensity":
                self.normalize_nonzero = bool(parser.get(key, {}).get("nonzero", False))
            elif base == "Resize":
                self.resize = tuple(
                    int(v) for v in parser.get_parsed_content(f"{key}#spatial_size")
                )
            elif base not in _HANDLED:
                logger.warning("bundle transform %s is not applied by ainode", target)
        inferer = parser.get("inferer")
        if isinstance(inferer, dict):
            if "roi_size" in inferer:
                self.roi_size = tuple(int(v) for v in parser.get_parsed_content("inferer#roi_size"))
            if "sw_batch_size" in inferer:
                self.sw_batch_size = int(parser.get_parsed_content("inferer#sw_batch_size"))
            if "overlap" in inferer:
                self.overlap = float(parser.get_parsed_content("inferer#overlap"))
            if "mode" in inferer:
                self.mode = str(parser.get_parsed_content("inferer#mode"))

    def intensity(self, array: np.ndarray, invert: bool) -> np.ndarray:
        """Apply inversion (MONOCHROME1), the window or normalisation, as float32."""
        values = np.asarray(array, dtype=np.float32)
        if invert:
            values = values.max() + values.min() - values
        if self.window is not None:
            a_min, a_max = float(self.window["a_min"]), float(self.window["a_max"])
            b_min, b_max = (
                float(self.window.get("b_min", 0.0)),
                float(self.window.get("b_max", 1.0)),
            )
            values = (values - a_min) * ((b_max - b_min) / (a_max - a_min)) + b_min
            if self.window.get("clip", False):
                values = np.clip(values, min(b_min, b_max), max(b_min, b_max))
        elif self.min_max:
            low, high = float(values.min()), float(values.max())
            values = (values - low) / (high - low) if high > low else values - low
        if self.normalize_nonzero is not None:
            where = values != 0 if self.normalize_nonzero else np.ones(values.shape, dtype=bool)
            if where.any():
                mean, std = float(values[where].mean()), float(values[where].std())
                values = np.where(where, (values - mean) / (std or 1.0), values)
        return np.ascontiguousarray(values, dtype=np.float32)


def _transform_list(parser: ConfigParser) -> list[tuple[int, str]]:
    """``(index, _target_)`` of each preprocessing transform (index -1: not a Compose)."""
    pre = parser.get("preprocessing")
    if not isinstance(pre, dict):
        return []
    items = pre.get("transforms")
    if isinstance(items, list):
        return [(i, str(t.get("_target_", ""))) for i, t in enumerate(items) if isinstance(t, dict)]
    return [(-1, str(pre.get("_target_", "")))]


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
        from pipelines import bundle_grid as grid

        spec, bundle = self._configuration()
        weights = bundle / WEIGHTS_FILE
        if not weights.is_file():
            raise PipelineError(f"bundle {self.name}: weights file {weights} is missing")
        actual = sha256_of(weights)
        if actual != self.weights_sha256:
            raise PipelineError(
                f"bundle {self.name}: SHA-256 of {weights} is {actual}, configured "
                f"{self.weights_sha256}; refusing to load"
            )
        parser = _parser(bundle)
        self.preprocessing = _Preprocessing(spec)
        self.preprocessing.read(parser)
        self.device = grid.best_device()
        self.network = self._network(parser, weights)
        self.detector = self._detector(parser) if spec.task is Task.DETECTION else None
        self.precision, self.agreement = self._choose_precision()
        logger.info(
            "bundle %s on %s, precision %s (agreement %s)",
            self.name,
            self.device,
            self.precision,
            self.agreement,
        )

    def finalize(self) -> None:
        """Drop the network (and the CUDA cache)."""
        import torch

        for attribute in ("network", "detector"):
            if hasattr(self, attribute):
                delattr(self, attribute)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _configuration(self) -> tuple[BundleSpec, Path]:
        if self.spec is None or self.bundle_path is None:
            raise PipelineError(
                "monai-bundle is a pipeline type: register a bundle with "
                "MonaiBundlePipeline.configured(name, path, sha256, ...)"
            )
        return self.spec, self.bundle_path

    def _network(self, parser: ConfigParser, weights: Path) -> torch.nn.Module:
        import torch

        from pipelines import bundle_grid as grid

        try:
            network = parser.get_parsed_content("network_def", instantiate=True)
        except Exception as exc:  # the bundle's own code: any failure is a configuration error
            raise PipelineError(f"bundle {self.name}: network_def cannot be built: {exc}") from exc
        if not isinstance(network, torch.nn.Module):
            raise PipelineError(f"bundle {self.name}: network_def is not a torch module")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as exc:
            raise PipelineError(
                f"bundle {self.name}: weights cannot be loaded safely: {exc}"
            ) from exc
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        try:
            network.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError) as exc:
            raise PipelineError(
                f"bundle {self.name}: weights do not fit network_def: {exc}"
            ) from exc
        network = network.to(self.device).eval()
        return network.to(memory_format=grid.memory_format(self._spec.spatial_dims))

    def _detector(self, parser: ConfigParser) -> RetinaNetDetector:
        from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector

        if "anchor_generator" not in parser.get():
            raise PipelineError(f"bundle {self.name}: a detection bundle needs anchor_generator")
        anchors = parser.get_parsed_content("anchor_generator", instantiate=True)
        detector = RetinaNetDetector(self.network, anchors, spatial_dims=self._spec.spatial_dims)
        detector.set_box_selector_parameters(
            score_thresh=self.detection_score_threshold, nms_thresh=0.22, detections_per_img=100
        )
        detector.set_sliding_window_inferer(
            roi_size=self._roi_size(),
            sw_batch_size=self.preprocessing.sw_batch_size,
            overlap=self.preprocessing.overlap,
            mode=self.preprocessing.mode,
        )
        return detector.eval()

    @property
    def _spec(self) -> BundleSpec:
        return self._configuration()[0]

    def _roi_size(self) -> tuple[int, ...]:
        roi = self.preprocessing.roi_size or self._spec.spatial_shape
        if roi is None:
            raise PipelineError(
                f"bundle {self.name}: no window size (inferer roi_size or inputs.image.spatial_shape)"
            )
        return roi

    # -- precision ------------------------------------------------------------

    def _choose_precision(self) -> tuple[str, float | None]:
        from pipelines import bundle_grid as grid

        policy = self.precision_policy
        if policy == "fp32":
            return "fp32", None
        if not grid.bf16_supported(self.device):
            if policy == "bf16":
                raise PipelineError(
                    f"bundle {self.name}: bf16 forced but not supported on {self.device}"
                )
            return "fp32", None
        if policy == "bf16":
            return "bf16", None
        measured = grid.agreement(self._reference_output, grid.argmax_agreement)
        return ("bf16" if measured >= self.agreement_threshold else "fp32"), measured

    def _reference_output(self, precision: str) -> torch.Tensor:
        import torch

        from pipelines import bundle_grid as grid

        spec = self._spec
        if spec.task is Task.CLASSIFICATION:
            shape = (8, spec.in_channels, *self._classification_size(None))
        else:
            shape = (1, spec.in_channels, *self._roi_size())
        reference = grid.reference_input(shape).to(self.device)
        with torch.inference_mode(), grid.autocast(self.device, precision):
            output = self.network(
                reference.contiguous(memory_format=grid.memory_format(spec.spatial_dims))
            )
        if spec.task is Task.DETECTION:
            maps = (
                output[self.detector.cls_key]
                if isinstance(output, dict)
                else output[: len(output) // 2]
            )
            return torch.cat([m.float().reshape(-1) for m in maps]).reshape(-1, 1)
        return output.float()

    # -- runs -------------------------------------------------------------------

    def run(self, volume: Volume) -> Findings:
        """Segment, classify or detect in ``volume`` with the bundle's network."""
        self.check_input(volume)
        spec = self._spec
        if not hasattr(self, "network"):
            raise PipelineError(f"bundle {self.name}: run() before initialize()")
        if spec.task is Task.SEGMENTATION:
            return self._segment(volume)
        if spec.task is Task.CLASSIFICATION:
            return self._classify(volume)
        return self._detect(volume)

    def _oriented(self, volume: Volume) -> tuple[grid.Orientation, np.ndarray]:
        """The volume in network axis order (3-D) or ``(column, row)`` order (2-D)."""
        from pipelines import bundle_grid as grid

        if self._spec.spatial_dims == 2:
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
        import torch

        from pipelines import bundle_grid as grid

        orientation, array = self._oriented(volume)
        invert = str(volume.header.get("PhotometricInterpretation", "")) == "MONOCHROME1"
        array = self.preprocessing.intensity(array, invert)
        tensor = torch.from_numpy(array)[None, None].to(self.device)
        spacing = (
            tuple(volume.spacing[p] for p in (2, 1))
            if self._spec.spatial_dims == 2
            else orientation.spacing(volume.spacing)
        )
        size = grid.resampled_shape(array.shape, spacing, self.preprocessing.pixdim)
        tensor = grid.resize(tensor, size)
        if self._spec.in_channels > 1:
            tensor = tensor.repeat(1, self._spec.in_channels, *([1] * len(size)))
        return orientation, tuple(array.shape), tensor

    def _predictor(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from pipelines import bundle_grid as grid

        fmt = grid.memory_format(self._spec.spatial_dims)

        def predict(window: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.network(window.contiguous(memory_format=fmt))
            return result.float()

        return predict

    def _segment(self, volume: Volume) -> Findings:
        import torch
        from monai.inferers import sliding_window_inference

        from pipelines import bundle_grid as grid

        orientation, oriented_shape, tensor = self._network_input(volume)
        with torch.inference_mode(), grid.autocast(self.device, self.precision):
            logits = sliding_window_inference(
                tensor,
                self._roi_size(),
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
        if self._spec.spatial_dims == 2:
            label_volume = label_volume[np.newaxis]
        return self._segmentation_findings(volume, label_volume)

    def _segmentation_findings(self, volume: Volume, label_volume: np.ndarray) -> Findings:
        spec = self._spec
        segments: list[Segment] = []
        measurements: list[Measurement] = []
        notes: list[str] = [f"precision {self.precision}"]
        for channel, label in enumerate(spec.labels):
            if spec.is_background(channel):
                continue
            mask = label_volume == channel
            count = int(np.count_nonzero(mask))
            if count == 0:
                notes.append(f"{label}: not found")
                continue
            number = len(segments) + 1
            label_codes = spec.codes[label]
            segments.append(
                Segment(
                    SegmentDescription(
                        number=number,
                        label=label[:64],
                        category=label_codes.category,
                        property_type=label_codes.property_type,
                        tracking_id=_slug(label),
                        anatomic_region=label_codes.region,
                        color_rgb=_PALETTE[(channel - 1) % len(_PALETTE)],
                    ),
                    mask,
                )
            )
            measurements.append(
                Measurement(
                    codes.VOLUME,
                    count * volume.voxel_volume_ml,
                    codes.MILLILITER,
                    segment_number=number,
                )
            )
            if volume.modality == "CT":
                mean = float(np.mean(volume.voxels[mask], dtype=np.float64))
                measurements.append(
                    Measurement(
                        codes.ATTENUATION_COEFFICIENT,
                        mean,
                        codes.HOUNSFIELD_UNIT,
                        segment_number=number,
                        derivation=codes.MEAN,
                    )
                )
        return self._findings(
            volume, segments=tuple(segments), measurements=tuple(measurements), notes=tuple(notes)
        )

    def _classification_size(self, oriented_shape: tuple[int, ...] | None) -> tuple[int, ...]:
        size = self.preprocessing.resize or self._spec.spatial_shape
        if size is None:
            if oriented_shape is None:
                raise PipelineError(f"bundle {self.name}: classification needs an input size")
            return oriented_shape
        return size

    def _classify(self, volume: Volume) -> Findings:
        import torch

        from pipelines import bundle_grid as grid

        spec = self._spec
        _, oriented_shape, tensor = self._network_input(volume)
        size = self._classification_size(oriented_shape)
        if tuple(tensor.shape[2:]) != tuple(size):  # MONAI Resize's default mode: area
            tensor = torch.nn.functional.interpolate(tensor, size=tuple(size), mode="area")
        with torch.inference_mode(), grid.autocast(self.device, self.precision):
            logits = self._predictor()(tensor)[0].float().reshape(-1)
        if logits.numel() == 1:
            positive = float(torch.sigmoid(logits)[0])
            probabilities = [1.0 - positive, positive]
        else:
            probabilities = torch.softmax(logits, dim=0).cpu().tolist()
        if len(probabilities) != len(spec.labels):
            raise PipelineError(
                f"bundle {self.name}: network gives {len(probabilities)} classes, "
                f"metadata names {len(spec.labels)}"
            )
        best = int(np.argmax(probabilities))
        label_codes = spec.codes[spec.labels[best]]
        classification = Classification(
            concept=label_codes.category,
            value=label_codes.property_type,
            probability=min(1.0, max(0.0, float(probabilities[best]))),
        )
        notes = tuple(
            f"{label}: p={p:.4f}" for label, p in zip(spec.labels, probabilities, strict=True)
        )
        return self._findings(
            volume, classifications=(classification,), notes=(f"precision {self.precision}", *notes)
        )

    def _detect(self, volume: Volume) -> Findings:
        import torch

        from pipelines import bundle_grid as grid

        spec = self._spec
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
        if spec.spatial_dims == 2:  # (row, column) -> (frame, row, column)
            source_boxes = np.column_stack(
                [
                    np.zeros(len(boxes)),
                    source_boxes[:, :2],
                    np.ones(len(boxes)),
                    source_boxes[:, 2:],
                ]
            )
        upper = np.array(volume.shape * 2, dtype=float)
        source_boxes = np.clip(source_boxes, 0.0, upper)
        detections = []
        for k in np.argsort(-scores):
            low, high = source_boxes[k, :3], source_boxes[k, 3:]
            if scores[k] < self.detection_score_threshold or np.any(high <= low):
                continue
            label = spec.labels[int(classes[k])]
            detections.append(
                Detection(
                    finding=spec.codes[label].property_type,
                    score=float(min(1.0, max(0.0, scores[k]))),
                    box_min=(float(low[0]), float(low[1]), float(low[2])),
                    box_max=(float(high[0]), float(high[1]), float(high[2])),
                    tracking_id=f"{_slug(label)}-{len(detections) + 1}",
                    label=label[:64],
                )
            )
        return self._findings(
            volume, detections=tuple(detections), notes=(f"precision {self.precision}",)
        )

    def _findings(self, volume: Volume, **content: Any) -> Findings:
        return Findings(
            pipeline_name=self.name,
            pipeline_version=self.version,
            source_sop_instance_uids=volume.sop_instance_uids,
            **content,
        )


def _parser(bundle: Path) -> ConfigParser:
    """The bundle's inference configuration, with ``bundle_root`` set."""
    from monai.bundle import ConfigParser

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


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "label"
