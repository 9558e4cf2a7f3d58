"""Peers in the settings: destinations results go to, sources studies come from."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from dicom_sr.kinds import ResultKind
from node.config.base import Model, check_ae_title, check_tokens


class DimseDestination(Model):
    """A DICOM peer results are sent to by C-STORE."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)

    _ae = field_validator("ae_title")(check_ae_title)


class DicomwebEndpoint(Model):
    """A DICOMweb service (PS3.18): base URL and credentials.

    Give either ``token`` (sent as ``Authorization: Bearer``) or
    ``username`` and ``password`` (HTTP basic), or neither.
    """

    url: str = Field(pattern=r"^https?://[^\s]+$")
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> DicomwebEndpoint:
        if self.token is not None and self.username is not None:
            raise ValueError("give either token or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class ResultProfile(Model):
    """How the result objects for one destination are shaped, to fit its viewers.

    ``seg_type``: ``binary`` (default; every SEG viewer), ``labelmap`` (Label
    Map Segmentation Storage, 2024: smallest, newest viewers only) or
    ``fractional`` (values 0 or 255 of 255; OHIF refuses it).
    ``omit_empty_frames``: leave out SEG frames without a pixel of their
    segment (default); some older viewers want one frame per source frame.
    ``seg_compression``: ``none`` or ``jpeg2000-lossless`` (25x smaller,
    slower to write; Weasis and dcmqi read it, dcmjs does not).
    ``sc_frames``: the Secondary Capture fallback shows ``key`` slices
    (default) or ``all`` slices.

    Destinations with the same profile get the very same objects; each
    distinct profile gets its own SEG, SR, SC and KOS with UIDs of their own.
    """

    seg_type: Literal["binary", "labelmap", "fractional"] = "binary"
    omit_empty_frames: bool = True
    seg_compression: Literal["none", "jpeg2000-lossless"] = "none"
    sc_frames: Literal["key", "all"] = "key"

    def effective(self, formats: tuple[ResultKind, ...]) -> ResultProfile:
        """This profile with the options ``formats`` make irrelevant set to their defaults.

        Two destinations whose objects would be identical get the same key.
        """
        default = ResultProfile()
        changes: dict[str, Any] = {}
        if not {ResultKind.SEG, ResultKind.SR, ResultKind.KO} & set(formats):
            changes |= {
                "seg_type": default.seg_type,
                "omit_empty_frames": default.omit_empty_frames,
                "seg_compression": default.seg_compression,
            }
        if ResultKind.SC not in formats:
            changes["sc_frames"] = default.sc_frames
        return self.model_copy(update=changes)

    @property
    def key(self) -> str:
        """A short stable name, recorded with each output.

        ``default``, or e.g. ``labelmap+all-frames``.
        """
        parts: list[str] = []
        if self.seg_type != "binary":
            parts.append(self.seg_type)
        if not self.omit_empty_frames:
            parts.append("all-frames")
        if self.seg_compression != "none":
            parts.append("j2k")
        if self.sc_frames != "key":
            parts.append("sc-all")
        return "+".join(parts) or "default"


class Destination(Model):
    """Where results go (exactly one of ``dimse`` or ``dicomweb``), and which objects."""

    dimse: DimseDestination | None = None
    dicomweb: DicomwebEndpoint | None = None
    formats: tuple[ResultKind, ...] = (ResultKind.SEG, ResultKind.SR)
    profile: ResultProfile = ResultProfile()

    @field_validator("formats", mode="before")
    @classmethod
    def _kinds(cls, value: Any) -> Any:
        """``[seg, sr]`` as written in YAML: any requestable :class:`ResultKind`, any case."""
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError("formats is a list, e.g. [seg, sr]")
        kinds = tuple(ResultKind.parse(str(v)) for v in value)
        refused = [k.format_name for k in kinds if not k.requestable]
        if refused:
            raise ValueError(f"{refused[0]} is not a format a destination asks for")
        return tuple(dict.fromkeys(kinds))

    @property
    def variant(self) -> str:
        """The key of the result objects this destination gets (see :class:`ResultProfile`)."""
        return self.profile.effective(self.formats).key

    @model_validator(mode="after")
    def _exactly_one(self) -> Destination:
        if (self.dimse is None) == (self.dicomweb is None):
            raise ValueError("a destination has exactly one of 'dimse' or 'dicomweb'")
        return self

    @property
    def kind(self) -> str:
        return "dimse" if self.dimse is not None else "dicomweb"


class DimseSource(Model):
    """A DIMSE PACS the node can query (C-FIND) and retrieve from (C-GET or C-MOVE)."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = None
    retrieve: Literal["c-get", "c-move"] = "c-get"
    timeout_seconds: float = Field(default=30.0, gt=0)

    _ae = field_validator("ae_title")(check_ae_title)


class Source(Model):
    """A PACS the node pulls from and asks for study counts (exactly one kind).

    ``calling_ae_titles`` lists the AE titles with which this PACS sends to
    the node by C-STORE; studies it sends are checked for completeness
    against it (by default the ``dimse.ae_title``). ``api_tokens`` are the
    bearer tokens it presents when it sends by STOW-RS: STOW-RS accepts
    them (nothing else does: not QIDO-RS/WADO-RS, not the REST API), and
    studies sent with one are checked against this source.
    """

    dimse: DimseSource | None = None
    dicomweb: DicomwebEndpoint | None = None
    calling_ae_titles: tuple[str, ...] = ()
    api_tokens: tuple[SecretStr, ...] = ()

    _long_enough = field_validator("api_tokens")(check_tokens)

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if (self.dimse is None) == (self.dicomweb is None):
            raise ValueError("a source has exactly one of 'dimse' or 'dicomweb'")
        return self

    @property
    def sender_ae_titles(self) -> tuple[str, ...]:
        """AE titles that identify this PACS as the sender of a study."""
        if self.calling_ae_titles:
            return self.calling_ae_titles
        return (self.dimse.ae_title,) if self.dimse is not None else ()
