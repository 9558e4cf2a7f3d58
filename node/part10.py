"""DICOM Part 10 files as ingress checks them before it answers Success (PS3.10 7.1).

:func:`truncation` reads the whole data set, not only its header: every
element of defined length must hold that many bytes, sequence items
included, and the data set must end where its last element ends. pydicom
itself reads a cut-short file without complaint, so a part cut at 3,000 of
its 4,366 bytes would otherwise be stored.

:func:`content_digest` is the SHA-256 of the data set without its Part 10
header: the same instance re-sent with another File Meta header (another
sender's implementation UID, source AE title) is the same content.
"""

from __future__ import annotations

import hashlib
import struct
from io import BytesIO
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator, read_sequence
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

#: Elements whose length is undefined (sequences, encapsulated pixel data).
UNDEFINED_LENGTH = 0xFFFFFFFF
_PREAMBLE = 128 + 4  # preamble + "DICM"


def dataset_offset(data: bytes | memoryview) -> int:
    """Where the data set starts in a Part 10 file: after the preamble and File Meta group.

    Raises
    ------
    ValueError
        When the bytes are not a Part 10 file with a File Meta Information
        Group Length (0002,0000) first, as PS3.10 7.1 requires.
    """
    head = bytes(data[_PREAMBLE : _PREAMBLE + 12])
    if bytes(data[128:132]) != b"DICM" or len(head) < 12:
        raise ValueError("not a DICOM Part 10 file")
    group, element = struct.unpack("<HH", head[:4])
    if (group, element) != (0x0002, 0x0000) or head[4:6] != b"UL":
        raise ValueError("the File Meta group does not start with its group length")
    length = int(struct.unpack("<I", head[8:12])[0])
    offset = _PREAMBLE + 12 + length
    if offset > len(data):
        raise ValueError("the File Meta group is longer than the file")
    return offset


def content_digest(data: bytes | memoryview) -> str:
    """SHA-256 of the data set alone (the Part 10 header left out); of everything if not Part 10."""
    try:
        offset = dataset_offset(data)
    except ValueError:
        offset = 0
    return hashlib.sha256(memoryview(data)[offset:]).hexdigest()


def truncation(data: bytes | memoryview, transfer_syntax_uid: str) -> str | None:
    """Why the data set of a Part 10 file is incomplete, or ``None`` when it is whole.

    Checked: each element of defined length holds its bytes (in sequence
    items too), and nothing is left after the last element. Deflated data
    sets are not walked (they are inflated and checked when read).
    """
    syntax = UID(transfer_syntax_uid)
    if syntax == DeflatedExplicitVRLittleEndian:
        return None
    try:
        offset = dataset_offset(data)
    except ValueError as exc:
        return str(exc)
    body = bytes(data[offset:])
    fp = BytesIO(body)
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    end = 0
    try:
        for element in data_element_generator(fp, implicit, little):
            problem = _element_problem(element, implicit, little) or _delimited(element, body)
            if problem:
                return problem
            end = fp.tell()
    except (EOFError, OSError, ValueError, struct.error, NotImplementedError) as exc:
        return f"the data set cannot be read to its end ({type(exc).__name__})"
    if end != len(body):
        return f"the data set ends inside an element header at byte {offset + end}"
    return None


_SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def _delimited(element: Any, body: bytes) -> str | None:
    """An undefined-length value that is not a sequence (encapsulated pixel data) ends with
    the Sequence Delimitation Item (PS3.5 7.5.2); pydicom reads on to the end without it."""
    if not isinstance(element, RawDataElement) or element.length != UNDEFINED_LENGTH:
        return None
    if element.VR == "SQ" or element.value is None:
        return None
    at = element.value_tell + len(element.value)
    if body[at : at + 8] != _SEQUENCE_DELIMITER:
        return f"element {element.tag} has no sequence delimiter: the data set is cut short"
    return None


def _element_problem(element: Any, implicit: bool, little: bool) -> str | None:
    if isinstance(element, RawDataElement):
        value = element.value
        if element.length != UNDEFINED_LENGTH and len(value or b"") != element.length:
            return (
                f"element {element.tag} declares {element.length} bytes but holds "
                f"{len(value or b'')}: the data set is cut short"
            )
        if element.VR == "SQ" and value and element.length != UNDEFINED_LENGTH:
            items = read_sequence(BytesIO(value), implicit, little, element.length, "iso8859")
            return _items_problem(items, implicit, little)
        return None
    if element.VR == "SQ":
        return _items_problem(element.value, implicit, little)
    return None


def _items_problem(items: Any, implicit: bool, little: bool) -> str | None:
    for item in items:
        if not isinstance(item, Dataset):
            continue
        for tag in list(item.keys()):
            problem = _element_problem(item.get_item(tag), implicit, little)
            if problem:
                return problem
    return None
