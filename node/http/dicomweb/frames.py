"""WADO-RS Retrieve Frames over held files (PS3.18 10.4.1.1.5).

A response is made in three steps: :func:`pixel_data` locates the pixel
data, :func:`choose_frame_encoding` picks the representation the Accept
header asks for (:mod:`node.http.dicomweb.negotiation`), and
:func:`iter_frames` produces the frames.

Frames are read one at a time, never the whole Pixel Data of a multi-frame
instance: natively encoded frames are sliced from the file at their offset
(1-bit frames, which need not start on a byte boundary, are unpacked and
packed again from bit 0, PS3.5 8.1.1 and 8.2), encapsulated frames come from
their fragments (PS3.5 A.4), and a frame is decoded with pydicom only when a
native representation of compressed data is asked for.

A frame list may repeat numbers (the response holds the frames in the order
asked, PS3.18 10.4.1.1.5), but may hold no more entries than the instance has
frames, nor more than :data:`MAX_FRAME_LIST`; a native response larger
than :data:`MAX_RESPONSE_BYTES` is refused (413). The frames are produced one
at a time for a streamed response (:func:`iter_frames`): each distinct frame
is read or decoded once per request, a repeat kept in memory only while a
small budget allows, and deflated or big endian data parsed once per request.
"""

from __future__ import annotations

import io
import logging
import struct
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.filereader import dcmread
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array

from node.http.dicomweb.negotiation import FrameEncoding, choose_frame_encoding
from node.http.dicomweb.pixels import FrameError, PixelData, check_frame_numbers, pixel_data

__all__ = [
    "MAX_FRAME_LIST",
    "MAX_RESPONSE_BYTES",
    "REPEAT_CACHE_BYTES",
    "FrameError",
    "FrameReader",
    "PixelData",
    "check_frame_list",
    "choose_frame_encoding",
    "decode_frame",
    "iter_frames",
    "native_frame_bytes",
    "pixel_data",
    "read_frames",
]

logger = logging.getLogger(__name__)

#: Most entries one Retrieve Frames request may list (repeats included).
MAX_FRAME_LIST = 1024
#: Largest native (application/octet-stream) Retrieve Frames response, in bytes.
MAX_RESPONSE_BYTES = 2 << 30
#: Bytes of frames one request keeps in memory for a later repeat of the same frame number.
REPEAT_CACHE_BYTES = 64 << 20


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
                f"the frame list holds {len(numbers)} entries; at most {limit} are accepted "
                f"(this instance has {pixels.number_of_frames} frame(s), "
                f"and no request lists more than {MAX_FRAME_LIST})"
            ),
        )
    if encoding.native:
        size = native_frame_bytes(pixels) * len(numbers)
        if size > MAX_RESPONSE_BYTES:
            raise FrameError(
                413,
                "payload_too_large",
                (
                    f"these {len(numbers)} frames would make a {size // (1 << 20)} MiB response, "
                    f"over the {MAX_RESPONSE_BYTES // (1 << 20)} MiB limit: "
                    "ask for fewer frames at a time"
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
    """The requested frames (1-based numbers, in order), each as ``encoding`` says, all in
    memory."""
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
    """Frame ``index`` of natively encoded little endian data, sliced from the file at
    ``offset``."""
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
    """Frame ``index`` decoded by pydicom (colour as RGB, 1-bit unpacked), read without the
    other frames.

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
