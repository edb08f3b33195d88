"""OpenTelemetry log export: every record the store writes, sent to an OTLP/HTTP receiver by
an exporter process of the server's own.

::

    listener ──append──> JobLogStore ──observe("append")──> LogExport._observe (a set add)
                                                                 │ own thread
                                                                 ▼
          exporter process's stdin  <── "a JOB\\n" per job with new lines (a few bytes)
              │ reads the job's lines from the files, converts, SDK batch processor, HTTP
              ▼                                   (service/_otel_exporter.py)
          its stdout ──> reports thread: counts and positions ──> stats(), /metrics, the log

The server hands over job names, not records: the exporter process reads the store's files
itself, as the summary keeper does, so it sees exactly what was written (masked, numbered,
whichever backend ran the job), the workers capture nothing twice, and the files are the
export's buffer. The conversion and the SDK, 60 to 100 µs of Python a record, run in that
process at a lower priority, never under the server's GIL: nothing on the write path waits
for them, and a receiver that is down or slow costs counted drops, never slower capture.

The process dies with the server (its stdin closes; it also watches its parent's pid) and
is started again if it dies (a backoff of 1 s doubling to 30 s), resuming from the positions
it last reported; what it had queued and not sent is counted as failed.

Needs the ``otel`` extra (opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http), which
only the exporter process imports; importing this module checks that it is installed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any

from jobtrail.logstore import JobLogStore
from jobtrail.service._helper_process import Backoff, HelperProcess
from jobtrail.service.config import OTLP_ENDPOINT_ENV as ENDPOINT_ENV

for _needed in ("opentelemetry.sdk._logs", "opentelemetry.exporter.otlp.proto.http"):
    if importlib.util.find_spec(_needed) is None:  # checked here: `serve` names the extra
        raise ImportError(f"No module named {_needed!r}")

QUEUE_RECORDS = 2048  # the exporter's queue (see _otel_exporter.QUEUE_RECORDS)
GATHER = 0.1  # a pass waits this long after a wake, so a burst is named once
REPORT_EVERY = 10.0  # seconds between log lines saying how many records were left out
JOBS_KEPT = 4096  # jobs whose position is kept for a restarted exporter process
STOP_WAIT = 3.0 + 5.0  # the process's STOP_MS, and its start-up if it just started
RESTART_FIRST, RESTART_MAX = 1.0, 30.0  # seconds before a dead process is started again
LOGS_PATH = "/v1/logs"
EXPORTER_MODULE = "jobtrail.service._otel_exporter"

log = logging.getLogger("jobtrail.otel")


def logs_endpoint(url: str) -> str:
    """The logs URL for ``url`` given as OTEL_EXPORTER_OTLP_ENDPOINT is (the receiver's base,
    ``http://collector:4318``); a URL already ending in /v1/logs is kept."""
    url = url.rstrip("/")
    return url if url.endswith(LOGS_PATH) else url + LOGS_PATH


@dataclass(frozen=True)
class ExportStats:
    """How the export is doing, for /metrics and the server's log."""

    endpoint: str
    exported: int  # handed to the exporter and accepted by the receiver
    queued: int  # waiting for the exporter or being sent (at most ``capacity`` waiting)
    capacity: int
    dropped: int  # not queued: the queue was full while the receiver was slow or down
    failed: int  # the exporter gave up on them (receiver down or refusing, after retries)
    skipped: int  # never read: rotation removed them first (or the store could not write)


@dataclass
class _Counts:
    """One exporter process's report (see _otel_exporter.ProcessExport._report)."""

    emitted: int = 0
    handed: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    skipped: int = 0

    def add(self, other: _Counts) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _exporter_process(root: str, endpoint: str, on_report: Any) -> HelperProcess:
    def on_line(line: bytes) -> None:
        try:
            on_report(json.loads(line))
        except ValueError:
            log.warning("OTLP exporter process: unreadable report %r", line[:200])

    return HelperProcess(EXPORTER_MODULE, [root, endpoint], on_line, log, "OTLP exporter")


class LogExport:
    """Names the jobs with new lines to the exporter process, and keeps its counts."""

    def __init__(self, store: JobLogStore, endpoint: str | None) -> None:
        self._root = os.fspath(store.root)
        self._url = logs_endpoint(endpoint) if endpoint else ""  # "": the environment's
        self.endpoint = self._url or self._exporter_url()
        self._lock = threading.Lock()  # guards what follows; held for a few operations
        self._dirty: set[str] = set()
        self._deleted: list[str] = []
        self._known: OrderedDict[str, int] = OrderedDict()  # jobs named, and the seq read
        self._ended = _Counts()  # the processes that ended, their unsent records as failed
        self._current = _Counts()  # the running process's last report
        self._process: HelperProcess | None = None
        self._backoff = Backoff(RESTART_FIRST, RESTART_MAX)
        self.restarts = 0
        self._reported = (0, 0, 0)
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        store.observe(self._observe)

    def _exporter_url(self) -> str:
        for name in ENDPOINT_ENV:
            if os.environ.get(name):
                value = os.environ[name]
                return value if name == ENDPOINT_ENV[0] else logs_endpoint(value)
        return ""

    @property
    def exporter_pid(self) -> int | None:
        """The exporter process's pid (None while none runs)."""
        process = self._process
        return process.proc.pid if process is not None and process.alive() else None

    def start(self) -> None:
        self._process = _exporter_process(self._root, self._url, self._on_report)
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Name what is left, then let the process send it (STOP_WAIT at most); idempotent."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._report()

    def stats(self) -> ExportStats:
        with self._lock:
            total = _Counts()
            total.add(self._ended)
            total.add(self._current)
            current = self._current
        return ExportStats(
            self.endpoint,
            total.sent,
            max(0, current.emitted - current.sent - current.failed),
            QUEUE_RECORDS,
            total.dropped,
            total.failed,
            total.skipped,
        )

    # -- the store's hook (the listener's thread: must return at once) -----------------
    def _observe(self, job_id: str, what: str) -> None:
        if what == "append" and job_id in self._dirty:  # named, the event set: no lock
            return
        with self._lock:
            if what == "delete":
                self._dirty.discard(job_id)
                self._known.pop(job_id, None)
                self._deleted.append(job_id)
            else:
                self._dirty.add(job_id)
        if not self._wake.is_set():
            self._wake.set()

    # -- the reports thread ------------------------------------------------------------
    def _on_report(self, report: dict[str, Any]) -> None:
        with self._lock:
            self._current = _Counts(*(int(report[f.name]) for f in fields(_Counts)))
            for job_id, seq in report["positions"].items():
                if job_id in self._known:  # not deleted meanwhile
                    self._known[job_id] = seq

    # -- the export's thread -------------------------------------------------------------
    def _run(self) -> None:
        reported_at = time.monotonic()
        while True:
            stopping = self._stopping
            if not stopping and self._wake.wait(REPORT_EVERY / 10) and not self._stopping:
                time.sleep(GATHER)
            self._wake.clear()
            try:
                self._pass()
            except Exception:  # keep naming jobs; the process's state is checked again
                log.exception("OTLP export pass failed")
            if stopping:
                self._close()
                return
            if time.monotonic() - reported_at >= REPORT_EVERY:
                reported_at = time.monotonic()
                self._report()

    def _pass(self) -> None:
        """Name the jobs with new lines to a live process (starting one if it died)."""
        process = self._process
        if process is None or not process.alive():
            process = self._restart(process)
            if process is None:
                return
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            lines = [f"d {job_id}\n" for job_id in self._deleted]
            self._deleted.clear()
            for job_id in sorted(dirty):
                lines.append(f"a {job_id}\n")
                self._known.setdefault(job_id, 0)
                self._known.move_to_end(job_id)
            while len(self._known) > JOBS_KEPT:  # the jobs named longest ago go first
                self._known.popitem(last=False)
        if lines and not process.send(lines):
            with self._lock:  # named again to the next process (all known jobs are)
                self._dirty |= dirty

    def _restart(self, dead: HelperProcess | None) -> HelperProcess | None:
        """A process that died is counted out; a new one starts once its backoff passed."""
        if dead is not None:
            self._backoff.died(dead, log, "OTLP exporter")
            self._fold_current()
            self._process = None
        if self._stopping or not self._backoff.due():
            return None
        process = _exporter_process(self._root, self._url, self._on_report)
        self._process = process
        self.restarts += 1
        with self._lock:  # where the last one got to, and every job it may not have read
            lines = [f"p {job_id} {seq}\n" for job_id, seq in self._known.items() if seq]
            lines += [f"a {job_id}\n" for job_id in self._known]
        process.send(lines)
        return process

    def _fold_current(self) -> None:
        """The last report of a process that ended: what it had not sent failed."""
        with self._lock:
            current = self._current
            current.failed += max(0, current.emitted - current.sent - current.failed)
            self._ended.add(current)
            self._current = _Counts()

    def _close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.close(STOP_WAIT)
            self._fold_current()

    def _report(self) -> None:
        """A log line when records were left out since the last one: the drops are shown."""
        stats = self.stats()
        now = (stats.dropped, stats.failed, stats.skipped)
        if now != self._reported:
            log.warning(
                "OTLP export to %s: %d records dropped (queue of %d full, receiver slow or "
                "down), %d failed to send, %d rotated away unread, %d exported so far",
                stats.endpoint,
                stats.dropped - self._reported[0],
                stats.capacity,
                stats.failed - self._reported[1],
                stats.skipped - self._reported[2],
                stats.exported,
            )
        self._reported = now
