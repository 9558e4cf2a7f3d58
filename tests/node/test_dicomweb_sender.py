"""A DICOMweb-only PACS identifies itself by its sender token.

Its studies are then checked for completeness. A configured source's
``api_tokens`` open STOW-RS only (``POST /dicom-web/studies``; not QIDO-RS or
WADO-RS, never ``/api``); each instance STOWed with one is recorded with that
source as its sender, so the assembler asks that source (QIDO-RS) how many
instances the study holds instead of trusting the quiet period. The end-to-end test has a real
Orthanc STOW to the node with the token in its ``HttpHeaders``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import peers
import pytest
from dicomweb_helpers import http_base, part10, stow
from pydicom.uid import generate_uid

from node.config import CompletenessSettings, Source
from node.db.engine import make_engine, migrate
from node.db.models import InstanceStatus
from node.db.store import AuditStore, ReceivedInstance
from node.retrieve.counts import StudyCounts
from node.study.assembler import CompletenessCheck

#: The token the PACS presents when it STOWs to the node (``sources.pacs.api_tokens``).
SENDER_TOKEN = "sender-token-of-the-pacs-0123"
SENDER = {"Authorization": f"Bearer {SENDER_TOKEN}"}


def _pacs(url: str) -> dict[str, Any]:
    return {"pacs": {"dicomweb": {"url": url}, "api_tokens": [SENDER_TOKEN]}}


@pytest.fixture
def orthanc() -> Iterator[peers.Orthanc]:
    with peers.Orthanc() as server:
        if not server.has_dicomweb:
            pytest.skip("Orthanc's DICOMweb plugin is not installed")
        yield server


@pytest.mark.slow
def test_dicomweb_only_pacs_is_asked_for_the_rest_of_the_study(
    sqlite_url: str, make_node: Callable[..., Any], orthanc: peers.Orthanc, chest_phantom: Any
) -> None:
    node = make_node(
        sqlite_url,
        sources=_pacs(orthanc.dicomweb_url),
        completeness={"max_wait_seconds": 120},
        node={"study_stable_seconds": 0.5},
    )
    orthanc.add_dicomweb_server("ainode", f"{http_base(node)}/dicom-web", headers=SENDER)
    ids = [orthanc.upload(ds) for ds in chest_phantom.datasets]
    assert len(ids) == 64
    study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)

    orthanc.stow_to_server("ainode", ids[:40])
    rows = node.store.instances(study_uid)
    assert len(rows) == 40 and all(r.status is InstanceStatus.STORED for r in rows)
    # identified by its token alone: STOW-RS carries no calling AE title
    assert {(r.source, r.calling_ae_title, r.sender) for r in rows} == {("dicomweb", None, "pacs")}
    [wait] = peers.wait_for(
        lambda: node.store.events(study_uid, kind="completeness_wait"),
        timeout=30,
        what="the node to notice the study is incomplete",
    )
    assert "pacs reports 64 instances" in (wait.detail or "") and "node holds 40" in (
        wait.detail or ""
    )
    assert (
        node.store.events(study_uid, kind="study_complete") == []
    )  # quiet, but not complete: no analysis

    orthanc.stow_to_server("ainode", ids[40:])
    [done] = peers.wait_for(
        lambda: node.store.events(study_uid, kind="study_complete"),
        timeout=30,
        what="the study to be complete",
    )
    assert "complete by evidence" in (done.detail or "") and "64 new instances" in (
        done.detail or ""
    )
    rows = node.store.instances(study_uid)
    assert len(rows) == 64 and {r.sender for r in rows} == {"pacs"}


def test_only_a_sender_token_records_a_sender(
    sqlite_url: str, make_node: Callable[..., Any], chest_phantom: Any
) -> None:
    # the source does not answer (port 9): the study is then judged by the quiet period only
    node = make_node(sqlite_url, sources=_pacs("http://127.0.0.1:9/dicom-web"))
    first, second = chest_phantom.datasets[:2]
    assert stow(http_base(node), [part10(first)]).status_code == 200  # the API token: no sender
    assert stow(http_base(node), [part10(second)], headers=SENDER).status_code == 200
    rows = {r.sop_instance_uid: r for r in node.store.instances(str(first.StudyInstanceUID))}
    assert rows[str(first.SOPInstanceUID)].sender is None
    assert rows[str(second.SOPInstanceUID)].sender == "pacs"
    # a refused instance names its sender too
    other = copy.deepcopy(chest_phantom.datasets[2])
    other.StudyInstanceUID = generate_uid()
    refused = stow(
        http_base(node), [part10(other)], study_uid=str(first.StudyInstanceUID), headers=SENDER
    )
    assert refused.status_code == 409
    [rejected] = [r for r in node.store.instances() if r.status is InstanceStatus.REJECTED]
    assert rejected.sender == "pacs" and rejected.sop_instance_uid == str(other.SOPInstanceUID)
    # the sender token opens /dicom-web only
    assert stow(http_base(node), [part10(first)], headers=SENDER).status_code == 200
    assert httpx.get(f"{http_base(node)}/api/jobs", headers=SENDER).status_code == 401


def test_no_sender_when_authentication_is_off(
    sqlite_url: str, make_node: Callable[..., Any], chest_phantom: Any
) -> None:
    node = make_node(
        sqlite_url, sources=_pacs("http://127.0.0.1:9/dicom-web"), api={"auth_disabled": True}
    )
    ds = chest_phantom.datasets[0]
    assert stow(http_base(node), [part10(ds)], headers=SENDER).status_code == 200
    [row] = node.store.instances(str(ds.StudyInstanceUID))
    assert row.status is InstanceStatus.STORED and row.sender is None


def test_recorded_sender_comes_before_the_calling_ae_title(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(engine)
    store = AuditStore(engine)
    study, series = generate_uid(), generate_uid()
    for sender, calling in ((None, "OTHER"), ("pacs", None)):
        store.record_instance(
            ReceivedInstance(
                generate_uid(),
                "1.2.840.10008.5.1.4.1.1.2",
                study,
                series,
                "CT",
                None,
                None,
                None,
                "1.2.840.10008.1.2.1",
                calling,
                "dimse" if calling else "dicomweb",
                1,
                generate_uid()[-32:],
                "/x",
                sender=sender,
            )
        )
    pacs = Source(dicomweb={"url": "http://pacs.example/dicom-web"})
    other = Source(dimse={"ae_title": "OTHER", "host": "127.0.0.1", "port": 104})
    asked: list[Source] = []

    def count(source: Source, _study: str) -> StudyCounts:
        asked.append(source)
        return StudyCounts(2, {series: 2})

    check = CompletenessCheck(
        store,
        CompletenessSettings(),
        lambda ae: ("other", other) if ae == "OTHER" else None,
        count,
        sources={"pacs": pacs},
    )
    verdict = check.verdict(study)
    assert asked == [pacs]
    assert (
        verdict.ready
        and verdict.note
        == "complete by evidence: pacs reports 2 instances in 1 series; node holds 2"
    )
    # without the recorded sender's source configured, the calling AE title decides, as before
    fallback = CompletenessCheck(
        store, CompletenessSettings(), lambda ae: ("other", other) if ae == "OTHER" else None, count
    )
    assert "other reports 2 instances" in (fallback.verdict(study).note or "")
    assert asked == [pacs, other]
    engine.dispose()
