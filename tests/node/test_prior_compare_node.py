"""prior-compare through the node: the prior is found on Orthanc (C-FIND), fetched (C-GET / C-MOVE),
registered onto the current study, and volumes now vs prior are reported.

Orthanc holds studies of one patient: the prior chest CT, the current one (the prior's pixels at
positions moved by a known shift, new UIDs, a later date), and decoys the search must pass over
(a newer abdomen CT, a chest CT dated after the current study).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import peers
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from node.db.models import Job, JobState
from node.demo.phantom import make_chest_phantom
from pipelines.prior_compare import PriorComparePipeline
from pipelines.registration import RegistrationParameters

pytestmark = pytest.mark.slow

SHIFT_MM = (5.0, -3.0, 2.0)
PATIENT_ID = "AINODE-PRIOR-001"
_DONE = (JobState.DELIVERED, JobState.DELIVERY_FAILED, JobState.FAILED)


class FastPriorCompare(PriorComparePipeline):
    """prior-compare with rigid registration only (the worker imports it by ``module:Class``)."""

    def __init__(self) -> None:
        super().__init__(deformable=False, parameters=RegistrationParameters(affine_iterations=0))


FAST = f"{__name__}:FastPriorCompare"


@pytest.fixture
def orthanc() -> Iterator[peers.Orthanc]:
    with peers.Orthanc() as server:
        yield server


def _copy_series(
    datasets: Sequence[Dataset],
    when: dt.datetime,
    shift: Sequence[float] = (0.0, 0.0, 0.0),
    body_part: str | None = None,
) -> list[Dataset]:
    """The series as a new study taken at ``when``: new UIDs, positions moved by ``shift`` mm."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    copies = []
    for ds in datasets:
        new = copy.deepcopy(ds)
        new.StudyInstanceUID, new.SeriesInstanceUID, new.FrameOfReferenceUID = study, series, frame
        new.SOPInstanceUID = new.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        new.ImagePositionPatient = [
            f"{float(v) + d:.6g}" for v, d in zip(ds.ImagePositionPatient, shift, strict=True)
        ]
        new.SliceLocation = f"{float(ds.SliceLocation) + shift[2]:.6g}"
        for keyword in ("Study", "Series", "Content", "Acquisition", "InstanceCreation"):
            setattr(new, f"{keyword}Date", date)
            setattr(new, f"{keyword}Time", time)
        new.AccessionNumber = f"PH{when:%y%m%d}"
        if body_part is not None:
            new.BodyPartExamined = body_part
        copies.append(new)
    return copies


def _upload(orthanc: peers.Orthanc, datasets: Sequence[Dataset]) -> str:
    for ds in datasets:
        orthanc.upload(ds)
    return str(datasets[0].StudyInstanceUID)


def _node(
    make_node: Callable[..., Any], sqlite_url: str, orthanc: peers.Orthanc, retrieve: str
) -> Any:
    dimse = {
        "ae_title": orthanc.aet,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "timeout_seconds": 20,
    }
    node = make_node(
        sqlite_url,
        sources={"pacs": {"dimse": dimse | {"retrieve": retrieve}}},
        destinations={"pacs": {"dimse": dimse, "formats": ["seg", "sr", "reg"]}},
        routes=[
            {"name": "ct", "match": {"Modality": "CT"}, "pipelines": [FAST], "send_to": ["pacs"]}
        ],
    )
    orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
    return node


def _send_and_wait(node: Any, orthanc: peers.Orthanc, study_uid: str) -> Job:
    [study] = orthanc.find("Study", {"StudyInstanceUID": study_uid})
    orthanc.store_to_modality("ainode", [study], synchronous=True)

    def finished() -> Job | None:
        jobs = [j for j in node.store.list_jobs(limit=100) if j.study_instance_uid == study_uid]
        return jobs[0] if jobs and jobs[0].state in _DONE else None

    job: Job = peers.wait_for(
        finished, timeout=180, interval=0.3, what="the prior-compare job to finish"
    )
    return job


def _rows(summary: dict[str, Any]) -> dict[tuple[str, str], float]:
    return {
        (m["segment"], m["concept"]): m["value"] for m in summary["measurements"] if m["segment"]
    }


@pytest.mark.parametrize("retrieve", ["c-get", "c-move"])
def test_prior_is_found_fetched_and_registered(
    retrieve: str, sqlite_url: str, make_node: Callable[..., Any], orthanc: peers.Orthanc
) -> None:
    phantom = make_chest_phantom(
        n_slices=32,
        rows=96,
        columns=96,
        seed=1,
        patient_id=PATIENT_ID,
        study_datetime=dt.datetime(2023, 1, 10, 9, 30),
    )
    prior_uid = _upload(orthanc, phantom.datasets)
    current = _copy_series(phantom.datasets, dt.datetime(2024, 3, 5, 10, 0), SHIFT_MM)
    current_uid = _upload(orthanc, current)
    _upload(
        orthanc, _copy_series(phantom.datasets, dt.datetime(2023, 6, 1, 8, 0), body_part="ABDOMEN")
    )
    _upload(
        orthanc, _copy_series(phantom.datasets, dt.datetime(2024, 9, 1, 8, 0))
    )  # after the current
    node = _node(make_node, sqlite_url, orthanc, retrieve)

    job = _send_and_wait(node, orthanc, current_uid)

    assert job.state is JobState.DELIVERED, job.error
    summary = job.summary or {}
    (registration,) = summary["registrations"]
    assert registration["prior_study_instance_uid"] == prior_uid
    assert registration["prior_series_instance_uid"] == phantom.series_instance_uid
    assert registration["prior_frame_of_reference_uid"] == str(
        phantom.datasets[0].FrameOfReferenceUID
    )
    assert registration["prior_study_date"] == "20230110" and registration["source"] == "pacs"
    matrix = np.array(registration["matrix"])
    assert np.abs(matrix[:3, 3] - SHIFT_MM).max() < 1.0
    assert np.abs(matrix[:3, :3] - np.eye(3)).max() < 0.01
    rows = _rows(summary)
    for label in ("Body", "Lungs", "Bone"):
        assert rows[(label, "Volume of prior")] == pytest.approx(rows[(label, "Volume")], rel=1e-6)
        assert rows[(label, "Change in volume")] == pytest.approx(0.0, abs=1e-6)
    assert rows[("Lungs", "Volume")] == pytest.approx(phantom.true_volumes_ml["lungs"], rel=0.03)

    # the prior was retrieved (its series only), audited, and not analysed as a study of its own
    prior_rows = node.store.instances(prior_uid)
    assert len(prior_rows) == len(phantom.datasets)
    assert {r.series_instance_uid for r in prior_rows} == {phantom.series_instance_uid}
    assert {r.source for r in prior_rows} == ({"prior"} if retrieve == "c-get" else {"dimse"})
    assert all(r.dispatched for r in prior_rows)
    [event] = node.store.events(current_uid, kind="prior_retrieved")
    assert prior_uid in (event.detail or "") and event.job_id == job.id
    assert not [j for j in node.store.list_jobs(limit=100) if j.study_instance_uid != current_uid]
    assert {r.study_instance_uid for r in node.store.instances()} == {current_uid, prior_uid}

    # the SR (volumes now vs prior, prior study reference) went back to the PACS
    [sr_id] = orthanc.find_instances_by_tag(StudyInstanceUID=current_uid, Modality="SR")
    text = str(orthanc.get_instance_dataset(sr_id))
    assert "Volume of prior" in text and "Percent change in volume" in text and prior_uid in text

    # the transform as a Spatial Registration object in the current study (PS3.3 C.20.2)
    reg_ids = peers.wait_for(
        lambda: orthanc.find_instances_by_tag(StudyInstanceUID=current_uid, Modality="REG"),
        timeout=30,
        what="the REG object in Orthanc",
    )
    reg = orthanc.get_instance_dataset(reg_ids[0])
    assert reg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.1"
    matrices = {
        str(item.FrameOfReferenceUID): item.MatrixRegistrationSequence[0]
        .MatrixSequence[0]
        .FrameOfReferenceTransformationMatrix
        for item in reg.RegistrationSequence
    }
    moved = [
        m
        for m in matrices.values()
        if [round(float(v), 3) for v in m] != [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    ]
    assert len(moved) == 1  # the prior's frame of reference carries the transform
    peers.assert_dciodvfy_clean(reg)


def test_no_prior_fails_the_job_with_its_reason(
    sqlite_url: str, make_node: Callable[..., Any], orthanc: peers.Orthanc
) -> None:
    phantom = make_chest_phantom(
        n_slices=16,
        rows=48,
        columns=48,
        patient_id="AINODE-NO-PRIOR",
        study_datetime=dt.datetime(2024, 3, 5, 10, 0),
    )
    current_uid = _upload(orthanc, phantom.datasets)
    later = _copy_series(
        phantom.datasets, dt.datetime(2024, 9, 1, 8, 0)
    )  # a later study is no prior
    _upload(orthanc, later)
    node = _node(make_node, sqlite_url, orthanc, "c-get")

    job = _send_and_wait(node, orthanc, current_uid)

    assert job.state is JobState.FAILED
    assert "no prior study of the same modality and body part found on pacs" in (job.error or "")
    assert not node.store.instances(str(later[0].StudyInstanceUID))
