"""Orthanc accepts every result object by C-STORE and by STOW-RS and returns it unchanged."""

from __future__ import annotations

import io
import shutil
import uuid

import httpx
import pydicom
import pytest

from dicom_sr import write_results
from tests.dicom_sr.test_air_conformance import FORMATS, identity, rich_findings
from tests.peers import Orthanc, storescu, wait_for


def _encoded(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def results(ct_series, build_findings, device, algorithm):
    findings = rich_findings(build_findings(ct_series))
    return write_results(
        ct_series,
        findings,
        device=device,
        algorithm=algorithm,
        formats=FORMATS,
        identities={name: identity(900 + i) for i, name in enumerate(FORMATS)},
    )


def _assert_unchanged(pacs: Orthanc, results) -> None:
    for ds in results:
        (orthanc_id,) = pacs.find_instances_by_tag(SOPInstanceUID=str(ds.SOPInstanceUID))
        stored = pydicom.dcmread(io.BytesIO(pacs.get_instance_file(orthanc_id)))
        sent = pydicom.dcmread(io.BytesIO(_encoded(ds)))
        for element in sent:
            assert stored[element.tag].value == element.value, (ds.Modality, element.keyword)


def test_c_store(tmp_path, results):
    if shutil.which("Orthanc") is None or shutil.which("storescu") is None:
        pytest.skip("Orthanc or dcmtk is not installed")
    paths = []
    for index, ds in enumerate(results):
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(_encoded(ds))
        paths.append(path)
    with Orthanc(always_allow_store=True) as pacs:
        completed = storescu("127.0.0.1", pacs.dicom_port, pacs.aet, paths, check=True)
        assert completed.returncode == 0
        wait_for(lambda: len(pacs.instances()) == len(results), timeout=30)
        _assert_unchanged(pacs, results)


def test_stow_rs(results):
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed")
    with Orthanc() as pacs:
        if not pacs.has_dicomweb:
            pytest.skip("Orthanc's DICOMweb plugin is not installed")
        boundary = uuid.uuid4().hex
        body = (
            b"".join(
                b"--"
                + boundary.encode()
                + b"\r\nContent-Type: application/dicom\r\n\r\n"
                + _encoded(ds)
                + b"\r\n"
                for ds in results
            )
            + b"--"
            + boundary.encode()
            + b"--\r\n"
        )
        response = httpx.post(
            f"{pacs.dicomweb_url}/studies",
            content=body,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
            timeout=60,
        )
        assert response.status_code == 200, response.text
        failed = response.json().get("00081198", {}).get("Value", [])
        assert failed == [], failed  # FailedSOPSequence
        _assert_unchanged(pacs, results)
