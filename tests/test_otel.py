"""OpenTelemetry log export (service/otel.py, its exporter process _otel_exporter.py): every
record the store writes reaches an OTLP/HTTP receiver with its attributes, a burst whole; a
receiver that is down or slow costs counted drops, never slower appends; the exporter
process is replaced when it dies, and dies with the server.

The receiver (support/otlp.py) is a real HTTP server on loopback that decodes what it is
sent with opentelemetry-proto, as a Collector would. The store-level tests append to a real
JobLogStore (what the listener does); the end-to-end ones run real jobs on a real server,
local and Redis + RQ workers."""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobtrail.cli.parser import build_parser
from jobtrail.cli.serve import _config
from jobtrail.logstore import JobLogStore
from jobtrail.records import LEVEL_BITS, encode_record
from jobtrail.service.otel import LogExport
from support.live import Live
from support.live import server_config as make_config
from support.modes import MODES, serve_in_mode
from support.otlp import Receiver

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    try:
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def exporting(tmp_path: Path, endpoint: str | None) -> Iterator[tuple[JobLogStore, LogExport]]:
    store = JobLogStore(tmp_path / "logs")
    export = LogExport(store, endpoint)
    export.start()
    try:
        yield store, export
    finally:
        export.stop()
        store.close()


def append(store: JobLogStore, job_id: str, first: int, count: int, **extra: Any) -> None:
    """One batch as the listener appends it: ``count`` numbered lines."""
    lines = [
        encode_record(seq, "2026-12-01T10:00:01.250000Z", "INFO", "app", f"m{seq}", "T", extra)
        for seq in range(first, first + count)
    ]
    store.append(job_id, "".join(lines).encode(), first, count, LEVEL_BITS["INFO"])


def flood(store: JobLogStore, job_id: str, batches: int, size: int = 100) -> float:
    """Append ``batches`` batches at full speed; the seconds it took."""
    started = time.perf_counter()
    for n in range(batches):
        append(store, job_id, 1 + n * size, size)
    return time.perf_counter() - started


def wait_until(check: Any, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.05)


# -- store level: a real store, a real receiver ----------------------------------------------
def test_a_record_becomes_an_otel_log_with_its_attributes(
    tmp_path: Path, receiver: Receiver
) -> None:
    job_id = "ansible_playbook-0123456789ab"
    with exporting(tmp_path, receiver.url) as (store, _):
        lines = [
            encode_record(
                1,
                "2026-12-01T10:00:01.250000Z",
                "ERROR",
                "ansible",
                "fatal: [web3]: FAILED!",
                "MainThread",
                {"event": "failed", "play": "all", "task": "Deploy", "host": "web3", "rc": 2},
            ),
            encode_record(
                2,
                "2026-12-01T10:00:02.000001Z",
                "WARNING",
                "app.db",
                "retrying",
                "worker-1",
                {"exc_text": "Traceback ...", "fields": {"attempt": 3, "ok": True, "r": 0.5}},
            ),
        ]
        store.append(job_id, "".join(lines).encode(), 1, 2, LEVEL_BITS["ERROR"])
        first, second = receiver.wait_for(job_id, 2)
    assert first["body"] == "fatal: [web3]: FAILED!"
    assert (first["severity_text"], first["severity_number"]) == ("ERROR", 17)
    second_0 = calendar.timegm((2026, 12, 1, 10, 0, 1, 0, 0, 0)) * 10**9  # 10:00:01Z
    assert first["time_unix_nano"] == second_0 + 250_000_000
    assert first["attributes"] == {
        "jobtrail.job_id": job_id,
        "jobtrail.job_type": "ansible_playbook",
        "jobtrail.seq": 1,
        "code.namespace": "ansible",
        "thread.name": "MainThread",
        "ansible.event": "failed",
        "ansible.play": "all",
        "ansible.task": "Deploy",
        "ansible.host": "web3",
        "ansible.rc": 2,
    }
    assert (second["severity_text"], second["severity_number"]) == ("WARNING", 13)
    assert second["time_unix_nano"] == second_0 + 10**9 + 1000
    attributes = second["attributes"]
    assert attributes["exception.stacktrace"] == "Traceback ..."
    assert (attributes["attempt"], attributes["ok"], attributes["r"]) == (3, True, 0.5)
    assert (attributes["code.namespace"], attributes["thread.name"]) == ("app.db", "worker-1")
    resource = receiver.resources[0]
    assert resource["service.name"] == "jobtrail"
    assert resource["host.name"] == socket.gethostname()


def test_the_standard_environment_names_the_receiver(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "jobs-eu1")
    job_id = "demo-0123456789ab"
    with exporting(tmp_path, None) as (store, export):
        assert export.endpoint == receiver.url + "/v1/logs"
        append(store, job_id, 1, 5)
        assert len(receiver.wait_for(job_id, 5)) == 5
    assert receiver.resources[0]["service.name"] == "jobs-eu1"


def test_the_command_line_turns_export_on() -> None:
    args = build_parser().parse_args(["serve", "--otlp-endpoint", "http://collector:4318"])
    assert _config(args).otlp_endpoint == "http://collector:4318"
    assert _config(build_parser().parse_args(["serve"])).otlp_endpoint is None


def test_a_slow_receiver_never_slows_appends_and_drops_are_counted(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Each request takes a second: the queue fills, further records are dropped (counted),
    appends go on at their own speed, and every record is accounted for."""
    plain = JobLogStore(tmp_path / "plain")  # the same appends with no export
    baseline = flood(plain, "base-0123456789ab", 200)
    plain.close()
    receiver.delay = 1.0
    job_id = "slow-0123456789ab"
    total = 20_000
    with exporting(tmp_path / "slow", receiver.url) as (store, export):
        took = flood(store, job_id, total // 100)
        wait_until(lambda: export.stats().dropped > 0, what="drops")
        assert took < max(1.0, baseline * 5), (took, baseline)
        wait_until(lambda: export.stats().queued == 0, timeout=60, what="the queue to drain")
        stats = export.stats()
    assert stats.failed == 0 and stats.skipped == 0
    assert stats.exported + stats.dropped == total, stats
    assert stats.exported > 0
    assert len(receiver.for_job(job_id)) == stats.exported


def test_a_burst_reaches_the_receiver_whole(tmp_path: Path, receiver: Receiver) -> None:
    """A burst appended far faster than records can be converted (at full speed: about 50 µs
    of the exporter process's Python a record): with a receiver that keeps up, every record
    reaches it, none dropped, none left out."""
    job_id = "burst-0123456789ab"
    total = 10_000  # four times what the exporter's queue holds
    with exporting(tmp_path, receiver.url) as (store, export):
        flood(store, job_id, total // 100)
        sent = receiver.wait_for(job_id, total, timeout=90)
        wait_until(lambda: export.stats().exported == total, what="its report of them")
        stats = export.stats()
    assert [r["attributes"]["jobtrail.seq"] for r in sent] == list(range(1, total + 1))
    assert (stats.exported, stats.dropped, stats.failed, stats.skipped) == (total, 0, 0, 0)


def test_a_dead_exporter_process_is_replaced(tmp_path: Path, receiver: Receiver) -> None:
    """Killed, the exporter process is started again and goes on from where it got to:
    the records after it died arrive, and no record it had sent is sent twice."""
    job_id = "restart-0123456789ab"
    with exporting(tmp_path, receiver.url) as (store, export):
        append(store, job_id, 1, 100)
        receiver.wait_for(job_id, 100)
        first = export.exporter_pid
        assert first is not None
        wait_until(lambda: export.stats().queued == 0, what="its report of what it sent")
        time.sleep(0.5)  # its report of how far it read (every 0.2 s)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: export.exporter_pid not in (None, first), what="another process")
        append(store, job_id, 101, 50)
        sent = receiver.wait_for(job_id, 150)
        assert export.restarts == 1
    assert [r["attributes"]["jobtrail.seq"] for r in sent] == list(range(1, 151))


def test_the_exporter_process_dies_with_the_server(tmp_path: Path, receiver: Receiver) -> None:
    """A server killed outright (no stop) leaves no exporter process behind."""
    script = (
        "import sys, time\n"
        "from jobtrail.logstore import JobLogStore\n"
        "from jobtrail.service.otel import LogExport\n"
        f"export = LogExport(JobLogStore(sys.argv[1]), {receiver.url!r})\n"
        "export.start()\n"
        "print(export.exporter_pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "logs")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        pid = int(server.stdout.readline())
        server.kill()
        server.wait()
        wait_until(lambda: not _running(pid), what=f"exporter process {pid} to exit")
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):  # a zombie left to init counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    return False


def test_a_receiver_down_then_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Down: the exporter gives up on what it tried (failed), the rest is dropped, both
    counted and logged; appends are not slowed. Back: new records arrive again."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # its retries give up sooner
    down = Receiver()  # its port, nobody listening yet
    job_id = "down-0123456789ab"
    with exporting(tmp_path, down.url) as (store, export):
        took = flood(store, job_id, 100)
        assert took < 2.0, took
        wait_until(lambda: export.stats().failed > 0, what="a failed export")
        wait_until(lambda: export.stats().queued == 0, timeout=60, what="the queue to drain")
        lost = export.stats()
        assert lost.dropped + lost.failed == 10_000, lost
        assert lost.exported == 0
        down.start()
        try:
            append(store, job_id, 10_001, 50)
            back = down.wait_for(job_id, 50)
            assert [r["attributes"]["jobtrail.seq"] for r in back] == list(range(10_001, 10_051))
            caplog.set_level("WARNING", logger="jobtrail.otel")
        finally:
            export.stop()
            down.stop()
    assert export.stats().exported == 50
    shown = [r.getMessage() for r in caplog.records if r.name == "jobtrail.otel"]
    assert any("failed to send" in line for line in shown), shown


def test_rotated_lines_never_read_are_counted(tmp_path: Path, receiver: Receiver) -> None:
    """The export reads the files: lines rotation removed before it read them are skipped."""
    store = JobLogStore(tmp_path / "logs", max_segment_bytes=20_000, max_segments=2)
    export = LogExport(store, receiver.url)  # not started: nothing is read while we append
    try:
        for n in range(50):
            append(store, "rot-0123456789ab", 1 + n * 20, 20)
        export.start()
        store.close_job("rot-0123456789ab")
        wait_until(lambda: export.stats().exported + export.stats().skipped == 1000)
        stats = export.stats()
        assert stats.skipped > 0 and stats.exported == len(receiver.for_job("rot-0123456789ab"))
    finally:
        export.stop()
        store.close()


# -- end to end: real jobs on a real server, both modes ---------------------------------------
@pytest.fixture(scope="module")
def otlp() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module", params=MODES)
def both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, otlp: Receiver
) -> Iterator[Live]:
    home = tmp_path_factory.mktemp(f"home-{request.param}")
    config = make_config(home, otlp_endpoint=otlp.url)
    with serve_in_mode(request.param, config, tmp_path_factory) as live:
        yield live


def test_a_jobs_records_reach_the_receiver_live(both: Live, otlp: Receiver) -> None:
    job = both.submit("fielded", count=9)
    assert both.wait(job["job_id"])["status"] == "completed"
    stored = both.all_records(job["job_id"])
    sent = otlp.wait_for(job["job_id"], len(stored))
    assert [r["attributes"]["jobtrail.seq"] for r in sent] == [r["seq"] for r in stored]
    assert [r["body"] for r in sent] == [r["message"] for r in stored]
    by_body = {r["body"]: r["attributes"] for r in sent}
    assert by_body["try 4"]["attempt"] == 2 and by_body["try 4"]["user"] == "u0"
    assert by_body["try 4"]["jobtrail.job_type"] == "fielded"
    assert by_body["try 4"]["code.namespace"] == "fixture"
    stats = both.server.log_export.stats() if both.server.log_export else None
    assert stats is not None and stats.dropped == 0 and stats.failed == 0


def test_a_running_job_is_exported_while_it_runs(both: Live, otlp: Receiver) -> None:
    """Records arrive while the job is still running, and a job logging 400 records a
    second (well within the export's CPU share) is exported whole."""
    job = both.submit("chatty", count=2000, burst=20, pause=0.05)  # 5 s
    otlp.wait_for(job["job_id"], 20, timeout=30)
    assert both.job(job["job_id"])["status"] == "running"
    both.wait(job["job_id"])
    sent = otlp.wait_for(job["job_id"], 2000)
    assert [r["attributes"]["jobtrail.seq"] for r in sent] == list(range(1, 2001))


def test_metrics_show_what_export_sent(both: Live, otlp: Receiver) -> None:
    """/metrics reads the exporter's counts (the metrics extra is in dev)."""
    job = both.submit("fielded", count=3)
    both.wait(job["job_id"])
    otlp.wait_for(job["job_id"], len(both.all_records(job["job_id"])))

    def sent() -> float:
        text = both.http.get("/metrics").text
        found = re.search(r"^jobtrail_export_records_total (\S+)$", text, re.M)
        assert found, text
        return float(found.group(1))

    wait_until(lambda: sent() >= len(both.all_records(job["job_id"])), what="export counted")
    text = both.http.get("/metrics").text
    assert re.search(r"^jobtrail_export_queue_records \S+$", text, re.M), text
