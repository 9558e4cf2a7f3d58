"""The audit store's state machine, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

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
        sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.2", study_instance_uid="1.2.3",
        series_instance_uid=series, modality="CT", body_part_examined="CHEST", series_description="s",
        study_description="d", transfer_syntax_uid="1.2.840.10008.1.2.1", calling_ae_title="ORTHANC",
        source="dimse", size_bytes=10, sha256=sha, path=f"/spool/{sop}.dcm",
    )


def _plan(store: AuditStore, series: str, destinations: tuple[str, ...] = ("pacs",)) -> PlannedJob:
    rows = store.pending_series("1.2.3")[series]
    return PlannedJob(
        study_instance_uid="1.2.3", series_instance_uid=series, modality="CT", route_name="ct",
        pipeline_name="ct-anatomy", pipeline_version="1.0.0", model_checksum=None,
        destinations=destinations,
        result_uids={"SEG": {"series_instance_uid": "2.25.1", "sop_instance_uid": "2.25.2"}},
        inputs=tuple((r.id, r.sop_instance_uid or "", r.path or "") for r in rows),
    )


def test_duplicates_are_recorded_but_not_reanalysed(store: AuditStore) -> None:
    assert store.record_instance(_received("1.1")) is InstanceStatus.STORED
    assert store.record_instance(_received("1.1")) is InstanceStatus.DUPLICATE
    assert store.record_instance(_received("1.1", sha="b" * 64)) is InstanceStatus.STORED
    rows = store.instances("1.2.3")
    assert [r.status for r in rows] == [InstanceStatus.STORED, InstanceStatus.DUPLICATE, InstanceStatus.STORED]
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
    return WrittenOutput(kind="SEG", sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4", sop_instance_uid=sop,
                         series_instance_uid="2.25.1", transfer_syntax_uid="1.2.840.10008.1.2.1",
                         path="/results/seg.dcm", size_bytes=100, sha256="c" * 64)


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
        delivery_id, [(outputs[0].id, False, None, "association rejected", now, now)],
        retry_at=now + timedelta(seconds=30), give_up=False)
    assert state is DeliveryState.PENDING
    assert store.due_deliveries(utcnow()) == []
    state = store.record_delivery_attempt(
        delivery_id, [(outputs[0].id, True, 0, None, now, now)], retry_at=None, give_up=False)
    assert state is DeliveryState.SUCCEEDED
    found = store.get_job(job_id)
    assert found is not None
    job, deliveries, attempts = found
    assert job.state is JobState.DELIVERED and job.delivered_at is not None
    assert [a.succeeded for a in attempts] == [False, True]
    assert [e.kind for e in job.events] == ["job_queued", "job_started", "job_succeeded",
                                            "delivery_retry", "delivery_succeeded"]


def test_delivery_gives_up_after_max_attempts(store: AuditStore) -> None:
    job_id = _queued_job(store)
    store.claim_next_job()
    store.finish_job(job_id, [_output()], {}, None)
    [delivery_id] = store.due_deliveries(utcnow())
    now = utcnow()
    assert store.record_delivery_attempt(delivery_id, [(1, False, 0xA700, "C-STORE status 0xA700", now, now)],
                                         retry_at=None, give_up=True) is DeliveryState.FAILED
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
    store.record_rejection(reason="data set cannot be parsed", dimse_status=0xC000, calling_ae_title="X",
                           source="dimse", sop_instance_uid="9.9")
    [row] = store.instances()
    assert row.status is InstanceStatus.REJECTED and row.dimse_status == 0xC000 and row.dispatched


def test_backoff_grows_and_caps() -> None:
    assert [backoff(n, 5, 60).total_seconds() for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]


def test_migrations_match_the_models(database_url: str) -> None:
    """The alembic head builds exactly the schema the models declare (no drift), on both databases."""
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
