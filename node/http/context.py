"""What the HTTP layer needs from the node: one frozen value, wired in :mod:`node.app`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from node.config import ApiSettings
from node.db.actions import JobActions
from node.db.listing import Listings
from node.db.store import AuditStore
from node.ingress.stow import StowIngress
from node.metrics import NodeMetrics


@dataclass(frozen=True)
class ApiContext:
    """What the API needs from the node (wired in :mod:`node.app`)."""

    store: AuditStore
    metrics: NodeMetrics
    health: dict[str, Any]
    api: ApiSettings
    tokens: tuple[str, ...]
    actions: JobActions
    stow: StowIngress
    #: ``token -> source name``: what a PACS presents when it STOWs (``/dicom-web`` only).
    sender_tokens: Mapping[str, str] = field(default_factory=dict)
    destinations: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    known_pipeline: Callable[[str], bool] = lambda _name: True
    wake: Callable[[str], None] = lambda _stage: None

    @property
    def listings(self) -> Listings:
        return Listings(self.store)
