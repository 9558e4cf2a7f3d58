"""The audit store: every state change the stages make, as short transactions.

Stages never build queries themselves; each calls the store of its own stage,
so the state machine (instance -> study -> job -> output -> delivery) lives in
:mod:`node.db` and every change leaves a row behind:

- :class:`~node.db.ingest.IngestStore`: instances received or refused;
- :class:`~node.db.studies.StudyStore`: study assembly and the jobs it queues;
- :class:`~node.db.jobs.JobStore`: the runner's claims and outcomes;
- :class:`~node.db.deliveries.DeliveryStore`: egress;
- :class:`~node.db.queries.QueryStore`: what the API and the CLI read;
- inference requests: :class:`~node.db.actions.RequestActions`.

:class:`AuditStore` is all of them on one engine: the node builds one and
hands each stage the same object, typed as the store that stage needs.
"""

from __future__ import annotations

from node.db.deliveries import DeliveryStore, backoff
from node.db.ingest import IngestStore, ReceivedInstance
from node.db.jobs import JobStore, PlannedJob, WrittenOutput
from node.db.queries import QueryStore
from node.db.studies import StudyStore

__all__ = [
    "AuditStore",
    "PlannedJob",
    "ReceivedInstance",
    "WrittenOutput",
    "backoff",
]


class AuditStore(IngestStore, StudyStore, JobStore, DeliveryStore, QueryStore):
    """Every per-stage store on the process's one engine (already migrated)."""
