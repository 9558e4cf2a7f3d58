"""Orthanc accepts every result object by C-STORE and by STOW-RS and returns it unchanged."""

from __future__ import annotations

import dataclasses
import io
import shutil
import uuid

import httpx
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless
from pynetdicom import AE

from dicom_sr import SegmentationType, ViewerProfile, write_results
from dicom_sr.kos import write_rejection_note
from dicom_sr.seg import write_segmentation
from tests.dicom_sr.test_air_conformance import FORMATS, identity, rich_findings
from tests.peers import Orthanc, storescu, wait_for


def _encoded(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def results(ct_series, build_findings, device, algorithm):
    findings = rich_findings(build_findings(ct_series))
    objects = write_results(
        ct_series,
        findings,
        device=device,
        algorithm=algorithm,
        formats=FORMATS,
        identities={name: identity(900 + i) for i, name in enumerate(FORMATS)},
    )
    # the other viewer profiles' SEGs, and a rejection note withdrawing the first set
    profiles = [
        ViewerProfile(segmentation_type=SegmentationType.FRACTIONAL, omit_empty_frames=False),
        ViewerProfile(transfer_syntax_uid=JPEG2000Lossless),
    ]
    segs = [
        write_segmentation(
            ct_series, findings, identity(950 + i), device, algorithm, profile=profile
        )
        for i, profile in enumerate(profiles)
    ]
    one_segment = dataclasses.replace(
        findings, segments=findings.segments[:1], measurements=(), classifications=()
    )  # one segment: nothing overlaps
    segs.append(
        write_segmentation(
            ct_series,
            one_segment,
            identity(953),
            device,
            algorithm,
            profile=ViewerProfile(segmentation_type=SegmentationType.LABELMAP),
        )
    )
    note = write_rejection_note(
        objects[:2], ct_series[0], identity(960), device, algorithm, reason="test"
    )
    return (*objects, *segs, note)


def _assert_unchanged(pacs: Orthanc, results) -> None:
    for ds in results:
        (orthanc_id,) = pacs.find_instances_by_tag(SOPInstanceUID=str(ds.SOPInstanceUID))
        stored = pydicom.dcmread(io.BytesIO(pacs.get_instance_file(orthanc_id)))
        sent = pydicom.dcmread(io.BytesIO(_encoded(ds)))
        for element in sent:
            assert stored[element.tag].value == element.value, (ds.Modality, element.keyword)


LABEL_MAP_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.7"


def _pynetdicom_store(pacs: Orthanc, ds) -> int:
    """C-STORE one object with pynetdicom (as the node's egress does); return the status."""
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", pacs.dicom_port, ae_title=pacs.aet)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(pydicom.dcmread(io.BytesIO(_encoded(ds)))).Status)
    finally:
        assoc.release()


def test_c_store(tmp_path, results):
    if shutil.which("Orthanc") is None or shutil.which("storescu") is None:
        pytest.skip("Orthanc or dcmtk is not installed")
    paths = []
    # storescu 3.6.7 knows no Label Map SOP class and proposes no JPEG 2000:
    # those go as the node sends them
    newer = [
        ds
        for ds in results
        if ds.SOPClassUID == LABEL_MAP_SEGMENTATION
        or ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    ]
    for index, ds in enumerate(results):
        if ds in newer:
            continue
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(_encoded(ds))
        paths.append(path)
    with Orthanc(always_allow_store=True) as pacs:
        completed = storescu("127.0.0.1", pacs.dicom_port, pacs.aet, paths, check=True)
        assert completed.returncode == 0
        assert newer and all(_pynetdicom_store(pacs, ds) == 0 for ds in newer)
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
