"""Tests of the identity value objects of dicom_sr."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import pytest
from pydicom.uid import generate_uid

from dicom_sr import AlgorithmIdentity, DeviceIdentity, IdentityError, ResultIdentity
from dicom_sr.identity import derived_uid
from pipelines.errors import AinodeError


def _result(**changes: object) -> ResultIdentity:
    values: dict[str, object] = {
        "series_instance_uid": generate_uid(),
        "sop_instance_uid": generate_uid(),
        "series_number": 901,
        "series_description": "ainode segmentation",
    }
    values.update(changes)
    return ResultIdentity(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"series_instance_uid": "1.2.3.abc"},
        {"sop_instance_uid": "1." + "2" * 70},
        {"series_number": 0},
        {"series_number": 2**31},
        {"instance_number": 0},
        {"series_number": True},
        {"series_description": ""},
        {"series_description": "x" * 65},
        {"series_description": "a\\b"},
    ],
)
def test_result_identity_rejects(changes: dict[str, object]) -> None:
    with pytest.raises(IdentityError) as caught:
        _result(**changes)
    assert isinstance(caught.value, AinodeError)


def test_result_identity_needs_distinct_uids() -> None:
    uid = generate_uid()
    with pytest.raises(IdentityError, match="differ"):
        _result(series_instance_uid=uid, sop_instance_uid=uid)


def test_result_identity_is_frozen() -> None:
    identity = _result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.series_number = 2  # type: ignore[misc]


def test_device_observer_uid_is_stable() -> None:
    device = DeviceIdentity(software_versions="0.1.0", device_serial_number="node-1")
    assert (
        device.observer_uid
        == DeviceIdentity(software_versions="0.2.0", device_serial_number="node-1").observer_uid
    )
    assert (
        device.observer_uid
        != DeviceIdentity(software_versions="0.1.0", device_serial_number="node-2").observer_uid
    )
    assert hd.UID(device.observer_uid).is_valid
    assert device.observer_name == "ainode"
    given = DeviceIdentity(software_versions="1", device_serial_number="n", device_uid="1.2.3")
    assert given.observer_uid == "1.2.3"


@pytest.mark.parametrize(
    "changes",
    [
        {"software_versions": ""},
        {"device_serial_number": "x" * 65},
        {"device_uid": "not-a-uid"},
        {"content_qualification": "RESEARCH"},
    ],
)
def test_device_identity_rejects(changes: dict[str, object]) -> None:
    values: dict[str, object] = {"software_versions": "0.1.0", "device_serial_number": "n"}
    values.update(changes)
    with pytest.raises(IdentityError):
        DeviceIdentity(**values)  # type: ignore[arg-type]


def test_algorithm_parameters() -> None:
    parameters = {"b": "2", "a": "1"}
    algorithm = AlgorithmIdentity(
        name="ct-anatomy", version="1", parameters=parameters, model_checksum="sha256:ff"
    )
    parameters["c"] = "3"  # the identity keeps its own read-only copy
    assert algorithm.all_parameters() == {"b": "2", "a": "1", "model_checksum": "sha256:ff"}
    assert algorithm.family.value == "123110"
    with pytest.raises(TypeError):
        algorithm.parameters["d"] = "4"  # type: ignore[index]
    assert hash(algorithm) == hash(dataclasses.replace(algorithm))


@pytest.mark.parametrize(
    "changes",
    [
        {"name": ""},
        {"version": "v" * 65},
        {"parameters": {"a=b": "1"}},
        {"parameters": {"a": "1,2"}},
        {"parameters": {"model_checksum": "x"}},
        {"model_checksum": "a,b"},
    ],
)
def test_algorithm_identity_rejects(changes: dict[str, object]) -> None:
    values: dict[str, object] = {"name": "ct-anatomy", "version": "1"}
    values.update(changes)
    with pytest.raises(IdentityError):
        AlgorithmIdentity(**values)  # type: ignore[arg-type]


def test_derived_uid() -> None:
    assert derived_uid("a", "b") == derived_uid("a", "b")
    assert derived_uid("a", "b") != derived_uid("ab")
    assert hd.UID(derived_uid("x")).is_valid
    assert derived_uid("x").startswith("2.25.")
