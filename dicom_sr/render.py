"""Render source frames with the segment outlines burned in, and a legend.

Used by the Secondary Capture fallback (:mod:`dicom_sr.sc`) and the PDF
summary (:mod:`dicom_sr.pdf`). Frames are windowed with the source's first
Window Center/Width (PS3.3 C.11.2) in modality units (after Rescale Slope and
Intercept), outlines drawn in each segment's recommended display colour.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from dicom_sr.errors import SourceImagesError
from dicom_sr.geometry import SourceFrames, functional_group
from dicom_sr.outline import boundary, key_frame
from pipelines.findings import Findings, Segment

logger = logging.getLogger(__name__)

#: Burned into every rendered frame.
DISCLAIMER = "AI result - not for primary diagnosis"

_DEFAULT_WINDOWS = {"CT": (40.0, 400.0)}


def frames_to_show(findings: Findings, all_frames: bool) -> list[int]:
    """Return the findings frames a fallback shows, in frame order.

    Every frame when ``all_frames``; otherwise ``findings.key_frames`` when
    the pipeline names them, else the frame of each segment's largest
    cross-section.
    """
    if all_frames:
        return list(range(len(findings.source_sop_instance_uids)))
    if findings.key_frames:
        return sorted(set(findings.key_frames))
    keys = {key_frame(segment.mask) for segment in findings.segments}
    return sorted(k for k in keys if k is not None)


def modality_frame(frames: SourceFrames, frame: int) -> np.ndarray:
    """Return one source frame in modality units (float32)."""
    image, number = frames.reference(frame)
    if "PixelData" not in image:
        raise SourceImagesError(f"source image {image.SOPInstanceUID} has no pixel data")
    try:
        pixels = image.pixel_array if number is None else image.pixel_array[number - 1]
    except (NotImplementedError, ValueError, RuntimeError, AttributeError) as exc:
        raise SourceImagesError(
            f"cannot decode source image {image.SOPInstanceUID}: {exc}"
        ) from exc
    slope, intercept = _rescale(image, number)
    return pixels.astype(np.float32) * slope + intercept


def _rescale(image: Dataset, number: int | None) -> tuple[float, float]:
    item: Dataset | None = image
    if number is not None:
        item = functional_group(image, number - 1, "PixelValueTransformationSequence")
    if item is None:
        return 1.0, 0.0
    return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)


def window(image: Dataset, values: np.ndarray) -> np.ndarray:
    """Map modality values to 8-bit grey with the source's VOI window."""
    center, width = _window(image, values)
    low = center - width / 2.0
    scaled = (values - low) * (255.0 / max(width, 1e-6))
    grey = np.clip(scaled, 0, 255).astype(np.uint8)
    if image.get("PhotometricInterpretation") == "MONOCHROME1":
        grey = 255 - grey
    return grey


def _window(image: Dataset, values: np.ndarray) -> tuple[float, float]:
    center, width = image.get("WindowCenter"), image.get("WindowWidth")
    if center is not None and width is not None:
        return _first_value(center), _first_value(width)
    default = _DEFAULT_WINDOWS.get(str(image.get("Modality", "")))
    if default is not None:
        return default
    low, high = np.percentile(values, (1, 99))
    return float(low + high) / 2.0, float(max(high - low, 1.0))


def _first_value(value: float | str | Sequence[float]) -> float:
    """Return the first value of a possibly multi-valued DS element as a float."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return float(value[0])
    return float(value)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_frame(
    frames: SourceFrames,
    segments: Sequence[Segment],
    frame: int,
    *,
    legend: bool = True,
) -> np.ndarray:
    """Render one frame with the outlines of ``segments`` and a legend.

    Returns
    -------
    numpy.ndarray
        ``[row, column, 3]`` uint8 RGB, the source matrix size.
    """
    image, _ = frames.reference(frame)
    grey = window(image, modality_frame(frames, frame))
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    width = max(1, min(grey.shape) // 256)
    shown = []
    for segment in segments:
        plane = segment.mask[frame]
        if not plane.any():
            continue
        rgb[boundary(plane, width)] = segment.description.color_rgb
        shown.append(segment)
    if legend:
        rgb = _draw_legend(rgb, shown)
    return rgb


def _draw_legend(rgb: np.ndarray, segments: Sequence[Segment]) -> np.ndarray:
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    size = max(8, rgb.shape[0] // 40)
    font = _font(size)
    y = size // 2
    for segment in segments:
        draw.rectangle(
            [size // 2, y, size // 2 + size, y + size], fill=segment.description.color_rgb
        )
        draw.text((2 * size, y), segment.description.label, fill=(255, 255, 255), font=font)
        y += int(size * 1.4)
    draw.text(
        (size // 2, rgb.shape[0] - int(size * 1.5)), DISCLAIMER, fill=(255, 255, 0), font=font
    )
    return np.asarray(canvas)
