"""Smoke tests proving the test peers in ``peers`` against the real programs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import peers
import pydicom
import pydicom.data
import pytest


def _testdata(name: str) -> Path:
    """Return the path of a pydicom test file."""
    path = pydicom.data.get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(name)
    return Path(str(path))


CT_SMALL = _testdata("CT_small.dcm")


@pytest.fixture
def ct_small() -> pydicom.Dataset:
    """The pydicom CT test image."""
    return pydicom.dcmread(CT_SMALL)


@pytest.fixture
def storescp() -> Iterator[peers.StoreSCP]:
    """A dcmtk storescp with AE title ``STORESCP``."""
    with peers.StoreSCP("STORESCP") as scp:
        yield scp


@pytest.fixture
def orthanc() -> Iterator[peers.Orthanc]:
    """An Orthanc that accepts C-STORE from the AE title ``STORESCU`` only."""
    with peers.Orthanc(modalities={"storescu": ("STORESCU", peers.LOOPBACK, 1)}) as pacs:
        yield pacs


# -- generic helpers --------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = peers.free_port()
    with socket.socket() as sock:
        sock.bind((peers.LOOPBACK, port))
    assert 0 < port < 65536


def test_wait_for_returns_first_truthy_value() -> None:
    calls = iter([None, 0, "ready"])
    assert peers.wait_for(lambda: next(calls), timeout=1.0, interval=0.001) == "ready"


def test_wait_for_timeout_names_the_condition() -> None:
    def refuses() -> bool:
        raise ConnectionError("nobody home")

    with pytest.raises(TimeoutError, match="the unicorn") as caught:
        peers.wait_for(
            refuses, timeout=0.1, interval=0.01, what="the unicorn", ignore=(ConnectionError,)
        )
    assert isinstance(caught.value.__cause__, ConnectionError)


# -- Orthanc -----------------------------------------------------------------


def test_orthanc_answers_system(orthanc: peers.Orthanc) -> None:
    system = orthanc.system()
    assert system["DicomAet"] == "ORTHANC"
    assert system["DicomPort"] == orthanc.dicom_port
    assert system["HttpPort"] == orthanc.http_port
    assert system["Version"]
    assert orthanc.instances() == []


def test_orthanc_upload_shows_in_instances(
    orthanc: peers.Orthanc, ct_small: pydicom.Dataset
) -> None:
    orthanc_id = orthanc.upload(CT_SMALL)

    assert orthanc.instances() == [orthanc_id]
    assert len(orthanc.studies()) == 1
    assert orthanc.study_instances(ct_small.StudyInstanceUID) == [orthanc_id]
    assert orthanc.find_instances_by_tag(Modality="CT") == [orthanc_id]
    assert orthanc.find_instances_by_tag(Modality="SEG") == []
    stored = orthanc.get_instance_dataset(orthanc_id)
    assert stored.SOPInstanceUID == ct_small.SOPInstanceUID
    assert orthanc.get_instance_file(orthanc_id) == CT_SMALL.read_bytes()


def test_orthanc_upload_accepts_a_dataset(
    orthanc: peers.Orthanc, ct_small: pydicom.Dataset
) -> None:
    orthanc_id = orthanc.upload(ct_small)
    assert orthanc.instance_tags(orthanc_id)["SOPInstanceUID"] == ct_small.SOPInstanceUID


def test_orthanc_dicomweb_answers_qido(orthanc: peers.Orthanc, ct_small: pydicom.Dataset) -> None:
    if not peers.DICOMWEB_PLUGIN.exists():
        pytest.skip("Orthanc DICOMweb plugin is not installed")
    assert orthanc.has_dicomweb
    assert orthanc.qido("studies") == []

    orthanc.upload(CT_SMALL)

    studies = orthanc.qido("studies")
    assert [study["0020000D"]["Value"] for study in studies] == [[ct_small.StudyInstanceUID]]
    found = orthanc.qido("instances", {"SOPInstanceUID": ct_small.SOPInstanceUID})
    assert len(found) == 1


def test_orthanc_failed_start_reports_log_tail() -> None:
    pacs = peers.Orthanc(extra_config={"DicomAet": 42}, startup_timeout=5.0)
    with pytest.raises(peers.PeerError, match="Orthanc log"):
        pacs.start(attempts=1)


# -- dcmtk against Orthanc ---------------------------------------------------


def test_echoscu_to_orthanc(orthanc: peers.Orthanc) -> None:
    result = peers.echoscu(peers.LOOPBACK, orthanc.dicom_port, orthanc.aet, timeout=5)
    assert result.returncode == 0, result.stderr


def test_storescu_to_orthanc(orthanc: peers.Orthanc, ct_small: pydicom.Dataset) -> None:
    result = peers.storescu(peers.LOOPBACK, orthanc.dicom_port, orthanc.aet, [CT_SMALL], timeout=5)

    assert result.returncode == 0, result.stderr
    assert orthanc.study_instances(ct_small.StudyInstanceUID) != []


def test_orthanc_refuses_store_from_unknown_aet(orthanc: peers.Orthanc) -> None:
    result = peers.storescu(
        peers.LOOPBACK,
        orthanc.dicom_port,
        orthanc.aet,
        [CT_SMALL],
        calling_aet="STRANGER",
        timeout=5,
    )

    assert result.returncode != 0
    assert orthanc.instances() == []


# -- Orthanc to storescp -----------------------------------------------------


def test_orthanc_store_to_modality_reaches_storescp(
    storescp: peers.StoreSCP, ct_small: pydicom.Dataset
) -> None:
    modalities = {"scp": (storescp.aet, peers.LOOPBACK, storescp.port)}
    with peers.Orthanc(modalities=modalities) as pacs:
        orthanc_id = pacs.upload(CT_SMALL)
        assert pacs.echo("scp")

        job = pacs.store_to_modality("scp", [orthanc_id])
        pacs.wait_for_job(job["ID"], timeout=10)

    (received,) = storescp.wait_for_count(1, timeout=5)
    assert pydicom.dcmread(received).SOPInstanceUID == ct_small.SOPInstanceUID


def test_orthanc_synchronous_store_and_added_modality(storescp: peers.StoreSCP) -> None:
    with peers.Orthanc() as pacs:
        orthanc_id = pacs.upload(CT_SMALL)
        pacs.add_modality("scp", storescp.aet, peers.LOOPBACK, storescp.port)
        assert "scp" in pacs.modalities()

        summary = pacs.store_to_modality("scp", [orthanc_id], synchronous=True)

    assert summary["InstancesCount"] == 1
    assert summary["FailedInstancesCount"] == 0
    assert len(storescp.files()) == 1


def test_orthanc_echo_to_absent_modality_fails() -> None:
    with peers.Orthanc(modalities={"gone": ("GONE", peers.LOOPBACK, peers.free_port())}) as pacs:
        assert not pacs.echo("gone", timeout=2)


def test_storescu_to_storescp(storescp: peers.StoreSCP) -> None:
    files = [CT_SMALL, _testdata("MR_small.dcm")]
    result = peers.storescu(peers.LOOPBACK, storescp.port, storescp.aet, files, timeout=5)

    assert result.returncode == 0, result.stderr
    received = storescp.wait_for_count(2, timeout=5)
    assert sorted(path.name[:2] for path in received) == ["CT", "MR"]


# -- dciodvfy ------------------------------------------------------------------


def test_dciodvfy_runs_on_ct_small() -> None:
    errors = peers.dciodvfy(CT_SMALL)
    assert isinstance(errors, list)
    assert all(line.startswith("Error") for line in errors)


def test_assert_dciodvfy_clean_accepts_ct_small(ct_small: pydicom.Dataset) -> None:
    peers.assert_dciodvfy_clean(CT_SMALL)
    peers.assert_dciodvfy_clean(ct_small)


def test_assert_dciodvfy_clean_fails_on_broken_dataset(ct_small: pydicom.Dataset) -> None:
    del ct_small.StudyInstanceUID
    del ct_small.ImageType

    with pytest.raises(AssertionError, match="StudyInstanceUID") as caught:
        peers.assert_dciodvfy_clean(ct_small)
    assert "ImageType" in str(caught.value)


def test_assert_dciodvfy_clean_ignores_tolerated_errors(ct_small: pydicom.Dataset) -> None:
    del ct_small.StudyInstanceUID
    assert any("<StudyInstanceUID>" in line for line in peers.dciodvfy(ct_small))

    peers.assert_dciodvfy_clean(ct_small, ignore=["<StudyInstanceUID>"])
