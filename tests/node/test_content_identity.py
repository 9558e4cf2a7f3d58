"""Content identity at the door: the same instance, a new copy, or a broken one.

- An instance re-sent with another File Meta header (another route: C-STORE
  then STOW-RS, or through Orthanc) is the same content: a duplicate, not
  analysed again, and the spool keeps the first copy.
- A changed re-send by STOW-RS is kept beside the first copy, never over it.
- A STOW-RS part cut short is refused (0xC000) and stored nowhere.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peers
import pytest
from dicomweb_helpers import http_base, part10, sequence, stow, value
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from node.db.models import InstanceStatus, JobState
from node.demo.scu import send_datasets
from node.part10 import content_digest, truncation

ROUTES = [{"name": "ct", "match": {"Modality": "CT"}, "pipelines": ["ct-anatomy"]}]
FAILURE_REASON, CANNOT_UNDERSTAND = "00081197", 0xC000


def _remeta(ds: Dataset) -> Dataset:
    """The same data set with the File Meta header another implementation would write."""
    other = copy.deepcopy(ds)
    other.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.2.1143.107.104.103.115"
    other.file_meta.ImplementationVersionName = "OTHER_PACS_10"
    other.file_meta.SourceApplicationEntityTitle = "OTHERPACS"
    return other


def test_content_digest_ignores_the_part10_header(chest_phantom: Any) -> None:
    ds = chest_phantom.datasets[0]
    first, second = part10(ds), part10(_remeta(ds))
    assert first != second
    assert content_digest(first) == content_digest(second)
    changed = copy.deepcopy(ds)
    changed.SeriesDescription = "edited"
    assert content_digest(part10(changed)) != content_digest(first)


def test_truncation_finds_a_cut_anywhere(chest_phantom: Any) -> None:
    data = part10(chest_phantom.datasets[0])
    syntax = str(chest_phantom.datasets[0].file_meta.TransferSyntaxUID)
    assert truncation(data, syntax) is None
    cuts = range(400, len(data) - 1, 97)
    missed = [cut for cut in cuts if truncation(data[:cut], syntax) is None]
    # a cut at an element boundary before the Study/Series UIDs leaves a data set that
    # ingress refuses for its missing UIDs instead; every other cut is found here
    assert len(missed) <= 2, missed


@pytest.fixture
def node(make_node: Callable[..., Any], sqlite_url: str) -> Iterator[Any]:
    yield make_node(sqlite_url, routes=ROUTES)


def test_the_same_study_by_another_route_is_not_analysed_again(
    node: Any, chest_phantom: Any
) -> None:
    datasets = chest_phantom.datasets[:16]
    study_uid = str(datasets[0].StudyInstanceUID)
    send_datasets(datasets, "127.0.0.1", node.dicom_port, "AINODE", "MODALITY")
    [job] = peers.wait_for(
        lambda: [j for j in node.store.list_jobs() if j.state is JobState.SUCCEEDED] or None,
        timeout=120,
        what="the first analysis",
    )
    spooled = {r.sop_instance_uid: Path(r.path).read_bytes() for r in node.store.instances()}
    # the PACS forwards the same study by STOW-RS, under its own File Meta header
    answer = stow(http_base(node), [part10(_remeta(ds)) for ds in datasets], study_uid)
    assert answer.status_code == 200, answer.text
    rows = node.store.instances(study_uid)
    assert sorted(r.status for r in rows if r.source == "dicomweb") == [
        InstanceStatus.DUPLICATE
    ] * len(datasets)
    # the spool still holds the first copies, byte for byte
    assert {sop: Path(p).read_bytes() for sop, p in _paths(rows)} == spooled
    node.wake("assembler")
    assert [j.id for j in node.store.list_jobs()] == [job.id]  # no second analysis


def _paths(rows: list[Any]) -> list[tuple[str, str]]:
    return [(r.sop_instance_uid, r.path) for r in rows if r.status is InstanceStatus.STORED]


def test_a_changed_stow_copy_is_kept_beside_the_first(node: Any, chest_phantom: Any) -> None:
    ds = chest_phantom.datasets[0]
    study_uid = str(ds.StudyInstanceUID)
    first = part10(ds)
    assert stow(http_base(node), [first], study_uid).status_code == 200
    changed = copy.deepcopy(ds)
    changed.SeriesDescription = "re-sent with an edit"
    answer = stow(http_base(node), [part10(changed)], study_uid)
    assert answer.status_code == 200, answer.text
    rows = [r for r in node.store.instances(study_uid) if r.status is InstanceStatus.STORED]
    assert len(rows) == 2 and rows[0].path != rows[1].path
    assert Path(rows[0].path).read_bytes() == first  # never overwritten
    kept = dcmread(rows[1].path)
    assert kept.SeriesDescription == "re-sent with an edit"
    assert Path(rows[1].path).name.startswith(f"{ds.SOPInstanceUID}.")


def test_a_truncated_stow_part_is_refused_and_stored_nowhere(node: Any, chest_phantom: Any) -> None:
    whole, cut = chest_phantom.datasets[1], copy.deepcopy(chest_phantom.datasets[2])
    cut.SOPInstanceUID = cut.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    data = part10(cut)
    study_uid = str(whole.StudyInstanceUID)
    answer = stow(http_base(node), [part10(whole), data[: len(data) * 2 // 3]], study_uid)
    assert answer.status_code == 202, answer.text
    [failed] = sequence(answer.json(), "00081198")
    assert value(failed, FAILURE_REASON) == CANNOT_UNDERSTAND
    rows = node.store.instances()
    refused = [r for r in rows if r.status is InstanceStatus.REJECTED]
    assert len(refused) == 1 and "cut short" in (refused[0].error or "")
    assert refused[0].sop_instance_uid == str(cut.SOPInstanceUID)
    assert {r.sop_instance_uid for r in rows if r.status is InstanceStatus.STORED} == {
        str(whole.SOPInstanceUID)
    }
    spool = node.spool.root / "spool"
    assert not list(spool.rglob(f"{cut.SOPInstanceUID}*"))
    assert not list((node.spool.root / "incoming").glob("*"))  # the part file is gone too
