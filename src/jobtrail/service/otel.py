"""OpenTelemetry log export: every record the store writes, sent to an OTLP/HTTP receiver.

::

    listener ──append──> JobLogStore ──observe("append")──> LogExport._observe (a set add)
                                                                 │ own thread, never the
                                                                 ▼ listener's or the loop's
                       store.read_lines(after=exported_to[job]) ──> one OTel LogRecord a line
                                                                 │ skipped and counted when
                                                                 ▼ QUEUE_RECORDS wait already
                      SDK BatchLogRecordProcessor (its thread) ──> OTLPLogExporter (HTTP)

The export reads the store's files as the summary keeper does, so it sees exactly what was
written (masked, numbered, whichever backend ran the job) and the workers capture nothing
twice. Nothing on the write path waits for the network: the listener's hook is a set add,
this module's thread never blocks on the exporter (a record finds room in the queue or is
dropped, counted in ``ExportStats``), and the SDK's own thread does the HTTP. A receiver
that is down, or answers slowly, costs dropped exports, never slower capture.

Needs the ``otel`` extra (opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http).
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource

from jobtrail.logstore import JobLogStore
from jobtrail.records import decode_record
from jobtrail.service.config import OTLP_ENDPOINT_ENV as ENDPOINT_ENV

# Records waiting for the exporter before new ones are dropped: at about 0.5 KB each, 1 MB
# of memory at most, and about a tenth of a second of four jobs logging at full speed.
QUEUE_RECORDS = 2048
BATCH_RECORDS = 512  # the SDK's default batch: one HTTP request each
SCHEDULE_MS = 500  # a batch not yet full goes out after this long (a live view's delay)
# The export's share of one core (its thread's and the exporter's CPU time), past which it
# drops records (counted as throttled) until it is under again: it converts and encodes in
# Python, about 100 us a record, holding the GIL the listener needs. Unbounded, four jobs
# logging at full speed were captured at half the speed (benchmarks/throughput.py --otlp).
# A token bucket: CPU_SHARE seconds of credit a second, at most CPU_BURST saved, so a burst
# (about 2,000 records) and the first export's set-up pass, and a flood is held to the share.
CPU_SHARE = 0.1
CPU_BURST = 0.2
CHECK_EVERY = 64  # records between looks at the CPU used
GATHER = 0.1  # a pass waits this long after a wake, so a burst is read in one run
READ_LINES = 1024  # lines per read of the store (see summary.READ_LINES)
STOP_MS = 3000  # what a stopping server gives the exporter to send what is queued
REPORT_EVERY = 10.0  # seconds between log lines saying how many records were dropped
JOBS_KEPT = 4096  # jobs whose position is kept: a late line of one is then not sent again
SERVICE_NAME = "jobtrail"  # unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one
LOGS_PATH = "/v1/logs"

SEVERITY = {
    "DEBUG": SeverityNumber.DEBUG,
    "INFO": SeverityNumber.INFO,
    "WARNING": SeverityNumber.WARN,
    "ERROR": SeverityNumber.ERROR,
    "CRITICAL": SeverityNumber.FATAL,
}
# A record's own keys; any other top-level key is one of the Ansible fields (host, task...)
_OWN_KEYS = frozenset(
    ("seq", "timestamp", "level", "logger", "message", "thread", "exc_text", "fields")
)

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
    dropped: int  # not queued: ``capacity`` records were already waiting
    throttled: int  # not converted: the export had used its CPU_SHARE of the time
    failed: int  # the exporter gave up on them (receiver down or refusing, after retries)
    skipped: int  # never read: rotation removed them first (or the store could not write)


class _CountingExporter(LogRecordExporter):
    """The OTLP exporter, counting what it was handed and what it could not send: the SDK's
    queue has no counter of its own (it drops silently, with a deduplicated warning)."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.handed = 0  # taken off the SDK's queue (being sent, sent or failed)
        self.sent = 0
        self.failed = 0
        self.cpu = 0.0  # seconds of CPU its calls took (encoding, HTTP) in the SDK's thread

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        with self._lock:
            self.handed += len(batch)
        result = LogRecordExportResult.FAILURE
        started = time.thread_time()
        try:
            result = self._inner.export(batch)
        finally:
            with self._lock:
                self.cpu += time.thread_time() - started
                if result is LogRecordExportResult.SUCCESS:
                    self.sent += len(batch)
                else:
                    self.failed += len(batch)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _resource() -> Resource:
    """service.name (jobtrail unless the environment names it), its version, the host."""
    try:
        from importlib.metadata import version

        attributes: dict[str, Any] = {"service.version": version("jobtrail")}
    except Exception:  # run from a source tree: no version to name
        attributes = {}
    attributes["host.name"] = socket.gethostname()
    resource = Resource.create(attributes)
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    return resource


def _value(value: Any) -> Any:
    """An attribute value: JSON scalars as they are, objects and lists as their JSON text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return "null" if value is None else value
    return json.dumps(value, separators=(",", ":"), default=str)


class _Clock:
    """Nanoseconds since the epoch of a stored timestamp (``2026-11-25T12:00:00.123456Z``);
    the second's part is cached because records come in bursts."""

    def __init__(self) -> None:
        self._prefix = ""
        self._seconds = 0

    def __call__(self, stamp: str) -> int:
        prefix = stamp[:19]
        if prefix != self._prefix:
            self._seconds = calendar.timegm(time.strptime(prefix, "%Y-%m-%dT%H:%M:%S"))
            self._prefix = prefix
        micros = int(stamp[20:26]) if len(stamp) >= 26 else 0
        return (self._seconds * 1_000_000 + micros) * 1000


class LogExport:
    """Exports every job's records from the store's files, in its own thread."""

    def __init__(self, store: JobLogStore, endpoint: str | None) -> None:
        self._store = store
        url = logs_endpoint(endpoint) if endpoint else None  # None: the environment's
        self._exporter = _CountingExporter(OTLPLogExporter(endpoint=url))
        self.endpoint = url or self._exporter_url()
        self._processor = BatchLogRecordProcessor(
            self._exporter,
            schedule_delay_millis=SCHEDULE_MS,
            max_export_batch_size=BATCH_RECORDS,
            # room for what is being handed over: the SDK's queue never drops, ours counts
            max_queue_size=QUEUE_RECORDS + BATCH_RECORDS,
        )
        self._provider = LoggerProvider(resource=_resource())
        self._provider.add_log_record_processor(self._processor)
        self._logger = self._provider.get_logger("jobtrail")
        self._clock = _Clock()
        self._lock = threading.Lock()  # guards the sets below; held for a set operation
        self._dirty: set[str] = set()
        self._exported_to: OrderedDict[str, int] = OrderedDict()  # seq read up to, per job
        self._emitted = self._dropped = self._skipped = self._throttled = 0
        self._reported = (0, 0, 0, 0)
        self._credit = CPU_BURST  # seconds of CPU the export may still use
        self._credit_at = (time.monotonic(), 0.0)  # (when, CPU used by then) it was counted
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

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Read what is left, then give the exporter STOP_MS to send it; idempotent."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            # the last pass runs in this thread, whose CPU time the bucket has not seen
            self._credit_at = (time.monotonic(), time.thread_time() + self._exporter.cpu)
            self._pass()
        # The public shutdown() waits up to 30 s for a receiver that is down; its batch
        # processor takes the bound (a second call returns at once).
        batches = getattr(self._processor, "_batch_processor", None)
        if batches is not None:
            batches.shutdown(timeout_millis=STOP_MS)
        else:  # pragma: no cover - another SDK version's layout
            self._processor.shutdown()  # type: ignore[no-untyped-call]
        self._report()

    def stats(self) -> ExportStats:
        sent, failed = self._exporter.sent, self._exporter.failed
        return ExportStats(
            self.endpoint,
            sent,
            max(0, self._emitted - sent - failed),
            QUEUE_RECORDS,
            self._dropped,
            self._throttled,
            self._exporter.failed,
            self._skipped,
        )

    # -- the store's hook (the listener's thread: must return at once) -----------------
    def _observe(self, job_id: str, what: str) -> None:
        if what == "append" and job_id in self._dirty:  # queued, the event set: no lock
            return
        with self._lock:
            if what == "delete":
                self._dirty.discard(job_id)
                self._exported_to.pop(job_id, None)
                return
            self._dirty.add(job_id)
        if not self._wake.is_set():
            self._wake.set()

    # -- the export's thread ----------------------------------------------------------------
    def _run(self) -> None:
        reported_at = time.monotonic()
        while not self._stopping:
            if self._wake.wait(REPORT_EVERY) and not self._stopping:
                time.sleep(GATHER)
            self._wake.clear()
            try:
                self._pass()
            except Exception:  # keep exporting the other jobs; this one is read again
                log.exception("OTLP export pass failed")
            if time.monotonic() - reported_at >= REPORT_EVERY:
                reported_at = time.monotonic()
                self._report()

    def _pass(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for job_id in sorted(dirty):
            self._export_job(job_id)
        with self._lock:  # the jobs written to longest ago go first (ended ones, by far)
            while len(self._exported_to) > JOBS_KEPT:
                self._exported_to.popitem(last=False)

    def _export_job(self, job_id: str) -> None:
        """Read the job's lines past its position and hand each over as a LogRecord."""
        job_type = job_id.rsplit("-", 1)[0]
        after = self._exported_to.get(job_id, 0)
        while True:
            page = self._store.read_lines(job_id, after=after, limit=READ_LINES)
            if page.seqs and page.seqs[0] > after + 1:  # rotated away (or never stored)
                self._skipped += page.seqs[0] - after - 1
            over = self._over_budget()
            for n, (seq, line) in enumerate(zip(page.seqs, page.lines, strict=True)):
                after = seq
                if n % CHECK_EVERY == CHECK_EVERY - 1:
                    over = self._over_budget()
                if over:
                    self._throttled += 1  # not parsed: costs next to nothing
                    continue
                if self._emitted - self._exporter.handed >= QUEUE_RECORDS:
                    self._dropped += 1
                    continue
                record = self._record(job_id, job_type, line)
                if record is not None:
                    self._logger.emit(record)
                    self._emitted += 1
            if page.seqs:
                with self._lock:
                    self._exported_to[job_id] = after
                    self._exported_to.move_to_end(job_id)
            if not page.more:
                return

    def _over_budget(self) -> bool:
        """Whether the export spent its CPU credit (see CPU_SHARE)."""
        now, used = time.monotonic(), time.thread_time() + self._exporter.cpu
        then, used_then = self._credit_at
        earned = CPU_SHARE * (now - then)
        self._credit = min(CPU_BURST, self._credit + earned) - (used - used_then)
        self._credit_at = (now, used)
        return self._credit < 0

    def _record(self, job_id: str, job_type: str, line: bytes) -> LogRecord | None:
        """One stored line as an OTel log record: the message as the body, the level as
        severity, and the rest as attributes (the job's own names win over a field's)."""
        found = decode_record(line)
        if found is None:
            return None
        attributes: dict[str, Any] = {}
        fields = found.get("fields")
        if isinstance(fields, dict):
            for key, value in fields.items():
                attributes[str(key)] = _value(value)
        for key, value in found.items():
            if key not in _OWN_KEYS:
                attributes[f"ansible.{key}"] = _value(value)
        if isinstance(found.get("exc_text"), str):
            attributes["exception.stacktrace"] = found["exc_text"]
        attributes["jobtrail.job_id"] = job_id
        attributes["jobtrail.job_type"] = job_type
        attributes["jobtrail.seq"] = found["seq"]
        attributes["code.namespace"] = str(found.get("logger", ""))
        attributes["thread.name"] = str(found.get("thread", ""))
        level = str(found.get("level", "INFO"))
        stamp = found.get("timestamp")
        return LogRecord(
            timestamp=self._clock(stamp) if isinstance(stamp, str) else None,
            observed_timestamp=time.time_ns(),
            severity_text=level,
            severity_number=SEVERITY.get(level, SeverityNumber.INFO),
            body=str(found.get("message", "")),
            attributes=attributes,
        )

    def _report(self) -> None:
        """A log line when records were lost since the last one: the drops are shown."""
        stats = self.stats()
        now = (stats.dropped, stats.throttled, stats.failed, stats.skipped)
        if now != self._reported:
            log.warning(
                "OTLP export to %s: %d records dropped (queue of %d full), %d throttled "
                "(export over %d%% of a core), %d failed to send, %d rotated away unread, "
                "%d exported so far",
                stats.endpoint,
                stats.dropped - self._reported[0],
                stats.capacity,
                stats.throttled - self._reported[1],
                int(CPU_SHARE * 100),
                stats.failed - self._reported[2],
                stats.skipped - self._reported[3],
                stats.exported,
            )
            self._reported = now
