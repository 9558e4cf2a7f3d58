"""Prometheus metrics for one node (its own registry, no module globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from node.db.ingest import ReceivedInstance
from node.dimse import StoreStatus


class _StateCollector(Collector):
    """Reads job and instance totals from the audit database at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._counts()
        jobs = GaugeMetricFamily(
            "ainode_jobs", "Jobs in the audit database by state", labels=["state"]
        )
        instances = GaugeMetricFamily(
            "ainode_instances", "Instances in the audit database by status", labels=["status"]
        )
        for key, value in sorted(counts.items()):
            kind, _, label = key.partition("_")
            (jobs if kind == "jobs" else instances).add_metric([label], value)
        yield jobs
        yield instances


class NodeMetrics:
    """Counters and histograms the stages update, plus database-backed gauges."""

    def __init__(self, counts: Callable[[], dict[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.instances = Counter(
            "ainode_instances_received",
            "C-STORE/STOW instances answered, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "ainode_received_bytes", "Bytes of instances stored", registry=self.registry
        )
        self.jobs = Counter(
            "ainode_jobs_finished", "Jobs finished, by outcome", ["outcome"], registry=self.registry
        )
        self.job_seconds = Histogram(
            "ainode_job_seconds",
            "Wall time of a job in its worker",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self.deliveries = Counter(
            "ainode_objects_delivered",
            "Result objects sent, by destination and outcome",
            ["destination", "outcome"],
            registry=self.registry,
        )
        if counts is not None:
            self.registry.register(_StateCollector(counts))

    def on_instance(self, received: ReceivedInstance | None, status: StoreStatus) -> None:
        self.instances.labels("stored" if status is StoreStatus.SUCCESS else "refused").inc()
        if received is not None:
            self.bytes.inc(received.size_bytes)

    def on_job(self, job_id: int, succeeded: bool, seconds: float) -> None:
        self.jobs.labels("succeeded" if succeeded else "failed").inc()
        self.job_seconds.observe(seconds)

    def on_delivery(self, destination: str, ok: int, failed: int) -> None:
        if ok:
            self.deliveries.labels(destination, "succeeded").inc(ok)
        if failed:
            self.deliveries.labels(destination, "failed").inc(failed)

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)
