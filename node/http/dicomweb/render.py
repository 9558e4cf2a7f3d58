"""WADO-RS Retrieve Rendered over held files (PS3.18 10.4.1.1.3, 9.5.2, 8.3.5.1).

Rendering (PS3.3 C.11) applies the Modality LUT, the VOI LUT (the ``window``
query parameter, else the instance's window, else the frame's minimum and
maximum) and MONOCHROME1 inversion, and returns an 8-bit JPEG or PNG made
with Pillow.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut

from node.http.dicomweb.frames import decode_frame
from node.http.dicomweb.pixels import FrameError, PixelData, check_frame_numbers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): center, width and VOI LUT Function."""

    center: float
    width: float
    function: str = "LINEAR"

    def __post_init__(self) -> None:
        if self.function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise FrameError(400, "bad_request", f"unknown VOI LUT function {self.function!r}")
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise FrameError(400, "bad_request", "window center and width are finite numbers")
        smallest_ok = self.width >= 1 if self.function == "LINEAR" else self.width > 0
        if not smallest_ok:
            raise FrameError(
                400,
                "bad_request",
                "window width must be at least 1 (LINEAR) or above 0 (LINEAR_EXACT, SIGMOID)",
            )

    @classmethod
    def parse(cls, text: str) -> Window:
        """``center,width[,function]`` as in the ``window`` query parameter (PS3.18 8.3.5.1.4)."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) not in (2, 3):
            raise FrameError(400, "bad_request", "window is center,width[,function]")
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError as exc:
            raise FrameError(400, "bad_request", "window center and width are numbers") from exc
        function = parts[2].upper().replace("-", "_") if len(parts) == 3 else "LINEAR"
        return cls(center, width, function)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Map values to 0..255 (PS3.3 C.11.2.1.2.1, C.11.2.1.3)."""
        c, w = self.center, self.width
        with np.errstate(
            over="ignore", divide="ignore", invalid="ignore"
        ):  # extremes saturate to 0 or 255
            if self.function == "SIGMOID":
                out = 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
            elif self.function == "LINEAR_EXACT":
                out = ((values - c) / w + 0.5) * 255.0
            elif w > 1:
                out = ((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0
            else:  # width 1: a threshold
                out = np.where(values > c - 0.5, 255.0, 0.0)
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Viewport:
    """The ``viewport=vw,vh`` query parameter (PS3.18 8.3.5.1.3): the largest size to return."""

    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Viewport:
        try:
            width, height = (int(v) for v in text.split(","))
        except ValueError as exc:
            raise FrameError(400, "bad_request", "viewport is width,height in pixels") from exc
        if width < 1 or height < 1:
            raise FrameError(400, "bad_request", "viewport width and height are at least 1")
        return cls(width, height)


def render_frame(
    pixels: PixelData,
    header: Dataset,
    number: int,
    media_type: str,
    *,
    window: Window | None = None,
    viewport: Viewport | None = None,
    quality: int = 90,
) -> bytes:
    """Frame ``number`` (1-based) as an 8-bit JPEG or PNG for display (PS3.18 9.5.2)."""
    check_frame_numbers([number], pixels)
    array = decode_frame(pixels, number - 1)
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if array.ndim == 2 and photometric == "PALETTE COLOR":
        array = apply_color_lut(array, header)
    if array.ndim == 3:
        image = Image.fromarray(_rgb8(array, header))  # uint8 (rows, columns, 3): RGB
    else:
        grey = _voi(_modality(array, header, number - 1), header, number - 1, window)
        if photometric == "MONOCHROME1":
            grey = 255 - grey
        image = Image.fromarray(grey)  # uint8 (rows, columns): L
    if viewport is not None and (image.width > viewport.width or image.height > viewport.height):
        image.thumbnail((viewport.width, viewport.height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if media_type == "image/png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _rgb8(array: np.ndarray, header: Dataset) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    palette = header.get("PhotometricInterpretation") == "PALETTE COLOR"  # 16-bit LUT entries
    bits = 16 if palette else int(header.get("BitsStored", 8))
    return (array.astype(np.uint32) >> max(0, bits - 8)).clip(0, 255).astype(np.uint8)


def _frame_item(header: Dataset, index: int, sequence: str) -> Dataset | None:
    """The ``sequence`` item for frame ``index``: per-frame, else shared functional groups
    (PS3.3 C.7.6.16)."""
    for groups, i in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = header.get(groups)
        if (
            items is not None
            and len(items) > i
            and sequence in items[i]
            and len(items[i][sequence])
        ):
            item: Dataset = items[i][sequence][0]
            return item
    return None


def _modality(array: np.ndarray, header: Dataset, index: int) -> np.ndarray:
    """The Modality LUT (PS3.3 C.11.1): rescale slope and intercept, or a Modality LUT Sequence."""
    if "ModalityLUTSequence" in header:
        return np.asarray(apply_modality_lut(array, header), dtype=np.float64)
    source = _frame_item(header, index, "PixelValueTransformationSequence") or header
    slope = float(source.get("RescaleSlope", 1) or 1)
    intercept = float(source.get("RescaleIntercept", 0) or 0)
    return array.astype(np.float64) * slope + intercept


def _voi(values: np.ndarray, header: Dataset, index: int, window: Window | None) -> np.ndarray:
    """The VOI LUT: the requested window, else the instance's first window, else the frame's
    range."""
    window = window or _stored_window(header, index)
    if window is not None:
        return window.apply(values)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    with np.errstate(invalid="ignore"):  # NaN and infinities of float pixel data saturate
        return np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


def _stored_window(header: Dataset, index: int) -> Window | None:
    source = _frame_item(header, index, "FrameVOILUTSequence") or header
    center, width = source.get("WindowCenter"), source.get("WindowWidth")
    if center is None or width is None:
        return None
    center = center[0] if isinstance(center, Sequence) and not isinstance(center, str) else center
    width = width[0] if isinstance(width, Sequence) and not isinstance(width, str) else width
    function = str(source.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    try:
        return Window(float(center), float(width), function)
    except (FrameError, ValueError, TypeError):
        logger.info("ignoring an unusable stored window (%s, %s, %s)", center, width, function)
        return None
