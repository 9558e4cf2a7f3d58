"""DIMSE status codes and socket tuning shared by ingress and egress.

Statuses are named constants from PS3.4 Table B.2-1 (Storage Service Class)
and PS3.7 Annex C, never bare hex in the handlers.
"""

from __future__ import annotations

import enum
import logging
import socket
from typing import Any

from pynetdicom import _config as pynetdicom_config

logger = logging.getLogger(__name__)


class StoreStatus(enum.IntEnum):
    """C-STORE response statuses (PS3.4 Table B.2-1)."""

    SUCCESS = 0x0000
    #: Refused: Out of Resources (A7xx) - disk full or the spool cannot be written.
    OUT_OF_RESOURCES = 0xA700
    #: Error: Data Set does not match SOP Class (A9xx).
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Error: Cannot understand (Cxxx) - the data set could not be parsed.
    CANNOT_UNDERSTAND = 0xC000
    #: Warning: Coercion of Data Elements (B000).
    COERCION_OF_DATA_ELEMENTS = 0xB000


#: ainode's Implementation Class UID (PS3.7 D.3.3.2), a UUID-derived 2.25 root.
IMPLEMENTATION_CLASS_UID = "2.25.178592637418221196516306440736924361091"
#: Implementation Version Name: "AINODE_" + the release, at most 16 characters.
IMPLEMENTATION_VERSION_NAME = "AINODE_010"

#: Transfer syntaxes that keep every pixel value (the node prefers them).
LOSSLESS_COMPRESSED = frozenset(
    {
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 (Lossless Only)
        "1.2.840.10008.1.2.4.201",  # HTJ2K (Lossless Only)
        "1.2.840.10008.1.2.4.202",  # HTJ2K with RPCL (Lossless Only)
        "1.2.840.10008.1.2.5",  # RLE Lossless
    }
)


def identify(ae: Any) -> None:
    """Announce ainode's own implementation identity on an AE."""
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME


class EchoStatus(enum.IntEnum):
    """C-ECHO response statuses (PS3.7 Annex C)."""

    SUCCESS = 0x0000


def is_success(status: int | None) -> bool:
    """Success or Warning (Bxxx, 0001) counts as stored, per PS3.4 B.2.3."""
    return status is not None and (
        status == 0x0000 or status == 0x0001 or 0xB000 <= status <= 0xBFFF
    )


def quiet_pynetdicom() -> None:
    """Stop pynetdicom logging request identifiers (patient data) (PS3.15 hygiene)."""
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def set_nodelay(assoc: Any) -> None:
    """Turn off Nagle's algorithm on an association's socket.

    dcmtk and Orthanc leave it on, which costs ~45 ms per image on loopback;
    setting it on our end of every connection lifts a default sender from
    ~23 to ~300 images/s.
    """
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # a socket already closed by the peer
        logger.debug("cannot set TCP_NODELAY: %s", exc)
