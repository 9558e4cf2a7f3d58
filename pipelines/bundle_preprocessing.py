"""A bundle's preprocessing and inferer settings, applied by ainode itself.

Read from the inference configuration's ``preprocessing`` transforms (by
their ``_target_`` name): ``Orientation(d)`` (``axcodes``), ``Spacing(d)``
(``pixdim``), ``ScaleIntensityRange(d)`` (``a_min``, ``a_max``, ``b_min``,
``b_max``, ``clip``), ``ScaleIntensity(d)`` (min-max to [0, 1]),
``NormalizeIntensity(d)`` (``nonzero``), ``Resize(d)`` (``spatial_size``,
classification); and ``inferer`` (``roi_size``, ``sw_batch_size``,
``overlap``, ``mode``). What ``inputs.image`` of the metadata says
(:class:`~pipelines.bundle_spec.BundleSpec`) wins over the transforms.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.bundle_spec import BundleSpec
from pipelines.errors import PipelineError

if TYPE_CHECKING:  # MONAI loads with the network, not when the node lists pipelines
    from monai.bundle.config_parser import ConfigParser

logger = logging.getLogger(__name__)

#: Transforms whose effect ainode reproduces (or which only load and convert).
HANDLED_TRANSFORMS = frozenset(
    {
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
)


class Preprocessing:
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
        self.spatial_shape: tuple[int, ...] | None = spec.spatial_shape

    def read(self, parser: ConfigParser) -> None:
        """Fill in what the metadata did not say from ``preprocessing`` and ``inferer``."""
        for index, target in transform_list(parser):
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
            elif base not in HANDLED_TRANSFORMS:
                logger.warning("bundle transform %s is not applied by ainode", target)
        self._read_inferer(parser)

    def _read_inferer(self, parser: ConfigParser) -> None:
        inferer = parser.get("inferer")
        if not isinstance(inferer, dict):
            return
        if "roi_size" in inferer:
            self.roi_size = tuple(int(v) for v in parser.get_parsed_content("inferer#roi_size"))
        if "sw_batch_size" in inferer:
            self.sw_batch_size = int(parser.get_parsed_content("inferer#sw_batch_size"))
        if "overlap" in inferer:
            self.overlap = float(parser.get_parsed_content("inferer#overlap"))
        if "mode" in inferer:
            self.mode = str(parser.get_parsed_content("inferer#mode"))

    def window_size(self, name: str) -> tuple[int, ...]:
        """The sliding-window size: the inferer's ``roi_size``, else the input shape."""
        roi = self.roi_size or self.spatial_shape
        if roi is None:
            raise PipelineError(
                f"bundle {name}: no window size (inferer roi_size or inputs.image.spatial_shape)"
            )
        return roi

    def classification_size(
        self, name: str, oriented_shape: tuple[int, ...] | None
    ) -> tuple[int, ...]:
        """The classifier's input size: ``Resize``, the input shape, else ``oriented_shape``."""
        size = self.resize or self.spatial_shape
        if size is None:
            if oriented_shape is None:
                raise PipelineError(f"bundle {name}: classification needs an input size")
            return oriented_shape
        return size

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


def transform_list(parser: ConfigParser) -> list[tuple[int, str]]:
    """``(index, _target_)`` of each preprocessing transform (index -1: not a Compose)."""
    pre = parser.get("preprocessing")
    if not isinstance(pre, dict):
        return []
    items = pre.get("transforms")
    if isinstance(items, list):
        return [(i, str(t.get("_target_", ""))) for i, t in enumerate(items) if isinstance(t, dict)]
    return [(-1, str(pre.get("_target_", "")))]
