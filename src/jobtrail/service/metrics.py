"""What ``/metrics`` reports of the service, read when Prometheus scrapes, never counted on
the way a job or a record takes.

::

    scrape ─► JobMetrics.snapshot (in a worker thread)
                ├─ execution.health()       pool size, busy workers, pending and running
                ├─ records.list_jobs        the active jobs by status and type
                ├─ records.ended_since      jobs ended since the last scrape, folded into
                │                           counts by status and type, drops, durations
                └─ ingest.batches/records   what the listener (or stream ingest) wrote,
                   ingest.lag_seconds()     and how old the oldest batch still waiting is

The ended jobs are folded from the records, so the counters cost nothing between scrapes
and say the same in both modes. A job's ``completed_at`` is stamped before its record is
written, so a job may appear with an end a little older than one already folded: each scrape
reads again from ``REREAD_SECONDS`` before the newest end seen, and skips the ids folded
then. In distributed mode the records are the shared Redis: every server reports the same
job counts (aggregate them with ``max``, not ``sum``), while the ingest and pool figures are
each server's own.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from jobtrail.models import Health, Job
from jobtrail.service.service import JobService

# seconds: a job runs from well under a second (a check) to hours (a playbook over a fleet)
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
REREAD_SECONDS = 10.0  # an end stamped this long before it was written is still counted
PAGE = 5000  # ended jobs read per query; a scrape reads as many pages as there are
ACTIVE = ("pending", "running")


@dataclass
class Durations:
    """A histogram of one job type's durations: counts per upper bound, not cumulative."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass(frozen=True)
class Snapshot:
    """The service's figures at one scrape."""

    health: Health
    active: Counter[tuple[str, str]]  # (status, type) -> jobs pending or running now
    ended: Counter[tuple[str, str]]  # (status, type) -> jobs ended since the server started
    durations: dict[str, Durations]  # type -> the durations of its ended jobs that ran
    dropped: int  # records the ended jobs lost (in their process or at the store)
    batches: int  # batches and records the ingest appended since the server started
    records: int
    listener_lag: float = 0.0  # seconds: the oldest batch waiting to be written (the ingest's)
    export_queued: int = 0  # OTLP export (service/otel.py), all 0 when it is off: waiting,
    export_lost: int = 0  # dropped + failed + skipped,
    export_sent: int = 0  # and exported


class JobMetrics:
    """The fold of ended jobs between scrapes; ``snapshot`` blocks (SQLite, Redis): call it
    off the event loop. One lock, so two scrapes at once fold each job once."""

    def __init__(self, service: JobService, *, now: float | None = None) -> None:
        self._service = service
        self._lock = threading.Lock()
        self._since = time.time() if now is None else now  # jobs ended before: not counted
        self._recent: dict[str, float] = {}  # ids folded whose end is within the reread window
        self._ended: Counter[tuple[str, str]] = Counter()
        self._durations: dict[str, Durations] = {}
        self._dropped = 0

    def snapshot(self) -> Snapshot:
        service = self._service
        health = service.health()
        active: Counter[tuple[str, str]] = Counter()
        for status in ACTIVE:
            limit = service.config.max_pending if status == "pending" else health.workers
            for job in service.records.list_jobs(status, None, max(limit, 1) + 1000):
                active[status, job.job_type] += 1
        export = service.log_export.stats() if service.log_export is not None else None
        with self._lock:
            self._fold_ended()
            return Snapshot(
                health=health,
                active=active,
                ended=Counter(self._ended),
                durations={
                    kind: Durations(list(d.counts), d.total) for kind, d in self._durations.items()
                },
                dropped=self._dropped,
                batches=service.ingest.batches,
                records=service.ingest.records,
                listener_lag=service.ingest.lag_seconds(),
                export_queued=export.queued if export else 0,
                export_lost=export.dropped + export.failed + export.skipped if export else 0,
                export_sent=export.exported if export else 0,
            )

    def _fold_ended(self) -> None:
        since = self._since
        while True:
            page = self._service.records.ended_since(since, PAGE)
            for job in page:
                self._fold(job)
            last = page[-1].completed_at if page else None
            if len(page) < PAGE or last is None or last <= since:
                break
            since = last
        newest = max(self._recent.values(), default=self._since)
        self._since = max(self._since, newest - REREAD_SECONDS)
        self._recent = {k: t for k, t in self._recent.items() if t >= self._since}

    def _fold(self, job: Job) -> None:
        ended = job.completed_at
        if ended is None or not job.status.terminal or job.job_id in self._recent:
            return
        self._recent[job.job_id] = ended
        self._ended[job.status.value, job.job_type] += 1
        self._dropped += int(job.extra.get("dropped", 0) or 0)
        if job.started_at is not None:
            durations = self._durations.setdefault(job.job_type, Durations())
            durations.add(max(0.0, ended - job.started_at))
