"""QIDO-RS and WADO-RS over the node's results (and, configured, inputs).

dicomweb-client is the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import highdicom as hd
import httpx
import peers
import pytest
from dicomweb_client import DICOMwebClient
from dicomweb_helpers import AUTH, http_base

from node.db.models import JobState

pytestmark = pytest.mark.slow

ROUTES = [{"name": "ct", "match": {"Modality": "CT"}, "pipelines": ["ct-anatomy"]}]


def _analysed(
    make_node: Callable[..., Any], database_url: str, chest_phantom: Any, **api: Any
) -> tuple[Any, DICOMwebClient]:
    node = make_node(database_url, routes=ROUTES, api=api)
    client = DICOMwebClient(f"{http_base(node)}/dicom-web", headers=AUTH)
    client.store_instances(chest_phantom.datasets)
    peers.wait_for(
        lambda: any(j.state is JobState.SUCCEEDED for j in node.store.list_jobs()),
        timeout=180,
        interval=0.2,
        what="the job to succeed",
    )
    return node, client


def test_results_are_searchable_and_retrievable(
    database_url: str, make_node: Callable[..., Any], chest_phantom: Any
) -> None:
    node, client = _analysed(make_node, database_url, chest_phantom)
    study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)

    [study] = client.search_for_studies()
    assert study["0020000D"]["Value"] == [study_uid]
    assert sorted(study["00080061"]["Value"]) == [
        "SEG",
        "SR",
    ]  # results only: inputs are not served
    assert study["00201208"]["Value"] == [2]
    assert study["00100020"]["Value"] == [chest_phantom.datasets[0].PatientID]
    assert client.search_for_studies(search_filters={"PatientID": "nobody"}) == []
    assert len(client.search_for_studies(search_filters={"PatientName": "PHANTOM*"})) == 1

    series = client.search_for_series(study_uid)
    by_modality = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in series}
    assert set(by_modality) == {"SEG", "SR"}
    assert [
        s["0020000E"]["Value"][0]
        for s in client.search_for_series(search_filters={"Modality": "SEG"})
    ] == [by_modality["SEG"]]

    [instance] = client.search_for_instances(study_uid, by_modality["SEG"])
    sop_uid = instance["00080018"]["Value"][0]
    seg = hd.seg.Segmentation.from_dataset(
        client.retrieve_instance(study_uid, by_modality["SEG"], sop_uid)
    )
    assert seg.SOPInstanceUID == sop_uid and seg.StudyInstanceUID == study_uid
    job = next(j for j in node.store.list_jobs() if j.state is JobState.SUCCEEDED)
    assert job.result_uids["SEG"]["sop_instance_uid"] == sop_uid

    metadata = client.retrieve_instance_metadata(study_uid, by_modality["SEG"], sop_uid)
    assert metadata["00080018"]["Value"] == [sop_uid]
    assert metadata["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")
    # dicomweb-client 0.61 sends "Host: 127.0.0.1" without the port, so links built from it lack the
    # port; api.public_url fixes links for such clients and behind proxies. Follow one with httpx.
    url = (
        f"{http_base(node)}/dicom-web/studies/{study_uid}"
        f"/series/{by_modality['SEG']}/instances/{sop_uid}/metadata"
    )
    bulk = httpx.get(url, headers=AUTH).json()[0]["7FE00010"]["BulkDataURI"]
    pixels = httpx.get(bulk, headers=AUTH)
    assert pixels.status_code == 200 and pixels.headers["content-type"].startswith(
        "multipart/related"
    )
    assert seg.PixelData in pixels.content

    everything = client.retrieve_study(study_uid)
    assert sorted(str(ds.Modality) for ds in everything) == ["SEG", "SR"]
    assert len(client.retrieve_series_metadata(study_uid, by_modality["SR"])) == 1


def test_inputs_are_served_when_configured(
    sqlite_url: str, make_node: Callable[..., Any], chest_phantom: Any
) -> None:
    _node, client = _analysed(make_node, sqlite_url, chest_phantom, serve_inputs=True)
    study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)
    [study] = client.search_for_studies()
    assert sorted(study["00080061"]["Value"]) == ["CT", "SEG", "SR"]
    assert study["00201208"]["Value"] == [len(chest_phantom.datasets) + 2]
    ct_series = str(chest_phantom.datasets[0].SeriesInstanceUID)
    instances = client.search_for_instances(
        study_uid, ct_series, search_filters={"limit": 5, "offset": 2}
    )
    assert len(instances) == 5
    first = chest_phantom.datasets[0]
    ds = client.retrieve_instance(study_uid, ct_series, str(first.SOPInstanceUID))
    assert ds.pixel_array.shape == first.pixel_array.shape


def test_unknown_and_bad_queries(sqlite_url: str, make_node: Callable[..., Any]) -> None:
    node = make_node(sqlite_url)
    base = f"{http_base(node)}/dicom-web"
    assert httpx.get(f"{base}/studies", headers=AUTH).status_code == 204
    assert (
        httpx.get(f"{base}/studies/1.2.3/series/4.5.6/instances/7.8.9", headers=AUTH).status_code
        == 404
    )
    bad = httpx.get(f"{base}/studies", params={"NoSuchKeyword": "x"}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    assert httpx.get(f"{base}/studies/not-a-uid", headers=AUTH).status_code == 422
