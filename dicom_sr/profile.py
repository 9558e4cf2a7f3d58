"""Per-destination viewer compatibility: how to shape the result objects.

Administrators choose a :class:`ViewerProfile` per destination (see
``docs/viewers.md`` for which viewer wants what).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless

from dicom_sr.errors import EncodingError

logger = logging.getLogger(__name__)


class SegmentationType(enum.Enum):
    """Segmentation Type (0062,0001) and the SOP Class it implies.

    ``BINARY`` and ``FRACTIONAL`` are Segmentation Storage (PS3.3 A.51);
    ``LABELMAP`` is Label Map Segmentation Storage (PS3.3 A.51a, 2024),
    one 8/16-bit label per pixel, segments must not overlap.
    """

    BINARY = "BINARY"
    FRACTIONAL = "FRACTIONAL"
    LABELMAP = "LABELMAP"


class ScFrames(enum.Enum):
    """Which source frames a Secondary Capture fallback shows."""

    KEY = "KEY"
    ALL = "ALL"


#: Transfer syntaxes a segmentation can be written in with highdicom 0.28.
SEG_TRANSFER_SYNTAXES = frozenset({ExplicitVRLittleEndian, JPEG2000Lossless})


@dataclass(frozen=True, kw_only=True)
class ViewerProfile:
    """What the viewers behind one destination can display.

    Parameters
    ----------
    segmentation_type : SegmentationType
        ``BINARY`` (default: every SEG viewer), ``LABELMAP`` (smallest, newest
        viewers only) or ``FRACTIONAL`` (values 0 or 255 of 255; OHIF refuses it).
    omit_empty_frames : bool
        Leave out SEG frames holding no pixel of their segment (PS3.3
        C.8.20.2); some older viewers want one frame per source frame.
    transfer_syntax_uid : str
        SEG transfer syntax: Explicit VR Little Endian or JPEG 2000 Lossless.
    sc_frames : ScFrames
        Secondary Capture fallback: key frames only (default) or every frame.
    """

    segmentation_type: SegmentationType = SegmentationType.BINARY
    omit_empty_frames: bool = True
    transfer_syntax_uid: str = ExplicitVRLittleEndian
    sc_frames: ScFrames = ScFrames.KEY

    def __post_init__(self) -> None:
        if not isinstance(self.segmentation_type, SegmentationType):
            raise EncodingError(
                f"segmentation_type must be a SegmentationType: {self.segmentation_type!r}"
            )
        if not isinstance(self.sc_frames, ScFrames):
            raise EncodingError(f"sc_frames must be an ScFrames: {self.sc_frames!r}")
        if UID(self.transfer_syntax_uid) not in SEG_TRANSFER_SYNTAXES:
            raise EncodingError(
                f"transfer syntax {self.transfer_syntax_uid} is not supported for SEG"
            )
