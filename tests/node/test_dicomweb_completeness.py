"""Evidence-based study completeness.

A PACS that pauses mid-study does not get half a study analysed.

Orthanc holds the whole phantom study but sends only part of it; the node
asks Orthanc (C-FIND, or QIDO-RS for a DICOMweb source) how many instances
the study holds and waits, boundedly, for the rest. The decision is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import peers
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def orthanc() -> Iterator[peers.Orthanc]:
    with peers.Orthanc() as server:
        yield server


def _node(
    make_node: Callable[..., Any], url: str, orthanc: peers.Orthanc, how: str, max_wait: float
) -> Any:
    if how == "qido" and not orthanc.has_dicomweb:
        pytest.skip("Orthanc's DICOMweb plugin is not installed")
    source = (
        {"dimse": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}}
        if how == "c-find"
        else {"dicomweb": {"url": orthanc.dicomweb_url}, "calling_ae_titles": [orthanc.aet]}
    )
    node = make_node(
        url,
        sources={"pacs": source},
        completeness={"max_wait_seconds": max_wait},
        node={"study_stable_seconds": 0.5},
    )
    orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
    return node


def _send(orthanc: peers.Orthanc, ids: list[str]) -> None:
    orthanc.store_to_modality("ainode", ids, synchronous=True)


@pytest.mark.parametrize("how", ["c-find", "qido"])
def test_waits_for_the_rest_of_the_study(
    how: str,
    sqlite_url: str,
    make_node: Callable[..., Any],
    orthanc: peers.Orthanc,
    chest_phantom: Any,
) -> None:
    node = _node(make_node, sqlite_url, orthanc, how, max_wait=120)
    ids = [orthanc.upload(ds) for ds in chest_phantom.datasets]
    study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)
    _send(orthanc, ids[:40])
    [wait] = peers.wait_for(
        lambda: node.store.events(study_uid, kind="completeness_wait"),
        timeout=30,
        what="the node to notice the study is incomplete",
    )
    assert "reports 64 instances" in (wait.detail or "") and "node holds 40" in (wait.detail or "")
    assert (
        node.store.events(study_uid, kind="study_complete") == []
    )  # quiet, but not complete: no analysis
    _send(orthanc, ids[40:])
    [done] = peers.wait_for(
        lambda: node.store.events(study_uid, kind="study_complete"),
        timeout=30,
        what="the study to be complete",
    )
    assert "complete by evidence" in (done.detail or "") and "64 new instances" in (
        done.detail or ""
    )
    # the audit record names the configured source that sent each instance (known by its AE title)
    assert {i.sender for i in node.store.instances(study_uid)} == {"pacs"}


def test_bounded_wait_then_analyse_what_arrived(
    sqlite_url: str, make_node: Callable[..., Any], orthanc: peers.Orthanc, chest_phantom: Any
) -> None:
    node = _node(make_node, sqlite_url, orthanc, "c-find", max_wait=2)
    ids = [orthanc.upload(ds) for ds in chest_phantom.datasets]
    study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)
    _send(orthanc, ids[:10])
    [done] = peers.wait_for(
        lambda: node.store.events(study_uid, kind="study_complete"),
        timeout=30,
        what="the bounded wait to end",
    )
    assert "INCOMPLETE after waiting" in (done.detail or "") and "54 instances missing" in (
        done.detail or ""
    )


def test_unconfigured_sender_uses_the_quiet_period(
    sqlite_url: str, make_node: Callable[..., Any], orthanc: peers.Orthanc, chest_phantom: Any
) -> None:
    node = make_node(sqlite_url, node={"study_stable_seconds": 0.5})
    orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
    ids = [orthanc.upload(ds) for ds in chest_phantom.datasets[:5]]
    _send(orthanc, ids)
    study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)
    [done] = peers.wait_for(
        lambda: node.store.events(study_uid, kind="study_complete"),
        timeout=30,
        what="the study to be complete",
    )
    assert "evidence" not in (done.detail or "")


@pytest.mark.parametrize(("policy", "expected"), [("add", 1), ("rerun", 2)])
def test_late_series_policy(policy: str, expected: int, tmp_path: Any) -> None:
    from pydicom.uid import generate_uid

    from node.config import Route
    from node.db.engine import make_engine, migrate
    from node.db.store import AuditStore, ReceivedInstance
    from node.study.assembler import StudyAssembler
    from node.study.plan import ResultPlanner
    from node.study.planning import JobPlanner

    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(engine)
    store = AuditStore(engine)
    study = generate_uid()

    def series() -> str:
        uid = generate_uid()
        for _ in range(2):
            store.record_instance(
                ReceivedInstance(
                    generate_uid(),
                    "1.2.840.10008.5.1.4.1.1.2",
                    study,
                    uid,
                    "CT",
                    None,
                    None,
                    None,
                    "1.2.840.10008.1.2.1",
                    None,
                    "dimse",
                    1,
                    generate_uid()[-32:],
                    "/x",
                )
            )
        return uid

    route = Route(
        name="ct", match={"Modality": "CT"}, pipelines=("ct-anatomy",), late_series=policy
    )
    planner = JobPlanner([route], ResultPlanner({}), lambda _name: ("1", None))
    assembler = StudyAssembler(store, planner, 1)
    first = series()
    assert len(assembler.assemble(study)) == 1
    late = series()
    jobs = assembler.assemble(study)
    assert len(jobs) == expected
    analysed = sorted(store.get_job(j)[0].series_instance_uid for j in jobs)  # type: ignore[index]
    assert analysed == sorted([late] if policy == "add" else [first, late])
    [first_job] = [j for j in store.list_jobs() if j.id not in jobs]
    replacing = next((j for j in jobs if store.get_job(j)[0].series_instance_uid == first), None)  # type: ignore[index]
    superseded = store.get_job(first_job.id)[0]  # type: ignore[index]
    if policy == "rerun":
        assert "late_series: rerun" in (store.events(study, kind="study_complete")[-1].detail or "")
        # the earlier job of that series is replaced: still queued, so cancelled, and audited
        assert superseded.superseded_by_job_id == replacing
        assert (
            superseded.state.value == "cancelled"
            and f"superseded by job {replacing}" in superseded.error
        )
        assert [e.job_id for e in store.events(study, kind="job_superseded")] == [first_job.id]
    else:
        assert superseded.superseded_by_job_id is None and superseded.state.value == "queued"
        assert store.events(study, kind="job_superseded") == []
    engine.dispose()
