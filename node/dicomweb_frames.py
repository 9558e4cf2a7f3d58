"""WADO-RS Retrieve Frames and Retrieve Rendered over held files (PS3.18 10.4.1.1.3, 10.4.1.1.5).

Frames are read one at a time, never the whole Pixel Data of a multi-frame
instance: natively encoded frames are sliced from the file at their offset
(1-bit frames, which need not start on a byte boundary, are unpacked and
packed again from bit 0, PS3.5 8.1.1 and 8.2), encapsulated frames come from
their fragments (PS3.5 A.4), and a frame is decoded with pydicom only when a
native representation of compressed data is asked for.

Media types follow PS3.18 8.7.3: ``application/octet-stream`` is the native
(Explicit VR Little Endian) frame, decoded when stored compressed; an image
media type (``image/jp2``, ``image/jls``, ...) is the frame as stored when the
stored transfer syntax is of that type (the node never transcodes);
``transfer-syntax=*`` is the frame as stored, whatever its encoding. A
representation the node cannot produce is answered 406.

A frame list may repeat numbers (the response holds the frames in the order
asked, PS3.18 10.4.1.1.5), but may hold no more entries than the instance has
frames, nor more than :data:`MAX_FRAME_LIST` (400); a native response larger
than :data:`MAX_RESPONSE_BYTES` is refused (413). The frames are produced one
at a time for a streamed response (:func:`iter_frames`): each distinct frame
is read or decoded once per request, a repeat kept in memory only while a
small budget allows, and deflated or big endian data parsed once per request.

Rendering (PS3.18 9.5.2, PS3.3 C.11) applies the Modality LUT, the VOI LUT
(the ``window`` query parameter, else the instance's window, else the frame's
minimum and maximum) and MONOCHROME1 inversion, and returns an 8-bit JPEG or
PNG made with Pillow.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.filereader import dcmread, read_partial
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    as_pixel_options,
    get_decoder,
    pixel_array,
)
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from python_multipart.multipart import parse_options_header

from node.errors import AinodeError

logger = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
#: Media types of the encapsulated transfer syntaxes a frame can be returned in as stored (PS3.18 8.7.3.3.2).
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}
#: Media types of rendered images (PS3.18 8.7.4); the first is the default.
RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png")
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_PIXEL_KEYWORDS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
_SLICEABLE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_NATIVE_CONTENT_TYPE = f"{OCTET_STREAM}; transfer-syntax={ExplicitVRLittleEndian}"
_UNDEFINED_LENGTH = 0xFFFFFFFF
#: Most entries one Retrieve Frames request may list (repeats included).
MAX_FRAME_LIST = 1024
#: Largest native (application/octet-stream) Retrieve Frames response, in bytes.
MAX_RESPONSE_BYTES = 2 << 30
#: Bytes of frames one request keeps in memory for a later repeat of the same frame number.
REPEAT_CACHE_BYTES = 64 << 20


class FrameError(AinodeError):
    """A frame or rendering request the node answers with an HTTP error."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code, self.code = status_code, code


# -- where the pixels are --------------------------------------------------------------


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
        """Bits in one natively encoded frame (PS3.5 8.1.1; YBR_FULL_422 holds 2 samples a pixel)."""
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


# -- media type negotiation (PS3.18 8.7.3) -------------------------------------------------


@dataclass(frozen=True)
class MediaRange:
    """One media range of an Accept header."""

    media_type: str
    params: dict[str, str]
    q: float


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, most preferred first (RFC 9110 12.5.1)."""
    ranges: list[MediaRange] = []
    for item in _split_unquoted(header or "", ","):
        value, raw = parse_options_header(item)
        params = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw.items()}
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        media_type = value.decode("latin-1").strip().lower()
        if media_type and q > 0:
            ranges.append(MediaRange(media_type, params, q))
    return sorted(ranges, key=lambda r: -r.q)


def _split_unquoted(text: str, separator: str) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [i for i in (s.strip() for s in items) if i]


@dataclass(frozen=True)
class FrameEncoding:
    """How requested frames are returned: decoded to native bytes, or as stored."""

    native: bool
    media_type: str  # the multipart/related "type" parameter
    part_content_type: str


def choose_frame_encoding(accept: str | None, pixels: PixelData) -> FrameEncoding:
    """The first acceptable representation the node can produce; 406 when there is none."""
    ranges = parse_accept(accept) or [MediaRange("*/*", {}, 1.0)]
    for media_range in ranges:
        encoding = _frame_encoding(media_range, pixels)
        if encoding is not None:
            return encoding
    stored = FRAME_MEDIA_TYPES.get(pixels.transfer_syntax_uid, OCTET_STREAM)
    raise FrameError(
        406,
        "not_acceptable",
        (
            f"cannot return these frames as {accept or '*/*'!r}: they are stored as "
            f"{pixels.transfer_syntax_uid.name} ({stored}), the node does not transcode"
            + ("" if pixels.decodable() else ", and no decoder for them is installed here")
            + '; ask for multipart/related; type="application/octet-stream" or transfer-syntax=*'
        ),
    )


def _frame_encoding(media_range: MediaRange, pixels: PixelData) -> FrameEncoding | None:
    if media_range.media_type == "multipart/related":
        wanted = media_range.params.get("type", "*/*").strip().lower()
    elif media_range.media_type in ("*/*", "multipart/*"):
        wanted = "*/*"
    else:
        return None  # frames are multipart (PS3.18 8.7.3.3.2)
    wanted = _ALIASES.get(wanted, wanted)
    syntax = media_range.params.get("transfer-syntax", "").strip() or None
    native = FrameEncoding(True, OCTET_STREAM, _NATIVE_CONTENT_TYPE)
    stored = _as_stored(pixels)
    can_decode = pixels.decodable()
    if syntax == "*" and wanted in ("*/*", OCTET_STREAM, "image/*", stored.media_type):
        return stored
    if wanted == OCTET_STREAM or wanted == "*/*":
        if syntax in (None, ExplicitVRLittleEndian) and can_decode:
            return native
        if wanted == "*/*" and syntax in (None, pixels.transfer_syntax_uid) and pixels.encapsulated:
            return stored
        return None
    if (
        pixels.encapsulated
        and wanted in ("image/*", stored.media_type)
        and syntax in (None, pixels.transfer_syntax_uid)
    ):
        return stored
    return None


def _as_stored(pixels: PixelData) -> FrameEncoding:
    if not pixels.encapsulated:
        return FrameEncoding(True, OCTET_STREAM, _NATIVE_CONTENT_TYPE)
    syntax = pixels.transfer_syntax_uid
    media_type = FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")
    return FrameEncoding(False, media_type, f"{media_type}; transfer-syntax={syntax}")


# -- frames ----------------------------------------------------------------------------


def check_frame_list(numbers: Sequence[int], pixels: PixelData, encoding: FrameEncoding) -> None:
    """404 for a frame out of range; 400 for a list longer than the instance's frames or
    :data:`MAX_FRAME_LIST`; 413 for a native response over :data:`MAX_RESPONSE_BYTES`."""
    check_frame_numbers(numbers, pixels)
    limit = min(pixels.number_of_frames, MAX_FRAME_LIST)
    if len(numbers) > limit:
        raise FrameError(
            400,
            "bad_request",
            (
                f"the frame list holds {len(numbers)} entries; at most {limit} are accepted (this instance has "
                f"{pixels.number_of_frames} frame(s), and no request lists more than {MAX_FRAME_LIST})"
            ),
        )
    if encoding.native:
        size = native_frame_bytes(pixels) * len(numbers)
        if size > MAX_RESPONSE_BYTES:
            raise FrameError(
                413,
                "payload_too_large",
                (
                    f"these {len(numbers)} frames would make a {size // (1 << 20)} MiB response, over the "
                    f"{MAX_RESPONSE_BYTES // (1 << 20)} MiB limit: ask for fewer frames at a time"
                ),
            )


def native_frame_bytes(pixels: PixelData) -> int:
    """Bytes of one frame in its native representation (as decoded: colour as 3 samples)."""
    o = pixels.options
    samples = int(o.get("samples_per_pixel", 1))
    return (int(o["rows"]) * int(o["columns"]) * samples * int(o["bits_allocated"]) + 7) // 8


def iter_frames(
    pixels: PixelData, numbers: Sequence[int], encoding: FrameEncoding
) -> Iterator[bytes]:
    """The requested frames (1-based numbers, in order), each as ``encoding`` says, one at a time.

    The list is checked (:func:`check_frame_list`) and the first frame read
    before this returns, so that the usual errors are raised as
    :class:`FrameError` here, before a streamed response has begun; an error
    found later (a corrupt frame further on) ends the iteration with it.
    """
    check_frame_list(numbers, pixels, encoding)
    if encoding.native and not pixels.encapsulated and pixels.value_offset is not None:
        _check_native_length(
            pixels, max(numbers) - 1
        )  # every frame to be sliced lies in the stored data
    reader = FrameReader(pixels, encoding, numbers)
    first = reader.frame(numbers[0])
    return _frames_after(first, reader, numbers[1:])


def _frames_after(first: bytes, reader: FrameReader, numbers: Sequence[int]) -> Iterator[bytes]:
    yield first
    for number in numbers:
        try:
            data = reader.frame(number)
        except FrameError:
            logger.warning(
                "frame %d of %s cannot be read: the response is cut short",
                number,
                reader.pixels.path,
                exc_info=True,
            )
            raise
        yield data


def read_frames(pixels: PixelData, numbers: Sequence[int], encoding: FrameEncoding) -> list[bytes]:
    """The requested frames (1-based numbers, in order), each as ``encoding`` says, all in memory."""
    return list(iter_frames(pixels, numbers, encoding))


class FrameReader:
    """Reads the frames of one request.

    Each distinct frame is read or decoded once: a frame asked for again later
    in the list is kept until its last use, while the kept frames stay under
    :data:`REPEAT_CACHE_BYTES` (past that a repeat is read again). Deflated and
    big endian data, which cannot be sliced from the file, is parsed once.
    """

    def __init__(self, pixels: PixelData, encoding: FrameEncoding, numbers: Sequence[int]) -> None:
        self.pixels, self.encoding = pixels, encoding
        self._pending = Counter(numbers)
        self._kept: dict[int, bytes] = {}
        self._kept_bytes = 0
        self._dataset: Dataset | None = None

    def frame(self, number: int) -> bytes:
        """Frame ``number`` (1-based), read once however often it is asked for."""
        data = self._kept.get(number)
        if data is None:
            data = self._read(number - 1)
        self._pending[number] -= 1
        if self._pending[number] <= 0:
            kept = self._kept.pop(number, None)
            if kept is not None:
                self._kept_bytes -= len(kept)
        elif number not in self._kept and self._kept_bytes + len(data) <= REPEAT_CACHE_BYTES:
            self._kept[number] = data
            self._kept_bytes += len(data)
        return data

    def _read(self, index: int) -> bytes:
        pixels, offset = self.pixels, self.pixels.value_offset
        if not self.encoding.native and offset is not None:
            return _stored_frame(pixels, offset, index)
        if offset is None:
            return _to_native_bytes(decode_frame(pixels, index, self._parsed()), pixels)
        if pixels.encapsulated:
            return _to_native_bytes(decode_frame(pixels, index), pixels)
        with open(pixels.path, "rb") as fp:
            return _native_frame(fp, pixels, offset, index)

    def _parsed(self) -> Dataset:
        if self._dataset is None:
            try:
                self._dataset = dcmread(self.pixels.path)
            except (ValueError, EOFError, OSError, struct.error) as exc:
                raise FrameError(
                    500, "internal_error", f"the pixel data cannot be read: {exc}"
                ) from exc
        return self._dataset


def _check_native_length(pixels: PixelData, index: int) -> None:
    """500 when natively encoded pixel data is too short to hold frame ``index``."""
    if ((index + 1) * pixels.frame_bits + 7) // 8 > pixels.value_length:
        raise FrameError(
            500,
            "internal_error",
            f"frame {index + 1}: the stored pixel data is shorter "
            f"than its {pixels.number_of_frames} frames",
        )


def _native_frame(fp: io.BufferedReader, pixels: PixelData, offset: int, index: int) -> bytes:
    """Frame ``index`` of natively encoded little endian data, sliced from the file at ``offset``."""
    bits = pixels.frame_bits
    first_byte, skip = divmod(index * bits, 8)
    size = (skip + bits + 7) // 8
    _check_native_length(pixels, index)  # first_byte + size == ((index + 1) * bits + 7) // 8
    fp.seek(offset + first_byte)
    data = fp.read(size)
    if bits % 8 == 0:  # whole bytes (always so unless Bits Allocated is 1)
        return data
    frame = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[skip : skip + bits]
    return np.packbits(frame, bitorder="little").tobytes()


def _stored_frame(pixels: PixelData, offset: int, index: int) -> bytes:
    """Frame ``index`` of encapsulated data as stored (PS3.5 A.4), read without the other frames."""
    offsets = pixels.options.get("extended_offsets")
    try:
        with open(pixels.path, "rb") as fp:
            fp.seek(offset)
            return get_frame(
                fp, index, number_of_frames=pixels.number_of_frames, extended_offsets=offsets
            )
    except (ValueError, EOFError, OSError) as exc:
        raise FrameError(
            500,
            "internal_error",
            f"frame {index + 1} cannot be read from the stored pixel data: {exc}",
        ) from exc


def decode_frame(pixels: PixelData, index: int, dataset: Dataset | None = None) -> np.ndarray:
    """Frame ``index`` decoded by pydicom (colour as RGB, 1-bit unpacked), read without the other frames.

    Deflated and big endian data is decoded from the whole dataset: ``dataset``
    when given (the file already read), else the file read here.
    """
    if not pixels.decodable():
        raise FrameError(
            406,
            "not_acceptable",
            f"no decoder for {pixels.transfer_syntax_uid.name} is installed on this node",
        )
    offset = pixels.value_offset
    try:
        if offset is None:
            return pixel_array(
                dataset if dataset is not None else dcmread(pixels.path), index=index
            )
        decoder = get_decoder(pixels.transfer_syntax_uid)
        options = {
            **pixels.options,
            "transfer_syntax_uid": pixels.transfer_syntax_uid,
            "pixel_keyword": pixels.keyword,
        }
        with open(pixels.path, "rb") as fp:
            if (
                not pixels.encapsulated
            ):  # one frame, from bit 0 (pydicom misplaces unaligned 1-bit frames)
                frame = _native_frame(fp, pixels, offset, index)
                array, _ = decoder.as_array(
                    frame, validate=True, **{**options, "number_of_frames": 1}
                )
                return array
            fp.seek(offset)
            array, _ = decoder.as_array(fp, index=index, validate=True, **options)
            return array
    except (ValueError, RuntimeError, EOFError, OSError, NotImplementedError) as exc:
        raise FrameError(
            500, "internal_error", f"frame {index + 1} cannot be decoded: {exc}"
        ) from exc


def _to_native_bytes(array: np.ndarray, pixels: PixelData) -> bytes:
    if int(pixels.options["bits_allocated"]) == 1:
        return np.packbits(array.astype(np.uint8).ravel(), bitorder="little").tobytes()
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


# -- rendered (PS3.18 9.5.2, 8.3.5.1) ------------------------------------------------------


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


def choose_rendered_type(accept: str | None) -> str:
    """image/jpeg (the default) or image/png; 406 for anything else."""
    for media_range in parse_accept(accept) or [MediaRange("*/*", {}, 1.0)]:
        if media_range.media_type in RENDERED_MEDIA_TYPES:
            return media_range.media_type
        if media_range.media_type in ("*/*", "image/*"):
            return RENDERED_MEDIA_TYPES[0]
    raise FrameError(
        406,
        "not_acceptable",
        f"rendered images are {' or '.join(RENDERED_MEDIA_TYPES)}, not {accept!r}",
    )


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
    """The ``sequence`` item for frame ``index``: per-frame, else shared functional groups (PS3.3 C.7.6.16)."""
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
    """The VOI LUT: the requested window, else the instance's first window, else the frame's range."""
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
