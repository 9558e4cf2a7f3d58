"""Load a planar image (CR, DX, MG, US, XA, ...) as a :class:`~pipelines.volume.Volume`.

Projection radiographs and ultrasound images have no Image Plane Module
(no Image Position / Orientation (Patient)): their pixels have a physical
size but no place in patient coordinates. They load as a volume with
``planar=True``:

* one frame for a single-frame image; a multi-frame image without
  functional groups (ultrasound or XA cine) gives one frame per time point,
  in the stored order (frames are then *time*, not slices);
* ``origin`` ``(0, 0, 0)`` and identity directions (nominal, not patient
  coordinates); the frame "spacing" is a nominal 1 mm;
* row and column spacing from Pixel Spacing (0028,0030) when it is present
  and non-zero, else Imager Pixel Spacing (0018,1164, at the detector: not
  corrected for magnification), else the first Sequence of Ultrasound
  Regions item (PS3.3 C.8.5.5) whose Physical Units are cm, else 1 mm;
  ``Volume.header["SpacingSource"]`` says which;
* values: monochrome images keep their stored values after Rescale Slope /
  Intercept (a MONOCHROME1 image is *not* inverted; its Photometric
  Interpretation is in ``Volume.header``); colour ultrasound (RGB, YBR_*,
  PALETTE COLOR) is converted to luminance ``Y = 0.299 R + 0.587 G + 0.114 B``
  (ITU-R BT.601) in ``[0, 255]`` (16-bit palette entries are scaled by 1/257).
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut
from pydicom.pixels.utils import pixel_array

from pipelines.errors import InputError
from pipelines.header import series_header
from pipelines.volume_types import DECODE_ERRORS, Volume

logger = logging.getLogger(__name__)

#: Modalities whose single images load as planar volumes when they lack patient geometry.
PLANAR_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "US", "XA", "RF", "ES", "XC"})
#: Modalities whose colour images are converted to luminance.
COLOUR_MODALITIES = frozenset({"US", "ES", "XC"})

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CM_UNITS = 3  # Physical Units X/Y Direction: 0003H = cm (PS3.3 C.8.5.5.1.15)


def is_planar(ds: Dataset) -> bool:
    """A planar-modality image without Image Position (Patient) or functional groups."""
    return (
        str(ds.get("Modality", "")) in PLANAR_MODALITIES
        and "ImagePositionPatient" not in ds
        and "PerFrameFunctionalGroupsSequence" not in ds
    )


def load_planar(ds: Dataset) -> Volume:
    """One planar image (all its frames) as a ``planar`` :class:`Volume`.

    Raises
    ------
    InputError
        When the image has no pixel data or no SOP Instance UID, when its
        pixels cannot be decoded, or when it is colour but not ultrasound.
    """
    if "PixelData" not in ds:
        raise InputError("image 0 has no pixel data")
    if not ds.get("SOPInstanceUID"):
        raise InputError("image 0 has no SOP Instance UID")
    if "ModalityLUTSequence" in ds:
        raise InputError("image 0 uses a Modality LUT Sequence, which is not supported")
    voxels = _planar_pixels(ds)
    n_frames = voxels.shape[0]
    (row_spacing, column_spacing), source = _planar_spacing(ds)
    header: dict[str, Any] = dict(series_header([ds], [0] * n_frames, range(1, n_frames + 1)))
    header["SpacingSource"] = source
    return Volume(
        voxels=voxels,
        spacing=(1.0, row_spacing, column_spacing),
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        sop_instance_uids=(str(ds.SOPInstanceUID),) * n_frames,
        source_frame_numbers=tuple(range(1, n_frames + 1)),
        source_indices=(0,) * n_frames,
        modality=str(ds.get("Modality", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")) or None,
        header=MappingProxyType(header),
        planar=True,
    )


def select_frame(volume: Volume, index: int) -> Volume:
    """One frame of a (cine) volume as a one-frame volume, for 2-D pipelines."""
    if not 0 <= index < volume.shape[0]:
        raise InputError(f"frame {index} outside 0..{volume.shape[0] - 1}")
    keep = slice(index, index + 1)
    return Volume(
        voxels=np.ascontiguousarray(volume.voxels[keep]),
        spacing=volume.spacing,
        origin=volume.origin,
        row_direction=volume.row_direction,
        column_direction=volume.column_direction,
        slice_direction=volume.slice_direction,
        sop_instance_uids=volume.sop_instance_uids[keep],
        source_frame_numbers=volume.source_frame_numbers[keep],
        source_indices=volume.source_indices[keep],
        modality=volume.modality,
        series_instance_uid=volume.series_instance_uid,
        frame_step=volume.frame_step,
        sop_class_uid=volume.sop_class_uid,
        header=volume.header,
        planar=volume.planar,
    )


def _planar_pixels(ds: Dataset) -> np.ndarray:
    """``float32 [frame, row, column]``: rescaled monochrome values or colour luminance."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    monochrome = photometric in ("MONOCHROME1", "MONOCHROME2") and samples == 1
    modality = str(ds.get("Modality", ""))
    if not monochrome and modality not in COLOUR_MODALITIES:
        raise InputError(
            f"image 0 is not monochrome (Photometric Interpretation "
            f"{photometric or 'missing'}, {samples} samples per pixel)"
        )
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        raise InputError("image 0 has no Transfer Syntax UID in its file meta")
    try:
        if monochrome:
            pixels = pixel_array(ds, raw=True)
        elif photometric == "PALETTE COLOR":
            pixels = apply_color_lut(pixel_array(ds, raw=True), ds)
            if pixels.dtype.itemsize > 1:  # 16-bit palette entries
                pixels = pixels.astype(np.float32) / np.float32(257.0)
        else:
            pixels = pixel_array(ds)  # YBR_* converted to RGB by pydicom
    except DECODE_ERRORS as exc:
        raise InputError(
            f"image 0: pixel data cannot be decoded "
            f"({ds.file_meta.TransferSyntaxUID.name}): {type(exc).__name__}"
        ) from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if monochrome:
        values = pixels.reshape((n_frames, *pixels.shape[-2:])).astype(np.float32)
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        if slope != 1.0:
            values *= np.float32(slope)
        if intercept:
            values += np.float32(intercept)
        return values
    rgb = pixels.reshape((n_frames, *pixels.shape[-3:]))
    return np.ascontiguousarray(rgb.astype(np.float32) @ _LUMA)


def _planar_spacing(ds: Dataset) -> tuple[tuple[float, float], str]:
    """(row, column) spacing in mm and the attribute it came from."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            row, column = float(value[0]), float(value[1])
            if row > 0 and column > 0 and np.isfinite([row, column]).all():
                return (row, column), keyword
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        units = (region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection"))
        dx, dy = region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY")
        if units == (_CM_UNITS, _CM_UNITS) and dx and dy and dx > 0 and dy > 0:
            return (abs(float(dy)) * 10.0, abs(float(dx)) * 10.0), "SequenceOfUltrasoundRegions"
    logger.info("planar image without pixel spacing; assuming 1 mm")
    return (1.0, 1.0), "nominal"
