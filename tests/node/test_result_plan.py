"""One plan per job: what it writes, with which identity, and where each object goes.

Unit tests of :class:`ResultPlanner` and the stored plan, then the whole path
against real peers: four destinations with different ``formats`` and
profiles each receive exactly the objects their formats ask for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import peers
import pytest
from pydicom import dcmread

from dicom_sr.kinds import ResultKind
from node.config import Destination
from node.db.models import DeliveryState, JobState
from node.errors import JobError
from node.study.plan import DEFAULT_VARIANT, ResultPlan, ResultPlanner
from node.study.planning import mint_result_uids


def _destination(formats: list[str], **profile: Any) -> Destination:
    return Destination.model_validate(
        {
            "dimse": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104},
            "formats": formats,
            "profile": profile,
        }
    )


FOUR = {
    "viewer": _destination(["seg", "sr"]),
    "old": _destination(["seg", "sr", "sc", "ko"], sc_frames="all"),
    "reports": _destination(["pdf", "derived"]),
    "research": _destination(["sr", "ko", "derived", "reg"], omit_empty_frames=False),
}


def _kinds(plan: ResultPlan, destination: str) -> set[tuple[str, str | None]]:
    return set(plan.sends(destination))


def test_each_destination_is_planned_exactly_its_formats() -> None:
    seed = mint_result_uids()
    plan = ResultPlanner(FOUR).plan("ct-anatomy", list(FOUR), seed)
    assert [v.key for v in plan.variants] == [DEFAULT_VARIANT, "all-frames", "sc-all"]
    assert _kinds(plan, "viewer") == {("SEG", DEFAULT_VARIANT), ("SR", DEFAULT_VARIANT)}
    assert _kinds(plan, "old") == {("SEG", "sc-all"), ("SR", "sc-all"), ("SC", "sc-all")} | {
        ("KO", "sc-all")
    }
    assert _kinds(plan, "reports") == {("PDF", None), ("DERIVED", None)}
    assert _kinds(plan, "research") == {
        ("SR", "all-frames"),
        ("KO", "all-frames"),
        ("DERIVED", None),
        ("REG", None),
    }
    # the research SR references a SEG of its own profile, planned but neither written nor sent
    [ref] = [o for o in plan.profiled("all-frames") if o.kind is ResultKind.SEG]
    assert not ref.write and ref.destinations == ()
    # the default variant carries the minted UIDs; the other variants UIDs derived from them
    [seg] = [o for o in plan.profiled(DEFAULT_VARIANT) if o.kind is ResultKind.SEG]
    assert seg.sop_instance_uid == seed["SEG"]["sop_instance_uid"]
    uids = [o.sop_instance_uid for o in plan.objects]
    assert len(set(uids)) == len(uids)
    # derived series go once, to the two destinations asking for them
    [derived] = [o for o in plan.shared() if o.kind is ResultKind.DERIVED]
    assert derived.destinations == ("reports", "research") and derived.series_number == 9011
    assert plan.kinds == tuple(ResultKind)[:-1]  # everything but a rejection note


def test_plan_is_deterministic_and_survives_storage() -> None:
    seed = mint_result_uids()
    planner = ResultPlanner(FOUR)
    plan = planner.plan("ct-anatomy", list(FOUR), seed, replaces_earlier=True)
    again = planner.plan("ct-anatomy", list(reversed(FOUR)), seed, replaces_earlier=True)
    assert {o.sop_instance_uid for o in plan.objects} == {o.sop_instance_uid for o in again.objects}
    assert ResultPlan.from_json(plan.as_json()) == plan
    notes = plan.rejection_notes()
    assert sorted(n.destinations[0] for n in notes) == sorted(FOUR)
    assert len({n.sop_instance_uid for n in notes}) == 4
    assert len({n.series_instance_uid for n in notes}) == 1  # one series of notes


def test_plan_without_destinations_keeps_results_for_dicomweb() -> None:
    plan = ResultPlanner({}).plan("reformat", ["gone"], mint_result_uids())
    assert plan.destinations == ()
    assert plan.kinds == (ResultKind.SEG, ResultKind.SR, ResultKind.DERIVED, ResultKind.REG)


def test_a_stored_plan_of_an_unknown_version_is_refused() -> None:
    data = ResultPlanner(FOUR).plan("ct-anatomy", ["viewer"], mint_result_uids()).as_json()
    with pytest.raises(JobError, match="re-run the job"):
        ResultPlan.from_json(data | {"version": 99})


def test_destination_formats_are_kinds() -> None:
    with pytest.raises(ValueError, match="reject is not a format"):
        _destination(["seg", "reject"])
    with pytest.raises(ValueError, match="unknown result kind 'png'"):
        _destination(["png"])
    assert _destination(["SEG", "seg", "derived"]).formats == (ResultKind.SEG, ResultKind.DERIVED)


# -- end to end: four destinations, four sets ------------------------------------------------


def _sop_uids(peer: Any, study_uid: str) -> set[str]:
    if isinstance(peer, peers.StoreSCP):
        return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in peer.files()}
    found = peer.find("Instance", {"StudyInstanceUID": study_uid}, expand=True)
    return {str(i["MainDicomTags"]["SOPInstanceUID"]) for i in found}


@pytest.mark.slow
def test_four_destinations_each_receive_exactly_their_formats(
    database_url: str, make_node: Callable[..., Any], chest_phantom: Any, tmp_path: Path
) -> None:
    from node.demo.scu import send_datasets

    with (
        peers.Orthanc() as viewer,
        peers.Orthanc() as research,
        peers.StoreSCP("OLDPACS") as old,
        peers.StoreSCP("REPORTS") as reports,
    ):
        dimse = {"host": "127.0.0.1"}
        destinations = {
            "viewer": {"dimse": dimse | {"ae_title": viewer.aet, "port": viewer.dicom_port}},
            "old": {
                "dimse": dimse | {"ae_title": old.aet, "port": old.port},
                "formats": ["seg", "sr", "sc", "ko"],
                "profile": {"sc_frames": "all"},
            },
            "reports": {
                "dimse": dimse | {"ae_title": reports.aet, "port": reports.port},
                "formats": ["pdf", "derived"],
            },
            "research": {
                "dicomweb": {"url": research.dicomweb_url},
                "formats": ["sr", "ko", "derived"],
                "profile": {"omit_empty_frames": False},
            },
        }
        node = make_node(
            database_url,
            destinations=destinations,
            routes=[
                {
                    "name": "ct",
                    "match": {"Modality": "CT"},
                    "pipelines": ["ct-anatomy", "reformat"],
                    "send_to": list(destinations),
                }
            ],
        )
        viewer.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
        send_datasets(chest_phantom.datasets, "127.0.0.1", node.dicom_port, "AINODE", "CT")
        jobs = peers.wait_for(
            lambda: (
                done
                if len(done := [j for j in node.store.list_jobs() if j.state is JobState.DELIVERED])
                == 2
                else None
            ),
            timeout=300,
            what="both jobs delivered to all four destinations",
        )
        study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)
        outputs = []
        for job in jobs:
            row, deliveries, _ = node.store.get_job(job.id)
            assert {d.destination for d in deliveries if d.state is DeliveryState.SUCCEEDED} == set(
                destinations
            )
            outputs.extend(row.outputs)
        kinds = {o.sop_instance_uid: o.kind for o in outputs}
        got = {
            "viewer": _sop_uids(viewer, study_uid),
            "old": _sop_uids(old, study_uid),
            "reports": _sop_uids(reports, study_uid),
            "research": _sop_uids(research, study_uid),
        }
        # nothing arrived that the node did not write
        for name, uids in got.items():
            assert uids <= set(kinds), name
        received = {name: sorted({kinds[u] for u in uids}) for name, uids in got.items()}
        assert received == {
            "viewer": ["SEG", "SR"],
            "old": ["KO", "SC", "SEG", "SR"],
            "reports": ["DERIVED", "PDF"],
            "research": ["DERIVED", "KO", "SR"],
        }
        # exactly the planned objects: each destination every output of its kinds and profile
        for name in destinations:
            variant = node.settings.destinations[name].variant
            wanted = {k.value for k in node.settings.destinations[name].formats}
            expected = {
                o.sop_instance_uid
                for o in outputs
                if o.kind in wanted and o.variant in (None, variant)
            }
            assert got[name] == expected, name
        # the research SR references its own profile's SEG, which was neither written nor sent
        assert not any(o.kind == "SEG" and o.variant == "all-frames" for o in outputs)
        # the derived series went to both destinations that asked, as one set of objects
        derived = {o.sop_instance_uid for o in outputs if o.kind == "DERIVED"}
        assert derived and derived <= got["reports"] and derived <= got["research"]
