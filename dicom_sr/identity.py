"""Who wrote a result, with which algorithm, under which UIDs.

Writers take every identity field explicitly: the runner mints the result
UIDs once per job and records them before writing, so a retry re-sends the
same objects instead of duplicates. UIDs the writers derive themselves
(device observer UID, tracking UIDs) are name-based (:func:`derived_uid`), so
they too are the same on every retry.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import highdicom as hd
from pydicom.uid import RE_VALID_UID

from dicom_sr.codes import ARTIFICIAL_INTELLIGENCE
from dicom_sr.errors import IdentityError
from pipelines.findings import Code

logger = logging.getLogger(__name__)

#: Namespace of the name-based UUIDs behind :func:`derived_uid`.
_AINODE_NAMESPACE = uuid.UUID("0b9f4c52-4a43-5a37-9d0c-5f0e4d2f6a11")

_MAX_LO = 64
_MAX_UID = 64
_MAX_INTEGER_STRING = 2**31 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def derived_uid(*parts: str) -> str:
    """Return a UID derived from ``parts``, the same for the same parts.

    The UID is ``2.25.`` followed by the integer form of a name-based (SHA-1)
    UUID, as PS3.5 Annex B.2 allows.

    Parameters
    ----------
    *parts : str
        What the UID names, e.g. a SOP Instance UID and a segment number.

    Returns
    -------
    str
        A valid UID of at most 44 characters.
    """
    name = "\x1f".join(parts)
    return f"2.25.{uuid.uuid5(_AINODE_NAMESPACE, name).int}"


def _check_uid(name: str, value: str) -> None:
    if not isinstance(value, str) or len(value) > _MAX_UID or not re.match(RE_VALID_UID, value):
        raise IdentityError(f"{name} is not a valid UID: {value!r}")


def _check_text(name: str, value: str | None, *, required: bool = True) -> None:
    """Check a Long String (LO) value: at most 64 characters, no control or ``\\``."""
    if value is None:
        if required:
            raise IdentityError(f"{name} is required")
        return
    if required and not value.strip():
        raise IdentityError(f"{name} must not be empty")
    if len(value) > _MAX_LO:
        raise IdentityError(f"{name} longer than {_MAX_LO} characters: {value!r}")
    if _CONTROL.search(value):
        raise IdentityError(f"{name} contains a control character or backslash: {value!r}")


def _check_number(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise IdentityError(f"{name} must be an int, got {value!r}")
    if not 1 <= value <= _MAX_INTEGER_STRING:
        raise IdentityError(f"{name} must lie in 1..{_MAX_INTEGER_STRING}, got {value}")


@dataclass(frozen=True, kw_only=True)
class ResultIdentity:
    """UIDs and numbering of one result instance (PS3.3 C.7.3.1, C.12.1).

    Parameters
    ----------
    series_instance_uid : str
        Series Instance UID of the result series (one series per object type).
    sop_instance_uid : str
        SOP Instance UID of the result instance.
    series_number : int
        Series Number, >= 1.
    series_description : str
        Series Description (LO, at most 64 characters).
    instance_number : int
        Instance Number, >= 1.
    """

    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    series_description: str
    instance_number: int = 1

    def __post_init__(self) -> None:
        _check_uid("series_instance_uid", self.series_instance_uid)
        _check_uid("sop_instance_uid", self.sop_instance_uid)
        if self.series_instance_uid == self.sop_instance_uid:
            raise IdentityError("series_instance_uid and sop_instance_uid must differ")
        _check_number("series_number", self.series_number)
        _check_number("instance_number", self.instance_number)
        _check_text("series_description", self.series_description)


@dataclass(frozen=True, kw_only=True)
class DeviceIdentity:
    """The node as equipment and as SR device observer.

    Recorded in the General Equipment Module (PS3.3 C.7.5.1) and the Enhanced
    General Equipment Module (C.7.5.2) of every result, and as the device
    observer of PS3.16 TID 1004.

    Parameters
    ----------
    software_versions : str
        Software Versions (0018,1020), e.g. the ainode version.
    device_serial_number : str
        Device Serial Number (0018,1000): identifies this node installation.
    manufacturer : str
        Manufacturer (0008,0070).
    manufacturer_model_name : str
        Manufacturer's Model Name (0008,1090).
    institution_name : str | None
        Institution Name (0008,0080) of the site running the node.
    device_uid : str | None
        Device Observer UID; derived from manufacturer, model and serial
        number when ``None`` (see :attr:`observer_uid`).
    device_name : str | None
        Device Observer Name; the model name when ``None``.
    content_qualification : highdicom.ContentQualificationValues
        Content Qualification (0018,9004): ``RESEARCH`` unless the node runs
        as a released product.
    """

    software_versions: str
    device_serial_number: str
    manufacturer: str = "ainode project"
    manufacturer_model_name: str = "ainode"
    institution_name: str | None = None
    device_uid: str | None = None
    device_name: str | None = None
    content_qualification: hd.ContentQualificationValues = hd.ContentQualificationValues.RESEARCH

    def __post_init__(self) -> None:
        _check_text("software_versions", self.software_versions)
        _check_text("device_serial_number", self.device_serial_number)
        _check_text("manufacturer", self.manufacturer)
        _check_text("manufacturer_model_name", self.manufacturer_model_name)
        _check_text("institution_name", self.institution_name, required=False)
        _check_text("device_name", self.device_name, required=False)
        if self.device_uid is not None:
            _check_uid("device_uid", self.device_uid)
        if not isinstance(self.content_qualification, hd.ContentQualificationValues):
            raise IdentityError(
                f"content_qualification must be a ContentQualificationValues, "
                f"got {self.content_qualification!r}"
            )

    @property
    def observer_uid(self) -> str:
        """str: Device Observer UID (TID 1004), given or derived."""
        if self.device_uid is not None:
            return self.device_uid
        return derived_uid(
            "device", self.manufacturer, self.manufacturer_model_name, self.device_serial_number
        )

    @property
    def observer_name(self) -> str:
        """str: Device Observer Name (TID 1004)."""
        return self.device_name if self.device_name is not None else self.manufacturer_model_name


@dataclass(frozen=True, kw_only=True)
class AlgorithmIdentity:
    """The algorithm that produced the findings.

    Encoded as the Algorithm Identification Macro (PS3.3 Table 10-19) in the
    segment descriptions of a SEG and as PS3.16 TID 4019 "Algorithm
    Identification" in an SR.

    Parameters
    ----------
    name : str
        Algorithm Name, e.g. the pipeline name.
    version : str
        Algorithm Version, e.g. the pipeline or bundle version.
    family : pipelines.findings.Code
        Algorithm Family (CID 7162); DCM 123110 "Artificial Intelligence".
    source : str | None
        Algorithm Source: who made the algorithm (e.g. a MONAI bundle author).
    parameters : Mapping[str, str]
        Parameters the algorithm ran with; keys must not contain ``=`` or
        ``,`` and values must not contain ``,``.
    model_checksum : str | None
        Checksum of the model weights, e.g. ``"sha256:..."``; recorded as the
        parameter ``model_checksum``.
    """

    name: str
    version: str
    family: Code = ARTIFICIAL_INTELLIGENCE
    source: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict, hash=False)
    model_checksum: str | None = None

    def __post_init__(self) -> None:
        _check_text("algorithm name", self.name)
        _check_text("algorithm version", self.version)
        _check_text("algorithm source", self.source, required=False)
        if not isinstance(self.family, Code):
            raise IdentityError(f"algorithm family must be a Code, got {self.family!r}")
        for key, value in self.parameters.items():
            if not key or any(c in key for c in "=,") or "," in value:
                raise IdentityError(f"algorithm parameter cannot be encoded: {key!r}={value!r}")
        if self.model_checksum is not None and (
            not self.model_checksum or "," in self.model_checksum
        ):
            raise IdentityError(f"model checksum cannot be encoded: {self.model_checksum!r}")
        if "model_checksum" in self.parameters:
            raise IdentityError("'model_checksum' is reserved; pass it as model_checksum=")
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))

    def all_parameters(self) -> dict[str, str]:
        """Return the parameters, the model checksum included, in order.

        Returns
        -------
        dict[str, str]
            Name to value; empty when there are none.
        """
        items = dict(self.parameters)
        if self.model_checksum is not None:
            items["model_checksum"] = self.model_checksum
        return items
