"""The audit store's state machine, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from testing_constants import unaddressed_plan

from node.db.engine import make_engine, migrate
from node.db.models import DeliveryState, InstanceStatus, JobState, utcnow
from node.db.store import AuditStore, PlannedJob, ReceivedInstance, WrittenOutput, backoff


@pytest.fixture
def store(database_url: str) -> Iterator[AuditStore]:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent
    yield AuditStore(engine)
    engine.dispose()


def _received(sop: str, series: str = "1.2.3.1", sha: str = "a" * 64) -> ReceivedInstance:
    return ReceivedInstance(
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid="1.2.3",
        series_instance_uid=series,
        modality="CT",
        body_part_examined="CHEST",
        series_description="s",
        study_description="d",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae_title="ORTHANC",
        source="dimse",
        size_bytes=10,
        sha256=sha,
        path=f"/spool/{sop}.dcm",
    )


def _plan(store: AuditStore, series: str, destinations: tuple[str, ...] = ("pacs",)) -> PlannedJob:
    rows = store.pending_series("1.2.3")[series]
    return PlannedJob(
        study_instance_uid="1.2.3",
        series_instance_uid=series,
        modality="CT",
        route_name="ct",
        pipeline_name="ct-anatomy",
        pipeline_version="1.0.0",
        model_checksum=None,
        destinations=destinations,
        result_uids={"SEG": {"series_instance_uid": "2.25.1", "sop_instance_uid": "2.25.2"}},
        inputs=tuple((r.id, r.sop_instance_uid or "", r.path or "") for r in rows),
        plan=unaddressed_plan(),
    )


def test_duplicates_are_recorded_but_not_reanalysed(store: AuditStore) -> None:
    assert store.record_instance(_received("1.1")) is InstanceStatus.STORED
    assert store.record_instance(_received("1.1")) is InstanceStatus.DUPLICATE
    assert store.record_instance(_received("1.1", sha="b" * 64)) is InstanceStatus.STORED
    rows = store.instances("1.2.3")
    assert [r.status for r in rows] == [
        InstanceStatus.STORED,
        InstanceStatus.DUPLICATE,
        InstanceStatus.STORED,
    ]
    assert all(r.calling_ae_title == "ORTHANC" and r.size_bytes == 10 for r in rows)
    # the newest copy of each SOP instance is what a job gets
    series = store.pending_series("1.2.3")["1.2.3.1"]
    assert len(series) == 1 and series[0].id == rows[2].id


def test_study_becomes_stable_after_quiet_period(store: AuditStore) -> None:
    store.record_instance(_received("1.1"))
    assert store.stable_studies(utcnow() - timedelta(seconds=60)) == []
    assert store.stable_studies(utcnow()) == ["1.2.3"]


def test_late_instances_start_a_new_job_for_their_series(store: AuditStore) -> None:
    store.record_instance(_received("1.1"))
    store.record_instance(_received("2.1", series="1.2.3.2"))
    plans = [_plan(store, "1.2.3.1")]
    ids = [i.id for rows in store.pending_series("1.2.3").values() for i in rows]
    store.dispatch_study("1.2.3", ids, plans, unrouted=["1.2.3.2"])
    assert store.stable_studies(utcnow()) == []
    assert [e.kind for e in store.events("1.2.3")] == ["job_queued", "study_complete", "no_route"]
    store.record_instance(_received("1.2"))  # a late slice of the first series
    pending = store.pending_series("1.2.3")
    assert list(pending) == ["1.2.3.1"]
    assert sorted(r.sop_instance_uid for r in pending["1.2.3.1"]) == ["1.1", "1.2"]


def _queued_job(store: AuditStore, destinations: tuple[str, ...] = ("pacs",)) -> int:
    store.record_instance(_received("1.1"))
    ids = [i.id for rows in store.pending_series("1.2.3").values() for i in rows]
    return store.dispatch_study("1.2.3", ids, [_plan(store, "1.2.3.1", destinations)], [])[0]


def _output(sop: str = "2.25.2") -> WrittenOutput:
    return WrittenOutput(
        kind="SEG",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
        sop_instance_uid=sop,
        series_instance_uid="2.25.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        path="/results/seg.dcm",
        size_bytes=100,
        sha256="c" * 64,
    )


def test_job_life_cycle_with_retries(store: AuditStore) -> None:
    job_id = _queued_job(store)
    job = store.claim_next_job()
    assert job is not None and job.id == job_id and job.state is JobState.RUNNING
    assert [i.sop_instance_uid for i in job.inputs] == ["1.1"]
    assert store.claim_next_job() is None
    store.finish_job(job_id, [_output()], {"segments": []}, "1.0.0")
    [delivery_id] = store.due_deliveries(utcnow())
    _, outputs = store.load_delivery(delivery_id)
    now = utcnow()
    state = store.record_delivery_attempt(
        delivery_id,
        [(outputs[0].id, False, None, "association rejected", now, now)],
        retry_at=now + timedelta(seconds=30),
        give_up=False,
    )
    assert state is DeliveryState.PENDING
    assert store.due_deliveries(utcnow()) == []
    state = store.record_delivery_attempt(
        delivery_id, [(outputs[0].id, True, 0, None, now, now)], retry_at=None, give_up=False
    )
    assert state is DeliveryState.SUCCEEDED
    found = store.get_job(job_id)
    assert found is not None
    job, deliveries, attempts = found
    assert job.state is JobState.DELIVERED and job.delivered_at is not None
    assert [a.succeeded for a in attempts] == [False, True]
    assert [e.kind for e in job.events] == [
        "job_queued",
        "job_started",
        "job_succeeded",
        "delivery_retry",
        "delivery_succeeded",
    ]


def test_delivery_gives_up_after_max_attempts(store: AuditStore) -> None:
    job_id = _queued_job(store)
    store.claim_next_job()
    store.finish_job(job_id, [_output()], {}, None)
    [delivery_id] = store.due_deliveries(utcnow())
    now = utcnow()
    assert (
        store.record_delivery_attempt(
            delivery_id,
            [(1, False, 0xA700, "C-STORE status 0xA700", now, now)],
            retry_at=None,
            give_up=True,
        )
        is DeliveryState.FAILED
    )
    found = store.get_job(job_id)
    assert found is not None and found[0].state is JobState.DELIVERY_FAILED


def test_running_jobs_are_requeued_after_a_restart(store: AuditStore) -> None:
    job_id = _queued_job(store)
    store.claim_next_job()
    assert store.requeue_interrupted() == [job_id]
    job = store.claim_next_job()
    assert job is not None and job.id == job_id and job.attempts == 2


def test_failed_job_keeps_its_reason(store: AuditStore) -> None:
    job_id = _queued_job(store, destinations=())
    store.claim_next_job()
    store.fail_job(job_id, "input series has no pixel data")
    found = store.get_job(job_id)
    assert found is not None
    assert found[0].state is JobState.FAILED and found[0].error == "input series has no pixel data"
    assert store.counts()["jobs_failed"] == 1


def test_rejections_are_audited(store: AuditStore) -> None:
    store.record_rejection(
        reason="data set cannot be parsed",
        dimse_status=0xC000,
        calling_ae_title="X",
        source="dimse",
        sop_instance_uid="9.9",
    )
    [row] = store.instances()
    assert row.status is InstanceStatus.REJECTED and row.dimse_status == 0xC000 and row.dispatched


def test_backoff_grows_and_caps() -> None:
    assert [backoff(n, 5, 60).total_seconds() for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]


def test_migrations_match_the_models(database_url: str) -> None:
    """The alembic head builds exactly the schema the models declare, on both databases.

    No drift.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from node.db.models import Base

    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


# -- late_series: rerun: superseded jobs and what their replacements withdraw ----------------


def _rerun(store: AuditStore, sop: str) -> int:
    """A late slice arrives; the series' new job replaces the earlier ones (late_series: rerun)."""
    store.record_instance(_received(sop))
    ids = [
        i.id for rows in store.pending_series("1.2.3").values() for i in rows if not i.dispatched
    ]
    plan = dataclasses.replace(
        _plan(store, "1.2.3.1"),
        replaces_earlier=True,
        result_uids={
            "SEG": {"series_instance_uid": f"2.25.{sop}", "sop_instance_uid": f"2.25.9{sop}"}
        },
    )
    return store.dispatch_study("1.2.3", ids, [plan], [])[0]


def _run_and_deliver(
    store: AuditStore,
    job_id: int,
    outputs: list[WrittenOutput],
    summary: dict[str, Any] | None = None,
) -> None:
    job = store.claim_next_job()
    assert job is not None and job.id == job_id
    store.finish_job(job_id, outputs, summary or {}, "1.0.0")
    for delivery_id in store.due_deliveries(utcnow()):
        _, rows = store.load_delivery(delivery_id)
        now = utcnow()
        store.record_delivery_attempt(
            delivery_id,
            [(o.id, True, 0, None, now, now) for o in rows if o.job_id == job_id],
            retry_at=None,
            give_up=False,
        )


def test_a_running_superseded_job_does_not_deliver(store: AuditStore) -> None:
    first = _queued_job(store)
    assert store.claim_next_job() is not None  # running when the rest of the series arrives
    second = _rerun(store, "1.2")
    store.finish_job(first, [_output()], {}, "1.0.0")
    assert store.due_deliveries(utcnow()) == []  # results of a replaced job are not sent
    job, deliveries, _ = store.get_job(first)  # type: ignore[misc]
    assert job.superseded_by_job_id == second and deliveries == []
    assert "not delivered: superseded" in (
        store.events("1.2.3", kind="job_succeeded")[0].detail or ""
    )
    assert store.withdrawals(second) == {}  # nothing was delivered, nothing to withdraw


def test_superseded_while_running_is_not_run_again_after_a_restart(store: AuditStore) -> None:
    first = _queued_job(store)
    store.claim_next_job()
    second = _rerun(store, "1.2")
    assert store.requeue_interrupted() == []
    assert store.get_job(first)[0].state is JobState.CANCELLED  # type: ignore[index]
    assert store.claim_next_job().id == second  # type: ignore[union-attr]


def test_withdrawals_list_what_each_destination_accepted(store: AuditStore) -> None:
    first = _queued_job(store, destinations=("pacs",))
    _run_and_deliver(
        store, first, [_output("2.25.2"), dataclasses.replace(_output("2.25.3"), kind="SR")]
    )
    second = _rerun(store, "1.2")
    [(destination, outputs)] = store.withdrawals(second).items()
    assert destination == "pacs" and sorted(o.sop_instance_uid for o in outputs) == [
        "2.25.2",
        "2.25.3",
    ]


def test_a_chain_of_reruns_withdraws_everything_once(store: AuditStore) -> None:
    a = _queued_job(store)
    _run_and_deliver(store, a, [_output("2.25.2")])
    b = _rerun(store, "1.2")
    c = _rerun(
        store, "1.3"
    )  # b is still queued: cancelled, and c takes over withdrawing a's results
    assert store.get_job(b)[0].state is JobState.CANCELLED  # type: ignore[index]
    assert store.get_job(a)[0].superseded_by_job_id == c  # type: ignore[index]
    assert {d: [o.sop_instance_uid for o in outs] for d, outs in store.withdrawals(c).items()} == {
        "pacs": ["2.25.2"]
    }
    # d replaces c after c delivered its own SEG and its rejection note of a's SEG:
    # d withdraws c's SEG only (a's was withdrawn already; a rejection note is never withdrawn)
    note = dataclasses.replace(_output("2.25.50"), kind="REJECT", variant="to:pacs")
    _run_and_deliver(store, c, [_output("2.25.40"), note], {"withdrawn": {"pacs": ["2.25.2"]}})
    d = _rerun(store, "1.4")
    assert {k: [o.sop_instance_uid for o in v] for k, v in store.withdrawals(d).items()} == {
        "pacs": ["2.25.40"]
    }


def test_an_attempt_finishing_after_its_delivery_was_stopped_keeps_it_stopped(
    store: AuditStore,
) -> None:
    first = _queued_job(store)
    store.claim_next_job()
    store.finish_job(first, [_output()], {}, "1.0.0")
    [delivery_id] = store.due_deliveries(utcnow())
    _, rows = store.load_delivery(delivery_id)  # egress starts sending ...
    _rerun(store, "1.2")  # ... the job is superseded meanwhile: its pending delivery is stopped
    now = utcnow()
    state = store.record_delivery_attempt(
        delivery_id, [(rows[0].id, True, 0, None, now, now)], retry_at=None, give_up=False
    )
    assert state is DeliveryState.FAILED  # not resurrected as succeeded or pending
    _, deliveries, attempts = store.get_job(first)  # type: ignore[misc]
    assert (
        "superseded by job" in (deliveries[0].last_error or "") and attempts[0].succeeded
    )  # what was sent is on record
