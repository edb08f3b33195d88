"""GET /api/jobs/{id}/logs/stream (Server-Sent Events) and /logs/download, against a real
uvicorn; the CLI's follow through a proxy that drops its connection."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobtrail.client._sse import SSEParser, SSEvent
from support.live import Live, free_port, live_server
from support.live import server_config as make_config
from support.proxy import DroppingProxy
from support.waits import wait_until

pytestmark = pytest.mark.timeout(120)


def stream_path(job_id: str) -> str:
    return f"/api/jobs/{job_id}/logs/stream"


def iter_events(
    live: Live, job_id: str, params: dict[str, Any] | None = None, **headers: str
) -> Iterator[SSEvent]:
    """The stream's events as they come; the connection closes when the caller stops."""
    with live.http.stream(
        "GET", stream_path(job_id), params=params or {}, headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        parser = SSEParser()
        for line in response.iter_lines():
            event = parser.feed(line)
            if event is not None:
                yield event


def all_events(live: Live, job_id: str, params: dict[str, Any] | None = None) -> list[SSEvent]:
    events = list(iter_events(live, job_id, params))
    assert events[-1].event == "end", "a stream ends with its end event, then closes"
    return events


def records(events: list[SSEvent]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        if event.event == "record":
            record = json.loads(event.data)
            assert event.id == str(record["seq"]), "each record's event id is its seq"
            out.append(record)
    return out


def test_a_running_job_streams_live_in_order_with_status_and_end(live: Live, tmp_path) -> None:
    gate = tmp_path / "gate"
    job = live.submit("ticker", path=str(gate), interval=0.05)
    events: list[SSEvent] = []
    live_while_running = False
    for event in iter_events(live, job["job_id"]):
        events.append(event)
        if not gate.exists() and len(records(events)) >= 6:
            live_while_running = live.job(job["job_id"])["status"] == "running"
            gate.touch()
    assert live_while_running, "records arrived while the job was still running"
    got = records(events)
    assert [r["seq"] for r in got] == list(range(1, len(got) + 1)), "in order, no gap"
    assert got[-1]["message"].startswith("ticker done")
    statuses = [json.loads(e.data) for e in events if e.event == "status"]
    assert statuses[0]["status"] in ("pending", "running")
    assert any(s["status"] == "running" and s["current_step"] for s in statuses)
    progress = [s["progress"] for s in statuses if s["status"] == "running"]
    assert len(set(progress)) > 1, "progress changes come as status events"
    end = json.loads(events[-1].data)
    assert end["status"] == "completed" and end["error"] is None
    assert events[-1].event == "end"
    assert live.logs(job["job_id"], tail=1)["latest_seq"] == got[-1]["seq"], "nothing missed"


def test_a_finished_job_replays_and_closes(live: Live) -> None:
    job = live.submit("levels", count=300)
    live.wait(job["job_id"])
    got = records(all_events(live, job["job_id"]))
    assert [r["seq"] for r in got] == list(range(1, 306))
    assert got == live.all_records(job["job_id"]), "the same records as /logs"
    later = records(all_events(live, job["job_id"], {"after": 250}))
    assert [r["seq"] for r in later] == list(range(251, 306))
    tail = records(all_events(live, job["job_id"], {"tail": 10}))
    assert [r["seq"] for r in tail] == list(range(296, 306))


def test_last_event_id_resumes_without_gap_or_repeat(live: Live, tmp_path) -> None:
    done = live.submit("levels", count=2500)
    live.wait(done["job_id"])
    first: list[SSEvent] = []
    for event in iter_events(live, done["job_id"]):
        first.append(event)
        if len(records(first)) == 700:
            break  # the client goes away mid-stream
    last_id = first[-1].id
    assert last_id == "700"
    rest = list(iter_events(live, done["job_id"], **{"Last-Event-ID": last_id}))
    seqs = [r["seq"] for r in records(first) + records(rest)]
    assert seqs == list(range(1, 2506))

    gate = tmp_path / "gate"
    running = live.submit("ticker", path=str(gate), interval=0.02)
    part: list[SSEvent] = []
    for event in iter_events(live, running["job_id"]):
        part.append(event)
        if len(records(part)) == 5:
            break
    time.sleep(0.3)  # the job logs on while nobody follows
    resumed = []
    for event in iter_events(live, running["job_id"], **{"Last-Event-ID": part[-1].id or ""}):
        resumed.append(event)
        if not gate.exists() and len(records(resumed)) >= 5:
            gate.touch()
    seqs = [r["seq"] for r in records(part) + records(resumed)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert resumed[-1].event == "end"


def test_level_filter_applies_to_replay_and_live(live: Live, tmp_path) -> None:
    job = live.submit("levels", errors_every=10, count=200)
    live.wait(job["job_id"])
    got = records(all_events(live, job["job_id"], {"level": "ERROR"}))
    assert {r["level"] for r in got} == {"ERROR", "CRITICAL"}
    expected = live.logs(job["job_id"], level="ERROR", tail=10000, format="json")["logs"]
    assert got == expected

    gate = tmp_path / "gate"
    ticker = live.submit("ticker", path=str(gate), interval=0.02)
    seen: list[SSEvent] = []
    for event in iter_events(live, ticker["job_id"], {"level": "WARNING"}):
        seen.append(event)
        if not gate.exists() and len(records(seen)) >= 6:
            gate.touch()
    live_records = records(seen)
    assert {r["level"] for r in live_records} == {"WARNING", "ERROR"}
    messages = [r["message"] for r in live_records]
    assert messages[:4] == ["tick 2", "tick 3", "tick 6", "tick 7"]
    # the Ansible field filters apply too (no record here has a host)
    assert records(all_events(live, job["job_id"], {"host": "web1"})) == []


def test_unknown_ids_bad_queries_and_expired_logs(tmp_path: Path) -> None:
    with live_server(make_config(tmp_path / "home")) as srv:
        unknown = srv.http.get(stream_path("sleep-000000000000"))
        assert unknown.status_code == 404
        assert "no job" in unknown.json()["detail"]
        assert srv.http.get(stream_path("../../etc")).status_code == 404
        job = srv.submit("levels", count=5)
        srv.wait(job["job_id"])
        path = stream_path(job["job_id"])
        assert srv.http.get(path, params={"level": "LOUD"}).status_code == 422
        bad_id = srv.http.get(path, headers={"Last-Event-ID": "abc"})
        assert bad_id.status_code == 422
        assert "Last-Event-ID" in bad_id.json()["detail"]
        assert srv.server.expire_logs(older_than_hours=0) == [job["job_id"]]
        gone = srv.http.get(path)
        assert gone.status_code == 410
        assert "retention" in gone.json()["detail"]
        assert srv.http.get(f"/api/jobs/{job['job_id']}/logs/download").status_code == 410


def test_download_is_the_whole_log_in_order(live: Live) -> None:
    job = live.submit("levels", count=3000)
    live.wait(job["job_id"])
    text = live.http.get(f"/api/jobs/{job['job_id']}/logs/download")
    assert text.status_code == 200
    assert "attachment" in text.headers["content-disposition"]
    lines = text.text.splitlines()
    assert len(lines) == 3005
    assert lines[0].endswith("DEBUG: a debug record") and lines[-1].endswith("INFO: info 2999")
    jsonl = live.http.get(f"/api/jobs/{job['job_id']}/logs/download", params={"format": "jsonl"})
    parsed = [json.loads(line) for line in jsonl.text.splitlines()]
    assert parsed == live.all_records(job["job_id"])


class StalledReader:
    """A raw HTTP client with a tiny receive buffer that reads nothing until told to."""

    def __init__(self, url: str, path: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())

    def read_all(self, timeout: float) -> bytes:
        """Everything until the server ends the response (the chunked body, de-chunked)."""
        raw = b""
        deadline = time.monotonic() + timeout
        self.sock.setblocking(False)
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            assert time.monotonic() < deadline, "the stalled stream did not finish"
            ready, _, _ = select.select([self.sock], [], [], 1.0)
            if ready:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    break
                raw += chunk
        self.sock.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        out = b""
        while body:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out += body[:size]
            body = body[size + 2 :]
        return out


def covered_seqs(events: list[SSEvent]) -> list[int]:
    """The seqs a follower was given, as records or as the span of a gap event."""
    seqs: list[int] = []
    for event in events:
        if event.event == "record":
            seqs.append(json.loads(event.data)["seq"])
        elif event.event == "gap":
            gap = json.loads(event.data)
            seqs.extend(range(gap["from"], gap["to"] + 1))
    return seqs


def parse_body(body: bytes) -> list[SSEvent]:
    parser = SSEParser()
    events = [parser.feed(line) for line in body.decode().split("\n")]
    return [e for e in events if e is not None]


@pytest.mark.timeout(180)
def test_a_stalled_follower_blocks_neither_the_job_nor_other_followers(tmp_path: Path) -> None:
    config = make_config(tmp_path / "home", log_max_bytes=200_000, log_segments=3)
    count = 20_000
    with live_server(config) as srv:
        job = srv.submit("chatty", count=count, payload=200, burst=200, pause=0.02)
        job_id = job["job_id"]
        stalled = StalledReader(srv.url, stream_path(job_id))
        began = time.monotonic()
        reader = all_events(srv, job_id)  # a second follower, reading as it comes
        took = time.monotonic() - began
        # in order, each seq once; on a loaded machine even this reader may fall behind
        # rotation (3 segments of 200 kB here), and is then told so by a gap event, never silently
        assert covered_seqs(reader) == list(range(1, count + 1))
        assert srv.job(job_id)["status"] == "completed"
        assert took < 60, f"the job and the other follower took {took:.1f}s"
        # the stalled one catches up from the files, and is told what rotation took from it
        events = parse_body(stalled.read_all(timeout=60))
        assert events[-1].event == "end"
        assert covered_seqs(events) == list(range(1, count + 1)), "as a record or in a gap"
        assert any(e.event == "gap" for e in events), "rotation outran the stalled reader"


def test_cli_follow_survives_a_dropped_connection(live: Live, tmp_path) -> None:
    gate = tmp_path / "gate"
    job = live.submit("ticker", path=str(gate), interval=0.05)
    proxy = DroppingProxy(live.url)
    lines: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobtrail.cli", "logs", job["job_id"], "-f", "--url", proxy.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = threading.Thread(
        target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout or ()), daemon=True
    )
    reader.start()
    try:
        wait_until(lambda: sum("tick" in line for line in lines) >= 10, 20, "ticks")
        before = proxy.accepted
        proxy.drop_all()
        wait_until(lambda: proxy.accepted > before, 20, "the CLI to reconnect")
        count = len(lines)
        wait_until(lambda: len(lines) > count + 5, 20, "lines after the reconnect")
        gate.touch()
        assert proc.wait(30) == 0
        reader.join(10)
    finally:
        proxy.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    ticks = [int(line.rsplit(" ", 1)[1]) for line in lines if ": tick " in line]
    assert ticks == list(range(len(ticks))), "no tick missed or printed twice"
    assert "ticker done" in lines[-1], lines[-3:]


def test_stream_and_download_need_the_token(tmp_path: Path) -> None:
    with live_server(make_config(tmp_path / "home", token="s3cret-token")) as srv:
        job = srv.http.post(
            "/api/jobs",
            json={"type": "levels", "params": {"count": 3}},
            headers={"Authorization": "Bearer s3cret-token"},
        ).json()
        path = stream_path(job["job_id"])
        assert srv.http.get(path).status_code == 401
        with httpx.Client(base_url=srv.url, cookies={"jobtrail_token": "s3cret-token"}) as c:
            wait_until(lambda: c.get(f"/api/jobs/{job['job_id']}").json()["status"] != "pending")
            with c.stream("GET", path, timeout=30) as response:
                assert response.status_code == 200
                body = "".join(response.iter_text())
            assert "event: end" in body


# -- stopping the server while clients follow (issue 12, item 13) ------------------------------
TESTS = Path(__file__).resolve().parent
SHUTDOWN_NOISE = ("Traceback", "CancelledError", "graceful shutdown exceeded", "ERROR")


@contextlib.contextmanager
def serve_process(home: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`jobtrail serve` as a user runs it (its own process, signals and all), with the test
    jobs; yields it, its URL and the file its stderr goes to. Killed after, if still up."""
    port = free_port()
    stderr = home.parent / f"{home.name}-serve.stderr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    command = [sys.executable, "-m", "jobtrail.cli", "serve", "--home", str(home)]
    command += ["--port", str(port), "--workers", "1", "--jobs-module", "jobs_fixture", *args]
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(command, cwd=TESTS, env=env, stdout=err, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "serve did not start"
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield proc, url, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class Follower(threading.Thread):
    """Follows a job's stream in a thread; notes each event and when the stream ended."""

    def __init__(self, url: str, job_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.job_id = url, job_id
        self.events: list[SSEvent] = []
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            with httpx.stream("GET", f"{self.url}{stream_path(self.job_id)}", timeout=30) as r:
                parser = SSEParser()
                for line in r.iter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        self.events.append(event)
        except BaseException as exc:  # reported by the test
            self.error = exc
        self.ended_at = time.monotonic()


def stop_while_followed(url: str, proc: subprocess.Popen[bytes], job_id: str) -> dict[str, Any]:
    """SIGTERM the server while a raw follower and `jobtrail logs -f` follow the job; checks
    that both end promptly, saying the server is stopping, and returns the shutdown event."""
    follower = Follower(url, job_id)
    cli = subprocess.Popen(
        [sys.executable, "-m", "jobtrail.cli", "logs", job_id, "-f", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    printed: list[bytes] = []
    assert cli.stdout is not None
    reader = threading.Thread(target=lambda: printed.extend(iter(cli.stdout.readline, b"")))
    reader.start()
    try:
        wait_until(lambda: len(records(follower.events)) >= 1, 20, "the follower's first record")
        # the CLI prints the job's newest lines, then follows: give it a moment to connect
        # once it printed them (a loaded machine takes seconds just to start it)
        wait_until(lambda: any(b"waiting for" in line for line in printed), 30, "the CLI's tail")
        time.sleep(0.5)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        follower.join(10)
        assert follower.ended_at is not None and follower.error is None, follower.error
        took = follower.ended_at - signalled
        assert took < 1.0, f"the stream took {took:.2f} s to end after SIGTERM"
        last = follower.events[-1]
        assert last.event == "shutdown", follower.events[-3:]
        cli.wait(timeout=10)  # its stdout is the reader thread's; its stderr is one line
        cli_took = time.monotonic() - signalled
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
        reader.join(10)
    assert cli.stderr is not None
    err = cli.stderr.read()
    cli.stderr.close()
    cli.stdout.close()
    out = b"".join(printed)
    assert cli.returncode == 2, (cli.returncode, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "is stopping" in lines[0] and job_id in lines[0], lines
    assert cli_took < 5, f"the CLI follower took {cli_took:.1f} s to give up"
    assert "waiting for" in out.decode(), "the CLI printed the job's records before"
    data: dict[str, Any] = json.loads(last.data)
    return data


@pytest.mark.timeout(120)
def test_stopping_the_server_ends_streams_at_once_and_the_job_says_why(tmp_path: Path) -> None:
    from jobtrail.backends.local.records import JobDB
    from jobtrail.logstore.store import JobLogStore

    home = tmp_path / "home"
    with serve_process(home) as (proc, url, stderr):
        submitted = httpx.post(
            f"{url}/api/jobs",
            json={"type": "slow_to_stop", "params": {"path": str(tmp_path / "x"), "cleanup": 0.3}},
        ).json()
        job_id = submitted["job_id"]
        wait_until(lambda: httpx.get(f"{url}/api/jobs/{job_id}").json()["status"] == "running", 20)
        shutdown = stop_while_followed(url, proc, job_id)
        assert proc.wait(30) in (0, -signal.SIGTERM)
    assert shutdown["status"] == "running" and shutdown["job_id"] == job_id
    assert shutdown["reason"] == "the server is stopping"
    log = stderr.read_text()
    assert not [word for word in SHUTDOWN_NOISE if word in log], log
    db = JobDB(home / "jobs.sqlite3")
    try:
        job = db.get(job_id)
    finally:
        db.close()  # Python 3.13 warns of an unclosed sqlite3 connection
    assert job is not None and job.status.value == "failed"
    assert job.error == "the server stopped while the job was running"
    messages = [r["message"] for r in JobLogStore(home / "logs").read(job_id, tail=50).records]
    assert "cleaned up" in messages, "the job's finally block ran"
    assert messages[-1] == "job stopped: the server is shutting down"
    assert not any("cancel" in m for m in messages), messages
