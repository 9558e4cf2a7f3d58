"""The Storage SCP against real senders (dcmtk, pynetdicom) and hostile input."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import peers
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from node.db.models import InstanceStatus
from node.dimse import StoreStatus

# pydicom-data file -> the storescu option that proposes its own (compressed) transfer syntax
COMPRESSED = {
    "693_J2KR.dcm": "-xv",  # CT, JPEG 2000 lossless
    "MR_small_RLE.dcm": "-xr",  # RLE lossless
    "MR_small_jpeg_ls_lossless.dcm": "-xt",  # JPEG-LS lossless
    "JPEG-LL.dcm": "-xs",  # JPEG lossless, first-order prediction
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",  # JPEG baseline
    "emri_small_jpeg_2k_lossless.dcm": "-xv",  # enhanced multi-frame MR, JPEG 2000
}
PLAIN = {"CT_small.dcm": None, "MR_small.dcm": None, "rtplan.dcm": None}


def _file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} missing"
    return Path(path)


@pytest.fixture
def node(make_node: Callable[..., Any], sqlite_url: str) -> Any:
    return make_node(sqlite_url, http=False)


def test_echoscu(node: Any) -> None:
    result = peers.echoscu("127.0.0.1", node.dicom_port, "AINODE", check=True)
    assert result.returncode == 0


def test_echo_to_wrong_called_ae_is_rejected_and_audited(node: Any) -> None:
    assert peers.echoscu("127.0.0.1", node.dicom_port, "NOTME").returncode != 0
    [event] = peers.wait_for(
        lambda: node.store.events(kind="association_rejected"), what="rejection audited"
    )
    assert "'NOTME'" in (event.detail or "") and event.calling_ae_title == "ECHOSCU"
    assert peers.echoscu("127.0.0.1", node.dicom_port, "AINODE").returncode == 0


@pytest.mark.parametrize(("name", "propose"), sorted((PLAIN | COMPRESSED).items()))
def test_storescu_stores_every_transfer_syntax(node: Any, name: str, propose: str | None) -> None:
    source = _file(name)
    peers.storescu("127.0.0.1", node.dicom_port, "AINODE", [source], propose=propose, check=True)
    [row] = node.store.instances()
    original = dcmread(source)
    assert row.status is InstanceStatus.STORED
    assert row.sop_instance_uid == original.SOPInstanceUID
    assert row.transfer_syntax_uid == original.file_meta.TransferSyntaxUID  # stored as sent
    assert row.calling_ae_title == "STORESCU"
    stored = dcmread(row.path)
    assert stored.SOPInstanceUID == original.SOPInstanceUID
    if "PixelData" in original:  # decodable with the installed plugins, identical pixels
        np.testing.assert_array_equal(stored.pixel_array, original.pixel_array)


def test_duplicate_is_idempotent(node: Any) -> None:
    source = _file("CT_small.dcm")
    for _ in range(2):
        peers.storescu("127.0.0.1", node.dicom_port, "AINODE", [source], check=True)
    rows = node.store.instances()
    assert [r.status for r in rows] == [InstanceStatus.STORED, InstanceStatus.DUPLICATE]
    assert rows[0].path == rows[1].path and Path(rows[0].path).exists()


def _raw_part10(tmp_path: Path, sop_uid: str, body: bytes) -> Path:
    """A file whose meta is valid and whose data set is ``body``, sent as is (chunked)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    path = tmp_path / "raw.dcm"
    path.write_bytes(buffer.getvalue() + body)
    return path


def _send_raw(port: int, path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="AINODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def test_non_dicom_payload_is_refused_and_audited(
    node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    garbage = bytes(range(256)) * 40
    status = _send_raw(node.dicom_port, _raw_part10(tmp_path, generate_uid(), garbage), monkeypatch)
    assert 0xC000 <= status <= 0xCFFF  # Cannot understand
    [row] = node.store.instances()
    assert row.status is InstanceStatus.REJECTED and row.dimse_status == status
    assert row.calling_ae_title == "HOSTILE" and row.error
    assert not list((Path(node.storage_dir) / "spool").rglob("*.dcm"))
    test_echoscu(node)  # still serving


def test_dataset_not_matching_request_is_refused(
    node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = dcmread(_file("CT_small.dcm"))
    body = io.BytesIO()
    ds.save_as(body, enforce_file_format=True)
    dataset_bytes = body.getvalue()[132 + len(_meta_bytes(ds)) :]
    status = _send_raw(
        node.dicom_port, _raw_part10(tmp_path, generate_uid(), dataset_bytes), monkeypatch
    )
    assert status == StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert node.store.instances()[0].status is InstanceStatus.REJECTED


def _meta_bytes(ds: Any) -> bytes:
    buffer = io.BytesIO()
    write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
    return buffer.getvalue()


def test_unknown_sop_class_is_refused_at_negotiation_and_audited(node: Any) -> None:
    private = "1.2.826.0.1.3680043.9.9999.1"
    ae = AE(ae_title="PRIVATE")
    ae.add_requested_context(private, ExplicitVRLittleEndian)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="AINODE")
    assert assoc.is_established
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        rejected = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
    finally:
        assoc.release()
    assert accepted == {CTImageStorage} and rejected == {private}
    events = peers.wait_for(
        lambda: node.store.events(kind="contexts_refused"), what="audit of refused context"
    )
    assert private in (events[0].detail or "") and events[0].calling_ae_title == "PRIVATE"
    test_echoscu(node)


def test_full_disk_answers_out_of_resources(make_node: Callable[..., Any], sqlite_url: str) -> None:
    node = make_node(sqlite_url, http=False, node={"min_free_disk_mb": 1 << 40})
    ds = dcmread(_file("CT_small.dcm"))
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="AINODE")
    try:
        status = int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()
    assert status == StoreStatus.OUT_OF_RESOURCES
    [row] = node.store.instances()
    assert (
        row.status is InstanceStatus.REJECTED and row.dimse_status == StoreStatus.OUT_OF_RESOURCES
    )
    assert "free-space" in (row.error or "") and row.sop_instance_uid == ds.SOPInstanceUID
    assert not list((Path(node.storage_dir) / "spool").rglob("*.dcm"))
    test_echoscu(node)


def test_aborted_association_keeps_what_was_acknowledged(node: Any) -> None:
    ds = dcmread(_file("CT_small.dcm"))
    ae = AE(ae_title="ABORTER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="AINODE")
    uids = []
    for _ in range(2):
        ds.SOPInstanceUID = generate_uid()
        uids.append(ds.SOPInstanceUID)
        assert assoc.send_c_store(ds).Status == 0
    assoc.abort()
    peers.wait_for(lambda: node.store.events(kind="association_aborted"), what="abort audited")
    stored = {r.sop_instance_uid: r for r in node.store.instances()}
    assert set(stored) == set(uids)
    assert all(Path(r.path).exists() for r in stored.values())
    test_echoscu(node)


def test_many_instances_on_one_association(node: Any, tmp_path: Path) -> None:
    ds = dcmread(_file("CT_small.dcm"))
    paths = []
    for i in range(20):
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        paths.append(tmp_path / f"{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    peers.storescu("127.0.0.1", node.dicom_port, "AINODE", paths, check=True)
    assert len(node.store.instances()) == 20
