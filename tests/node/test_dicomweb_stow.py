"""STOW-RS ingress.

The same spool, audit and assembler as C-STORE, a proper response dataset,
clear 4xx.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import peers
import pytest
from dicomweb_client import DICOMwebClient
from dicomweb_helpers import AUTH, http_base, multipart, part10, sequence, stow, value
from pydicom.uid import generate_uid

from node.db.models import InstanceStatus

REFERENCED = "00081199"
FAILED = "00081198"
FAILURE_REASON = "00081197"
SOP_INSTANCE = "00081155"


def test_stow_stores_into_spool_and_audit(
    database_url: str, make_node: Callable[..., Any], chest_phantom: Any
) -> None:
    node = make_node(database_url)
    datasets = chest_phantom.datasets[:8]
    response = stow(http_base(node), [part10(ds) for ds in datasets])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    body = response.json()
    referenced = {value(item, SOP_INSTANCE) for item in sequence(body, REFERENCED)}
    assert referenced == {str(ds.SOPInstanceUID) for ds in datasets}
    assert FAILED not in body
    study_uid = str(datasets[0].StudyInstanceUID)
    rows = node.store.instances(study_uid)
    assert len(rows) == 8 and all(
        r.status is InstanceStatus.STORED and r.source == "dicomweb" for r in rows
    )
    assert all(Path(r.path or "").is_file() for r in rows)
    # a re-send is idempotent: stored again as a duplicate, still reported as stored
    again = stow(http_base(node), [part10(datasets[0])])
    assert again.status_code == 200
    assert node.store.instances(study_uid)[-1].status is InstanceStatus.DUPLICATE
    assert not list((node.storage_dir / "incoming").glob("*"))  # no part files left behind


def test_stow_partial_failure_lists_each_failed_instance(
    make_node: Callable[..., Any], sqlite_url: str, chest_phantom: Any
) -> None:
    node = make_node(sqlite_url)
    good = chest_phantom.datasets[0]
    other = copy.deepcopy(chest_phantom.datasets[1])
    other.StudyInstanceUID = generate_uid()
    no_series = copy.deepcopy(chest_phantom.datasets[2])
    del no_series.SeriesInstanceUID
    study_uid = str(good.StudyInstanceUID)
    response = stow(
        http_base(node),
        [part10(good), b"not DICOM at all", part10(other), part10(no_series)],
        study_uid=study_uid,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert [value(i, SOP_INSTANCE) for i in sequence(body, REFERENCED)] == [
        str(good.SOPInstanceUID)
    ]
    reasons = {value(i, FAILURE_REASON) for i in sequence(body, FAILED)}
    assert reasons == {0xC000, 0xC409}
    rejected = [i for i in node.store.instances() if i.status is InstanceStatus.REJECTED]
    assert len(rejected) == 3 and all(r.source == "dicomweb" for r in rejected)
    assert {r.dimse_status for r in rejected} == {0xC000, 0xC409}


def test_stow_all_failed_is_409(make_node: Callable[..., Any], sqlite_url: str) -> None:
    node = make_node(sqlite_url)
    response = stow(http_base(node), [b"garbage", b"\x00" * 200])
    assert response.status_code == 409
    assert len(sequence(response.json(), FAILED)) == 2


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/dicom", b"DICM", 415),
        ('multipart/related; type="application/dicom+json"; boundary=x', b"--x--\r\n", 415),
        ('multipart/related; type="application/dicom"', b"--x--\r\n", 400),
        (
            'multipart/related; type="application/dicom"; boundary=x',
            b"--x\r\nContent-Type: application/dicom\r\n\r\nabc",
            400,
        ),
        (
            'multipart/related; type="application/dicom"; boundary=x',
            b"garbage without boundary",
            400,
        ),
    ],
)
def test_stow_malformed_requests_get_4xx(
    make_node: Callable[..., Any], sqlite_url: str, content_type: str, body: bytes, status: int
) -> None:
    node = make_node(sqlite_url)
    response = httpx.post(
        f"{http_base(node)}/dicom-web/studies",
        content=body,
        headers={"Content-Type": content_type, **AUTH},
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["message"]


def test_stow_oversized_body_is_refused_while_streaming(
    make_node: Callable[..., Any], sqlite_url: str
) -> None:
    node = make_node(sqlite_url, api={"max_upload_mb": 1})
    body, content_type = multipart([b"x" * (3 * 1024 * 1024)])

    def chunks() -> Any:  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    try:
        response = httpx.post(
            f"{http_base(node)}/dicom-web/studies",
            content=chunks(),
            headers={"Content-Type": content_type, **AUTH},
            timeout=30,
        )
    except httpx.TransportError:  # the server may close while the client still sends
        response = None
    if response is not None:
        assert response.status_code == 413
        assert "max_upload_mb" in response.json()["error"]["message"]
    declared = httpx.post(
        f"{http_base(node)}/dicom-web/studies",
        content=body,
        headers={"Content-Type": content_type, **AUTH},
        timeout=30,
    )
    assert declared.status_code == 413
    peers.wait_for(
        lambda: not list((node.storage_dir / "incoming").glob("*")), what="part files removed"
    )
    assert node.store.instances() == []


def test_stow_needs_a_token(
    make_node: Callable[..., Any], sqlite_url: str, chest_phantom: Any
) -> None:
    node = make_node(sqlite_url)
    body, content_type = multipart([part10(chest_phantom.datasets[0])])
    url = f"{http_base(node)}/dicom-web/studies"
    assert httpx.post(url, content=body, headers={"Content-Type": content_type}).status_code == 401
    wrong = httpx.post(
        url,
        content=body,
        headers={"Content-Type": content_type, "Authorization": "Bearer wrong-token-wrong-token"},
    )
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert node.store.instances() == []


def test_dicomweb_client_stores_into_the_node(
    make_node: Callable[..., Any], sqlite_url: str, chest_phantom: Any
) -> None:
    node = make_node(sqlite_url)
    client = DICOMwebClient(f"{http_base(node)}/dicom-web", headers=AUTH)
    datasets = chest_phantom.datasets[:4]
    result = client.store_instances(datasets)
    assert {str(i.ReferencedSOPInstanceUID) for i in result.ReferencedSOPSequence} == {
        str(ds.SOPInstanceUID) for ds in datasets
    }
    assert len(node.store.instances(str(datasets[0].StudyInstanceUID))) == 4
