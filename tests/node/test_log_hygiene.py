"""No patient data in any log line, whatever a peer sends.

A SOP Instance UID whose length field is enlarged swallows the elements after
it, Patient's Name and ID among them; pydicom's "Invalid value for VR UI"
warning then prints those raw bytes. The file meta header keeps the valid
UID, so a real SCU (pynetdicom sending the file's bytes) sends it. The node's logs (log records and
warnings alike) must not carry them.
"""

from __future__ import annotations

import logging
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from node.logs import redact

NAME, PATIENT_ID = "HYGIENE^PATIENT", "PHI-0123456789"


def _malformed(chest_phantom: Any, path: Path) -> str:
    """A Part 10 file whose SOP Instance UID length swallows the patient's name and ID."""
    ds = chest_phantom.datasets[0].copy()
    ds.PatientName, ds.PatientID = NAME, PATIENT_ID
    ds.save_as(path, enforce_file_format=True)
    data = bytearray(path.read_bytes())
    uid = str(ds.SOPInstanceUID).encode()
    uid += b"\x00" * (len(uid) % 2)
    header = struct.pack("<HH", 0x0008, 0x0018) + b"UI" + struct.pack("<H", len(uid))
    at = data.index(header + uid, 132 + 12)
    # longer by enough to reach past (0010,0020) Patient ID, still inside the file
    end = data.index(PATIENT_ID.encode()) + len(PATIENT_ID) + 2
    data[at + 6 : at + 8] = struct.pack("<H", min(0xFFFF, end - (at + 8)))
    path.write_bytes(bytes(data))
    return str(ds.SOPInstanceUID)


def test_redact_keeps_the_words_and_drops_the_values() -> None:
    line = f"Invalid value for VR UI: b'1.2.3\\x10\\x00\\x10\\x00PN\\x0e\\x00{NAME}'. Please see"
    assert NAME not in redact(line) and "Invalid value for VR UI" in redact(line)
    assert redact("Expected explicit VR, but found implicit VR") == (
        "Expected explicit VR, but found implicit VR"
    )


def test_a_malformed_instance_puts_no_patient_data_in_the_logs(
    make_node: Any,
    sqlite_url: str,
    chest_phantom: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = make_node(sqlite_url)
    path = tmp_path / "malformed.dcm"
    _malformed(chest_phantom, path)
    caplog.set_level(logging.DEBUG)
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(chest_phantom.datasets[0].SOPClassUID, [ExplicitVRLittleEndian])
    # send the file's bytes as they are (pynetdicom re-encodes a dataset it read)
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="AINODE")
        assert assoc.is_established
        try:
            status = assoc.send_c_store(path)  # the file's bytes as they are
        finally:
            assoc.release()
    assert status is not None and "Status" in status  # answered, whatever the verdict
    text = caplog.text + "\n".join(str(w.message) for w in caught)
    assert NAME not in text and PATIENT_ID not in text
    assert NAME.split("^")[0] not in text
