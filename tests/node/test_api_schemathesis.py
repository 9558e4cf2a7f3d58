"""Property-based tests over the OpenAPI spec (schemathesis): no request makes the server error out,
and every answer matches the documented schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from pydicom.uid import generate_uid
from schemathesis.specs.openapi.checks import positive_data_acceptance
from testing_constants import TEST_API_TOKEN, replan_unaddressed, unaddressed_plan

from node.config import ApiSettings
from node.db.actions import JobActions
from node.db.engine import make_engine, migrate
from node.db.store import AuditStore, PlannedJob, ReceivedInstance
from node.http.api import ApiContext, create_api
from node.ingress.stow import StowIngress
from node.metrics import NodeMetrics
from node.spool import Spool
from node.study.planning import mint_result_uids

AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}


def _app(root: Path) -> Any:
    engine = make_engine(f"sqlite:///{root / 'audit.db'}")
    migrate(engine)
    store = AuditStore(engine)
    study, series = "1.2.3.4", "1.2.3.4.5"  # short UIDs the fuzzer may well hit
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
            "PACS",
            "dimse",
            1,
            "0" * 64,
            "/x",
        )
    )
    rows = store.pending_series(study)[series]
    store.dispatch_study(
        study,
        [r.id for r in rows],
        [
            PlannedJob(
                study,
                series,
                "CT",
                "ct",
                "ct-anatomy",
                "1",
                None,
                ("pacs",),
                mint_result_uids(),
                tuple((r.id, r.sop_instance_uid or "", "/x") for r in rows),
                unaddressed_plan(),
            )
        ],
        [],
    )
    return create_api(
        ApiContext(
            store=store,
            metrics=NodeMetrics(store.counts),
            health={"ae_title": "AINODE", "version": "test"},
            api=ApiSettings(max_upload_mb=1),
            tokens=(TEST_API_TOKEN,),
            actions=JobActions(store, replan_unaddressed),
            stow=StowIngress(Spool(root / "node", 0), store),
            destinations=frozenset({"pacs"}),
            sources=frozenset({"pacs"}),
            known_pipeline=lambda name: name == "ct-anatomy",
        )
    )


@schemathesis.serializer("multipart/related")
def _raw_body(_ctx: Any, value: Any) -> bytes:
    """STOW-RS bodies are sent as generated (the fuzzer does not build multipart messages)."""
    data = getattr(value, "data", value)
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    return (
        bytes(data)
        if isinstance(data, (bytes, bytearray))
        else json.dumps(data, default=str).encode()
    )


_ROOT = Path(__import__("tempfile").mkdtemp(prefix="ainode-schemathesis-"))
schema = schemathesis.openapi.from_asgi("/openapi.json", _app(_ROOT))


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_never_errors_and_matches_its_schema(case: schemathesis.Case) -> None:
    # Excluded, deliberately: positive_data_acceptance (a well-formed request naming an unknown
    # destination or source is answered 422, as it should be).
    case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])
