"""The Prometheus text of one scrape: the service's snapshot and the API's own streams as
metric families (prometheus-client, the ``metrics`` extra; ``routes/metrics.py`` imports this
module only when it is installed).

A scrape builds its families from figures read once (``Scrape``), so nothing here is counted
on the way a record takes and the text is rendered from one consistent read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from jobtrail.service.metrics import DURATION_BUCKETS, JobMetrics, Snapshot


@dataclass(frozen=True)
class Streams:
    """The live log streams of this API server, counted on the event loop."""

    open: int  # hubs: followed running jobs, each read once for all its followers
    followers: int  # connections following them


class ScrapeCollector(Collector):
    """Yields the families of one scrape from figures already read."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.streams = Streams(0, 0)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap is None:
            return
        jobs = GaugeMetricFamily(
            "jobtrail_jobs", "Jobs pending or running now", labels=["status", "type"]
        )
        for (status, kind), n in sorted(snap.active.items()):
            jobs.add_metric([status, kind], n)
        yield jobs
        ended = CounterMetricFamily(
            "jobtrail_jobs_ended",
            "Jobs that ended since this server started, by final status and type",
            labels=["status", "type"],
        )
        for (status, kind), n in sorted(snap.ended.items()):
            ended.add_metric([status, kind], n)
        yield ended
        yield self._durations(snap)
        yield CounterMetricFamily(
            "jobtrail_records_captured",
            "Log records this server's listener (or stream ingest) wrote to the store",
            value=snap.records,
        )
        yield CounterMetricFamily(
            "jobtrail_batches_captured", "Batches of records this server wrote", value=snap.batches
        )
        yield GaugeMetricFamily(
            "jobtrail_listener_lag_seconds",
            "Age of the oldest batch of records waiting to be written (0: none waits)",
            value=snap.listener_lag,
        )
        yield CounterMetricFamily(
            "jobtrail_records_dropped",
            "Records the jobs ended since the server started lost (in the job or at the store)",
            value=snap.dropped,
        )
        health = snap.health
        yield GaugeMetricFamily("jobtrail_workers", "Workers configured", value=health.workers)
        yield GaugeMetricFamily(
            "jobtrail_workers_alive", "Workers alive", value=health.workers_alive
        )
        yield GaugeMetricFamily(
            "jobtrail_workers_busy", "Workers running a job now", value=health.running
        )
        yield GaugeMetricFamily(
            "jobtrail_streams_open",
            "Followed running jobs (one reader each)",
            value=self.streams.open,
        )
        yield GaugeMetricFamily(
            "jobtrail_stream_followers",
            "Connections following a running job's log",
            value=self.streams.followers,
        )
        yield GaugeMetricFamily(
            "jobtrail_export_queue_records",
            "Records waiting for OTLP export (0 without --otlp-endpoint)",
            value=snap.export_queued,
        )
        yield CounterMetricFamily(
            "jobtrail_export_dropped",
            "Records OTLP export left out: queue full, given up, rotated away, unread at stop",
            value=snap.export_lost,
        )
        yield CounterMetricFamily(
            "jobtrail_export_records", "Records OTLP export sent", value=snap.export_sent
        )

    def _durations(self, snap: Snapshot) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "jobtrail_job_duration_seconds",
            "Seconds from start to end of the jobs that ran and ended since the server started",
            labels=["type"],
        )
        bounds = [*(str(b) for b in DURATION_BUCKETS), "+Inf"]
        for kind, durations in sorted(snap.durations.items()):
            running = 0
            buckets = []
            for bound, n in zip(bounds, durations.counts, strict=True):
                running += n
                buckets.append((bound, running))
            family.add_metric([kind], buckets, durations.total)
        return family


class MetricsPage:
    """One per app: the fold of ended jobs, the registry, and this process's own figures."""

    def __init__(self, jobs: JobMetrics) -> None:
        self.jobs = jobs
        self._lock = threading.Lock()  # two scrapes at once render one after the other
        self.collector = ScrapeCollector()
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)  # CPU, memory, open fds (from /proc)

    def render(self, streams: Streams) -> bytes:
        """Read and render one scrape; blocks on the records: call it in a worker thread."""
        with self._lock:
            self.collector.snapshot = self.jobs.snapshot()
            self.collector.streams = streams
            return generate_latest(self.registry)
