"""End to end with a real PACS: Orthanc -> ainode -> SEG + SR -> Orthanc, audited.

Orthanc (Debian's package) runs on free loopback ports with a temporary
configuration declaring the node as a modality. The phantom CT is stored in
Orthanc, Orthanc is asked to send the study to the node, and the test polls
Orthanc until the SEG and SR appear, then checks their content and the audit
rows of the whole path. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import peers
import pytest
from pydicom.sr.codedict import codes

from node.db.models import DeliveryState, InstanceStatus, JobState

pytestmark = pytest.mark.slow


@pytest.fixture
def orthanc() -> Iterator[peers.Orthanc]:
    with peers.Orthanc() as server:
        yield server


def _node_for(
    make_node: Callable[..., Any], database_url: str, orthanc: peers.Orthanc, **extra: Any
) -> Any:
    node = make_node(
        database_url,
        destinations={
            "pacs": {
                "dimse": {
                    "ae_title": orthanc.aet,
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                    "timeout_seconds": 10,
                }
            }
        },
        routes=[
            {
                "name": "ct",
                "match": {"Modality": "CT"},
                "pipelines": ["ct-anatomy"],
                "send_to": ["pacs"],
            }
        ],
        **extra,
    )
    orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
    return node


def _send_study_via_orthanc(orthanc: peers.Orthanc, datasets: list[Any]) -> str:
    for ds in datasets:
        orthanc.upload(ds)
    study_uid = str(datasets[0].StudyInstanceUID)
    [study] = orthanc.find("Study", {"StudyInstanceUID": study_uid})
    orthanc.store_to_modality("ainode", [study])
    return study_uid


def _results_in_orthanc(
    orthanc: peers.Orthanc, study_uid: str, timeout: float = 180
) -> dict[str, Any]:
    def both() -> dict[str, Any] | None:
        found = {}
        for modality in ("SEG", "SR"):
            ids = orthanc.find_instances_by_tag(StudyInstanceUID=study_uid, Modality=modality)
            if ids:
                found[modality] = orthanc.get_instance_dataset(ids[0])
        return found if len(found) == 2 else None

    return peers.wait_for(both, timeout=timeout, interval=0.2, what="SEG and SR stored in Orthanc")  # type: ignore[no-any-return]


def _volumes_from_sr(sr_dataset: Any) -> dict[str, float]:
    report = hd.sr.MeasurementReport.from_sequence(
        hd.sr.Comprehensive3DSR.from_dataset(sr_dataset).content
    )
    volumes = {}
    for group in report.get_volumetric_roi_measurement_groups():
        for m in group.get_measurements(name=codes.SCT.Volume):
            volumes[group.tracking_identifier] = float(m.value)
    return volumes


def test_orthanc_study_comes_back_with_seg_and_sr(
    database_url: str,
    make_node: Callable[..., Any],
    orthanc: peers.Orthanc,
    chest_phantom: Any,
    tmp_path: Path,
) -> None:
    node = _node_for(make_node, database_url, orthanc)
    study_uid = _send_study_via_orthanc(orthanc, chest_phantom.datasets)
    found = _results_in_orthanc(orthanc, study_uid)
    seg_ds, sr_ds = found["SEG"], found["SR"]

    # -- the SEG: same study, references the source series, coded segments
    source_series = str(chest_phantom.datasets[0].SeriesInstanceUID)
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    assert (
        seg.StudyInstanceUID == study_uid and seg.PatientID == chest_phantom.datasets[0].PatientID
    )
    assert seg.SeriesDescription == "AI ct-anatomy SEG"
    assert seg.SegmentationType == "BINARY"
    labels = {seg.get_segment_description(n).SegmentLabel.lower() for n in seg.segment_numbers}
    assert {"body", "lungs", "bone"} <= {label.split()[0] for label in labels}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source_series
    source_uids = {str(ds.SOPInstanceUID) for ds in chest_phantom.datasets}
    assert {uid for _, _, uid in seg.get_source_image_uids()} <= source_uids
    assert seg.Manufacturer == "ainode project"
    first = seg.get_segment_description(seg.segment_numbers[0])
    assert first.algorithm_identification[0].AlgorithmName == "ct-anatomy"

    # -- the SR: volumes within tolerance of the phantom's truth
    assert sr_ds.StudyInstanceUID == study_uid
    volumes = _volumes_from_sr(sr_ds)
    for key, true_ml in chest_phantom.true_volumes_ml.items():
        measured = next(v for label, v in volumes.items() if key in label.lower())
        assert measured == pytest.approx(true_ml, rel=0.05), key

    # -- conformance of what Orthanc holds
    peers.assert_dciodvfy_clean(seg_ds)
    peers.assert_dciodvfy_clean(sr_ds)

    # -- the audit trail of the whole path
    instances = node.store.instances(study_uid)
    assert len(instances) == len(chest_phantom.datasets)
    assert all(
        i.status is InstanceStatus.STORED and i.calling_ae_title == orthanc.aet for i in instances
    )
    job = peers.wait_for(
        lambda: next((j for j in node.store.list_jobs() if j.state is JobState.DELIVERED), None),
        what="job delivered",
    )
    full = node.store.get_job(job.id)
    assert full is not None
    job, deliveries, attempts = full
    assert job.pipeline_name == "ct-anatomy" and job.pipeline_version
    assert len(job.inputs) == len(chest_phantom.datasets)
    assert sorted(o.kind for o in job.outputs) == ["SEG", "SR"]
    assert {o.sop_instance_uid for o in job.outputs} == {
        seg_ds.SOPInstanceUID,
        sr_ds.SOPInstanceUID,
    }
    assert (
        job.result_uids["SEG"]["sop_instance_uid"] == seg_ds.SOPInstanceUID
    )  # minted before sending
    assert [d.state for d in deliveries] == [DeliveryState.SUCCEEDED]
    assert all(a.succeeded and a.dimse_status == 0 for a in attempts) and len(attempts) == 2
    kinds = [e.kind for e in node.store.events(study_uid)]
    for expected in (
        "study_complete",
        "job_queued",
        "job_started",
        "job_succeeded",
        "delivery_succeeded",
    ):
        assert expected in kinds


def test_destination_down_is_retried_and_recorded(
    make_node: Callable[..., Any], sqlite_url: str, orthanc: peers.Orthanc, chest_phantom: Any
) -> None:
    dead_port = peers.free_port()
    node = make_node(
        sqlite_url,
        destinations={
            "down": {
                "dimse": {
                    "ae_title": "NOBODY",
                    "host": "127.0.0.1",
                    "port": dead_port,
                    "timeout_seconds": 2,
                }
            },
            "pacs": {
                "dimse": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
            },
        },
        routes=[
            {
                "name": "ct",
                "match": {"Modality": "CT"},
                "pipelines": ["ct-anatomy"],
                "send_to": ["down", "pacs"],
            }
        ],
        egress={"max_attempts": 3, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 1},
    )
    orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
    study_uid = _send_study_via_orthanc(orthanc, chest_phantom.datasets)
    _results_in_orthanc(orthanc, study_uid)  # the working destination got its results

    def gave_up() -> Any:
        jobs = node.store.list_jobs()
        return jobs[0] if jobs and jobs[0].state is JobState.DELIVERY_FAILED else None

    job = peers.wait_for(gave_up, timeout=60, what="the dead destination to be given up")
    full = node.store.get_job(job.id)
    assert full is not None
    _, deliveries, attempts = full
    by_dest = {d.destination: d for d in deliveries}
    assert by_dest["pacs"].state is DeliveryState.SUCCEEDED
    assert by_dest["down"].state is DeliveryState.FAILED and by_dest["down"].attempts == 3
    dead = [a for a in attempts if a.delivery_id == by_dest["down"].id]
    assert len(dead) == 6 and not any(a.succeeded for a in dead)  # 3 attempts x 2 objects
    assert "association failed" in (dead[0].error or "")
    kinds = [e.kind for e in node.store.events(kind="delivery_retry")]
    assert len(kinds) == 2
    # the node keeps serving
    assert peers.echoscu("127.0.0.1", node.dicom_port, "AINODE").returncode == 0


def test_reformats_reach_the_pacs_as_derived_series(
    make_node: Callable[..., Any], sqlite_url: str, orthanc: peers.Orthanc, chest_phantom: Any
) -> None:
    from node.demo.scu import send_datasets

    node = make_node(
        sqlite_url,
        destinations={
            "pacs": {
                "dimse": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port},
                "formats": ["seg", "sr", "derived"],
            }
        },
        routes=[
            {
                "name": "mpr",
                "match": {"Modality": "CT"},
                "pipelines": ["reformat"],
                "send_to": ["pacs"],
            }
        ],
    )
    orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
    send_datasets(chest_phantom.datasets, "127.0.0.1", node.dicom_port, "AINODE", "TESTSCU")
    job = peers.wait_for(
        lambda: next((j for j in node.store.list_jobs() if j.state is JobState.DELIVERED), None),
        timeout=180,
        what="reformat job delivered",
    )
    found = node.store.get_job(job.id)
    assert found is not None
    kinds = {o.kind for o in found[0].outputs}
    assert kinds == {"DERIVED"}  # reformat finds no segments: derived series only
    study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)
    series = orthanc.find("Series", {"StudyInstanceUID": study_uid}, expand=True)
    derived = [
        s
        for s in series
        if s["MainDicomTags"].get("SeriesDescription", "").startswith("AI reformat")
        or "reformat" in s["MainDicomTags"].get("SeriesDescription", "").lower()
    ]
    assert len(derived) >= 2, [s["MainDicomTags"].get("SeriesDescription") for s in series]
    some = orthanc.get_instance_dataset(derived[0]["Instances"][0])
    assert some.Modality == "CT" and some.ImageType[2] in ("REFORMATTED", "MIP")
    assert (
        some.StudyInstanceUID == study_uid
        and some.FrameOfReferenceUID == chest_phantom.datasets[0].FrameOfReferenceUID
    )
