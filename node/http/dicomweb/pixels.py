"""Where a held file's pixel data lies and how it is encoded (PS3.5 8.1.1, 8.2, A.4).

The file is read only up to its Pixel Data element: natively encoded little
endian and encapsulated data is then read from the file at its offset, frame
by frame (:mod:`node.http.dicomweb.frames`); big endian and deflated data,
which cannot be sliced, is decoded from the whole dataset.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import dcmread, read_partial
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from node.errors import AinodeError

_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_PIXEL_KEYWORDS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
_SLICEABLE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


class FrameError(AinodeError):
    """A frame or rendering request the node answers with an HTTP error."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code, self.code = status_code, code


@dataclass(frozen=True)
class PixelData:
    """Where a held file's pixel data lies and how it is encoded.

    ``value_offset`` is the file offset of the Pixel Data value, or ``None``
    where frames cannot be sliced from the file (big endian or deflated data:
    those are decoded from the whole dataset).
    """

    path: str
    transfer_syntax_uid: UID
    keyword: str
    value_offset: int | None
    value_length: int
    options: dict[str, Any] = field(hash=False, compare=False)

    @property
    def number_of_frames(self) -> int:
        return int(self.options["number_of_frames"])

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax_uid.is_encapsulated

    @property
    def frame_bits(self) -> int:
        """Bits in one natively encoded frame (PS3.5 8.1.1; YBR_FULL_422 holds 2 samples a
        pixel)."""
        o = self.options
        samples = int(o.get("samples_per_pixel", 1))
        if o.get("photometric_interpretation") == "YBR_FULL_422":
            samples = 2
        return int(o["rows"]) * int(o["columns"]) * samples * int(o["bits_allocated"])

    def decodable(self) -> bool:
        """Whether a native representation can be made here (a decoder plugin is installed)."""
        if not self.encapsulated:
            return True
        try:
            return bool(get_decoder(self.transfer_syntax_uid).is_available)
        except NotImplementedError:
            return False


def pixel_data(path: str, what: str) -> PixelData:
    """Locate the pixel data of a held file; 404 (naming ``what``) when it has none."""
    try:
        found = _pixel_data(path, os.stat(path).st_mtime_ns)
    except (OSError, ValueError, EOFError, struct.error) as exc:
        raise FrameError(
            404, "not_found", f"the file of this instance cannot be read ({type(exc).__name__})"
        ) from exc
    if found is None:
        raise FrameError(
            404, "not_found", f"this instance ({what}) has no pixel data, so no frames"
        )
    return found


@lru_cache(maxsize=1024)
def _pixel_data(path: str, _mtime_ns: int) -> PixelData | None:
    with open(path, "rb") as fp:
        ds = read_partial(
            fp, stop_when=lambda tag, _vr, _length: int(tag) in _PIXEL_TAGS, force=True
        )
        syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
        if syntax == DeflatedExplicitVRLittleEndian:  # the file object is not the inflated stream
            full = dcmread(path)
            tag = next((t for t in _PIXEL_KEYWORDS if t in full), None)
            if tag is None:
                return None
            return PixelData(path, syntax, _PIXEL_KEYWORDS[tag], None, 0, _options(full))
        header = fp.read(8)
        if len(header) < 8:
            return None
        endian = "<" if syntax.is_little_endian else ">"
        if syntax.is_implicit_VR:
            group, element, length = struct.unpack(f"{endian}HHL", header)
        else:
            group, element, _vr, _reserved = struct.unpack(f"{endian}HH2sH", header)
            (length,) = struct.unpack(f"{endian}L", fp.read(4))
        tag = BaseTag(group << 16 | element)
        if int(tag) not in _PIXEL_KEYWORDS:
            return None
        offset = fp.tell() if syntax in _SLICEABLE or syntax.is_encapsulated else None
        return PixelData(path, syntax, _PIXEL_KEYWORDS[int(tag)], offset, length, _options(ds))


def _options(ds: Dataset) -> dict[str, Any]:
    options = as_pixel_options(ds)
    for key in ("rows", "columns", "bits_allocated"):
        if not options.get(key):
            raise ValueError(f"pixel data without {key}")
    return options


def check_frame_numbers(numbers: Sequence[int], pixels: PixelData) -> None:
    """404 for a frame number outside 1..Number of Frames (PS3.18 10.4.1.1.5)."""
    count = pixels.number_of_frames
    for n in numbers:
        if not 1 <= n <= count:
            raise FrameError(
                404, "not_found", f"frame {n} is out of range: this instance has {count} frame(s)"
            )
