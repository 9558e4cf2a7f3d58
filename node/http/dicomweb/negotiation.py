"""Media type negotiation for Retrieve Frames and Retrieve Rendered (PS3.18 8.7.3, 8.7.4).

``application/octet-stream`` is the native (Explicit VR Little Endian)
frame, decoded when stored compressed; an image media type (``image/jp2``,
``image/jls``, ...) is the frame as stored when the stored transfer syntax is
of that type (the node never transcodes); ``transfer-syntax=*`` is the frame
as stored, whatever its encoding. A representation the node cannot produce is
answered 406.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian
from python_multipart.multipart import parse_options_header

from node.http.dicomweb.pixels import FrameError, PixelData

OCTET_STREAM = "application/octet-stream"
#: Media types of the encapsulated transfer syntaxes a frame can be returned in as stored
#: (PS3.18 8.7.3.3.2).
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
_NATIVE_CONTENT_TYPE = f"{OCTET_STREAM}; transfer-syntax={ExplicitVRLittleEndian}"


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
