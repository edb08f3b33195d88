"""The OTLP exporter process: the SDK's batch processor and OTLP/HTTP exporter, run outside
the server, fed with the names of the jobs whose logs have new lines.

::

    server (otel.LogExport) ── stdin: "a JOB" new lines · "p JOB SEQ" read up to (after a
        restart) · "d JOB" deleted · EOF: stop ──> commands (main thread) ──> dirty set
                                                                                  │
        store.read_lines(JOB, after=position): this process's own fds on the files ▼
            ──> RecordConverter ──> the SDK's queue: room waited for while the receiver
                                    keeps up, else the record is dropped (counted)
                                                                                  │
        BatchLogRecordProcessor (its thread) ──> OTLPLogExporter ──> HTTP        ▼
    server <── stdout: one JSON line of counts and positions, every REPORT_EVERY

Why a process of its own: converting and encoding a record costs 60 to 100 µs of Python, which
in the server held the GIL its listener needs. Here the server's share is a line on a pipe
per job with new lines, and this process runs at a lower priority (NICE): on a busy machine
capture goes first and the export catches up afterwards from the files, which are its buffer
(bounded by rotation: lines removed before they were read are counted as skipped).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import requests  # the OTLP/HTTP exporter's own transport
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)

from jobtrail.logstore import JobLogStore
from jobtrail.service._helper_process import read_commands, report_stream
from jobtrail.service._otel_records import RecordConverter, resource

# Records waiting for the exporter: at about 0.5 KB each, 1 MB of memory. While the receiver
# keeps up, the reader waits for room; while it is slow or down, a record finding no room is
# dropped, so the export stays live instead of replaying an old backlog.
QUEUE_RECORDS = 2048
BATCH_RECORDS = 512  # the SDK's default batch: one HTTP request each
SCHEDULE_MS = 500  # a batch not yet full goes out after this long (a live view's delay)
SLOW_REQUEST = 0.8  # seconds: requests answered later, SLOW_IN_A_ROW of them, or one that
SLOW_IN_A_ROW = 2  # failed, mean a receiver that does not keep up (about 600 records/s)
NICE = 19  # the lowest: below the server and its jobs (nice 10 by default), so a busy
# machine's CPU goes to capture first
GATHER = 0.1  # a pass waits this long after a wake, so a burst is read in one run
READ_LINES = 1024  # lines per read of the store (see summary.READ_LINES)
STOP_MS = 3000  # a stop's time to read what is left (half of it at most) and send it
REPORT_EVERY = 0.2  # seconds between reports to the server (when something changed)
JOBS_KEPT = 4096  # jobs whose position is kept: a late line of one is then not sent again
WAIT_STEP = 0.05  # how often a reader waiting for room looks at the receiver again

log = logging.getLogger("jobtrail.otel")


class Receiver:
    """How the receiver answers: each request timed, so the reader knows whether it keeps up.
    Shared with the exporter's counts under one condition, notified on every change."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self._started: float | None = None  # the request in flight, if any
        self._failing = False  # the last request failed
        self._slow = 0  # requests in a row answered after SLOW_REQUEST

    def session(self) -> Any:
        """A requests session for the exporter whose requests are timed here."""
        session = requests.Session()
        session.request = self._timed(session.request)  # type: ignore[method-assign]
        return session

    def _timed(self, request: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.changed:
                self._started = started = time.monotonic()
            ok = False
            try:
                response = request(*args, **kwargs)
                ok = bool(response.ok)
                return response
            finally:
                with self.changed:
                    slow = time.monotonic() - started > SLOW_REQUEST
                    self._slow = self._slow + 1 if slow else 0
                    self._failing = not ok
                    self._started = None
                    self.changed.notify_all()

        return timed

    def keeping_up(self) -> bool:
        """Call with ``changed`` held. One slow answer is not enough (a busy machine, a
        pause of the receiver's): SLOW_IN_A_ROW of them, the one in flight counted."""
        started = self._started
        slow = self._slow + (started is not None and time.monotonic() - started > SLOW_REQUEST)
        return not self._failing and slow < SLOW_IN_A_ROW


class CountingExporter(LogRecordExporter):
    """The OTLP exporter, counting what it was handed and what it could not send: the SDK's
    queue has no counter of its own (it drops silently, with a deduplicated warning)."""

    def __init__(self, inner: LogRecordExporter, changed: threading.Condition) -> None:
        self._inner = inner
        self._changed = changed
        self.handed = 0  # taken off the SDK's queue (being sent, sent or failed)
        self.sent = 0
        self.failed = 0

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        with self._changed:
            self.handed += len(batch)
            self._changed.notify_all()
        result = LogRecordExportResult.FAILURE
        try:
            result = self._inner.export(batch)
        finally:
            with self._changed:
                if result is LogRecordExportResult.SUCCESS:
                    self.sent += len(batch)
                else:
                    self.failed += len(batch)
                self._changed.notify_all()
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class ProcessExport:
    """Reads the named jobs' new lines and hands them to the SDK, in its own thread."""

    def __init__(self, root: Path, endpoint: str | None, reports: IO[str]) -> None:
        self._store = JobLogStore(root)  # read only: the server's listener is the writer
        self._reports = reports
        self._receiver = Receiver()
        self._changed = self._receiver.changed
        otlp = OTLPLogExporter(endpoint=endpoint, session=self._receiver.session())
        self._exporter = CountingExporter(otlp, self._changed)
        self._processor = BatchLogRecordProcessor(
            self._exporter,
            schedule_delay_millis=SCHEDULE_MS,
            max_export_batch_size=BATCH_RECORDS,
            # room for what is being handed over: the SDK's queue never drops, ours counts
            max_queue_size=QUEUE_RECORDS + BATCH_RECORDS,
        )
        provider = LoggerProvider(resource=resource())
        provider.add_log_record_processor(self._processor)
        self._logger = provider.get_logger("jobtrail")
        self._convert = RecordConverter()
        self._lock = threading.Lock()  # guards the dirty set and the positions
        self._dirty: set[str] = set()
        self._positions: OrderedDict[str, int] = OrderedDict()  # seq read up to, per job
        self._unreported: set[str] = set()  # jobs whose position moved since the last report
        self.emitted = self.dropped = self.skipped = 0
        self._wake = threading.Event()
        self._stopping = False
        self._deadline = math.inf  # past it, a stopping reader leaves the rest unread
        self._reported_at = 0.0
        self._last_report: tuple[int, ...] = ()
        self._thread = threading.Thread(target=self._run, name="otlp-read", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def command(self, line: str) -> None:
        """One line from the server (see the module's docstring)."""
        verb, _, rest = line.partition(" ")
        with self._lock:
            if verb == "a":
                self._dirty.add(rest)
            elif verb == "p":
                job_id, seq = rest.split(" ")
                self._positions[job_id] = max(int(seq), self._positions.get(job_id, 0))
            elif verb == "d":
                self._dirty.discard(rest)
                self._positions.pop(rest, None)
        self._wake.set()

    def stop(self) -> None:
        """Read what is left for half of STOP_MS at most, send it in the rest, report."""
        started = time.monotonic()
        self._deadline = started + STOP_MS / 2000
        self._stopping = True
        self._wake.set()
        self._thread.join(STOP_MS / 1000)
        left = max(0.1, started + STOP_MS / 1000 - time.monotonic())
        # The public shutdown() waits up to 30 s for a receiver that is down; its batch
        # processor takes the bound (a second call returns at once).
        batches = getattr(self._processor, "_batch_processor", None)
        if batches is not None:
            batches.shutdown(timeout_millis=int(left * 1000))
        else:  # pragma: no cover - another SDK version's layout
            self._processor.shutdown()  # type: ignore[no-untyped-call]
        self._report(final=True)

    # -- the reader's thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            stopping = self._stopping
            if not stopping and self._wake.wait(REPORT_EVERY) and not self._stopping:
                time.sleep(GATHER)
            self._wake.clear()
            with self._lock:
                dirty, self._dirty = self._dirty, set()
            for job_id in sorted(dirty):
                try:
                    self._export_job(job_id)
                except Exception:  # keep exporting the other jobs; this one is read again
                    log.exception("OTLP export of %s failed", job_id)
            if stopping:
                return
            self._report()

    def _export_job(self, job_id: str) -> None:
        """Read the job's lines past its position and hand each over as a LogRecord."""
        job_type = job_id.rsplit("-", 1)[0]
        with self._lock:
            after = self._positions.get(job_id, 0)
        while True:
            if time.monotonic() >= self._deadline:  # stopping: what is left is not sent
                self.dropped += max(
                    0, self._store.read_lines(job_id, after=after, limit=1).latest_seq - after
                )
                return
            page = self._store.read_lines(job_id, after=after, limit=READ_LINES)
            if page.seqs and page.seqs[0] > after + 1:  # rotated away (or never stored)
                self.skipped += page.seqs[0] - after - 1
            for seq, line in zip(page.seqs, page.lines, strict=True):
                after = seq
                if not self._room():
                    self.dropped += 1
                    continue
                record = self._convert(job_id, job_type, line)
                if record is not None:
                    self._logger.emit(record)
                    self.emitted += 1
            if page.seqs:
                with self._lock:
                    self._positions[job_id] = after
                    self._positions.move_to_end(job_id)
                    self._unreported.add(job_id)
                    while len(self._positions) > JOBS_KEPT:  # written to longest ago first
                        self._unreported.discard(self._positions.popitem(last=False)[0])
            if time.monotonic() - self._reported_at >= REPORT_EVERY:
                self._report()
            if not page.more:
                return

    def _room(self) -> bool:
        """Whether the SDK's queue has room for a record, waited for while the receiver keeps
        up (the exporter frees it a batch at a time); no wait while it is slow or down."""
        exporter = self._exporter
        if self.emitted - exporter.handed < QUEUE_RECORDS:
            return True
        with self._changed:
            while self.emitted - exporter.handed >= QUEUE_RECORDS:
                if not self._receiver.keeping_up() or time.monotonic() >= self._deadline:
                    return False
                self._changed.wait(WAIT_STEP)
        return True

    def _report(self, final: bool = False) -> None:
        """The counts and the positions that moved, as one JSON line to the server."""
        exporter = self._exporter
        counts: tuple[int, ...] = (self.emitted, exporter.handed, exporter.sent)
        counts += (exporter.failed, self.dropped, self.skipped)
        self._reported_at = time.monotonic()
        if counts == self._last_report and not self._unreported and not final:
            return
        self._last_report = counts
        with self._lock:
            moved = {job_id: self._positions[job_id] for job_id in self._unreported}
            self._unreported.clear()
        names = ("emitted", "handed", "sent", "failed", "dropped", "skipped")
        report: dict[str, Any] = dict(zip(names, counts, strict=True))
        report.update(positions=moved, final=final)
        self._reports.write(json.dumps(report, separators=(",", ":")) + "\n")
        self._reports.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="jobtrail's OTLP exporter process")
    parser.add_argument("root", type=Path, help="the server's log directory")
    parser.add_argument("endpoint", help="the logs URL; empty: the OTEL_EXPORTER_* variables")
    args = parser.parse_args(argv)
    # The server's stop is the pipe closing: a Ctrl-C or a SIGTERM to the process group
    # must not end the export before the server's last lines were read.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.nice(NICE)
    except OSError:  # pragma: no cover - not allowed here: the export still works
        pass
    reports = report_stream()
    export = ProcessExport(args.root, args.endpoint or None, reports)
    export.start()
    read_commands(export.command)
    export.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
