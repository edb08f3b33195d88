"""The `jobtrail` command, run as the real console script against real servers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from conftest import Live, free_port, pid_gone, wait_until
from jobtrail.cli import _params
from jobtrail.db import JobDB
from jobtrail.executor.processes import processes_marked
from jobtrail.server import SERVER_STOPPED

pytestmark = pytest.mark.timeout(60)

CLI = [sys.executable, "-m", "jobtrail.cli"]
TEXT_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (DEBUG|INFO|WARNING|ERROR|CRITICAL): ")
JOB_ID = re.compile(r"\b[a-z0-9_]+-[0-9a-f]{12}\b")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOBTRAIL_URL", "JOBTRAIL_HOME")}
    env.update(extra)
    return env


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env or cli_env()
    )


def jt(live: Live, verb: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`jobtrail VERB --url LIVE ARGS...`"""
    return run(verb, "--url", live.url, *args, timeout=timeout)


class Streaming:
    """A CLI process whose stdout is read line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or cli_env(),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 15) -> None:
        wait_until(
            lambda: any(text in line for line in self.lines), timeout, f"a line with {text!r}"
        )

    def finish(self, timeout: float = 20) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def streaming() -> Iterator[list[Streaming]]:
    started: list[Streaming] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()


def job_id_of(stdout: str) -> str:
    match = JOB_ID.search(stdout)
    assert match, stdout
    return match.group(0)


# -- submit ---------------------------------------------------------------------------------
def test_submit_wait_exits_0_when_the_job_completes(live: Live) -> None:
    done = jt(live, "submit", "sleep", "seconds=0.1", "steps=2", "--wait")
    assert done.returncode == 0, done.stderr
    job_id = job_id_of(done.stdout)
    assert job_id.startswith("sleep-")
    assert "completed" in done.stdout and "100%" in done.stdout
    assert live.job(job_id)["status"] == "completed"


def test_submit_wait_exits_1_with_the_error_when_the_job_fails(live: Live) -> None:
    done = jt(live, "submit", "crash", "kind=raise", "lines=1", "--wait")
    assert done.returncode == 1, done.stderr
    assert "failed" in done.stdout
    assert "error: ValueError: the job went wrong" in done.stdout


def test_submit_without_wait_returns_at_once_with_exit_0(live: Live) -> None:
    done = jt(live, "submit", "sleep", "seconds=0.1", "steps=1")
    assert done.returncode == 0, done.stderr
    job_id = job_id_of(done.stdout)
    assert live.wait(job_id)["status"] == "completed"


def test_submit_json_output_parses(live: Live) -> None:
    queued = jt(live, "submit", "typed", "count=2", "--json")
    assert queued.returncode == 0, queued.stderr
    job = json.loads(queued.stdout)
    assert job["job_type"] == "typed" and job["status"] in ("pending", "running", "completed")
    done = jt(live, "submit", "typed", "count=2", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "completed"
    assert job["result"] == {"count": 2, "name": "x", "ratio": 0.5, "flags": []}


def test_submit_follow_prints_lines_as_they_come_and_exits_with_the_status(
    live: Live, tmp_path: Path, streaming: list[Streaming]
) -> None:
    gate = tmp_path / "gate"
    follow = Streaming(
        [*CLI, "submit", "wait_for_file", f"path={gate}", "--url", live.url, "--follow"]
    )
    streaming.append(follow)
    follow.wait_for_line(f"waiting for {gate}")
    assert follow.proc.poll() is None, "--follow must not wait for the end to print"
    line = next(line for line in follow.lines if "waiting for" in line)
    assert TEXT_LINE.match(line) and line.endswith(f"INFO: waiting for {gate}"), line
    gate.touch()
    code, stderr = follow.finish()
    assert code == 0, stderr
    assert follow.lines[-1].endswith("completed  100%"), follow.lines


def test_submit_follow_of_a_failing_job_shows_the_traceback_and_exits_1(live: Live) -> None:
    done = jt(live, "submit", "crash", "kind=raise", "lines=2", "--follow")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if "before the crash" in line] == [
        line for line in lines if TEXT_LINE.match(line) and "before the crash" in line
    ]
    assert sum("before the crash" in line for line in lines) == 2
    assert "Traceback" in done.stdout and "ValueError: the job went wrong" in done.stdout
    assert "failed" in lines[-1]


# -- key=value ------------------------------------------------------------------------------
def test_key_value_numbers_lists_and_strings_reach_the_job(live: Live) -> None:
    done = jt(
        live,
        "submit",
        "typed",
        "count=3",
        "name=hello world",
        "ratio=1.5",
        'flags=["a","b"]',
        "--wait",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    assert result == {"count": 3, "name": "hello world", "ratio": 1.5, "flags": ["a", "b"]}


def test_key_value_text_that_looks_like_json_stays_text_for_a_string_param(live: Live) -> None:
    done = jt(live, "submit", "typed", "count=7", "name=123", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"]["name"] == "123"
    done = jt(live, "submit", "typed", "count=7", "name=true", 'flags=["1"]', "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {
        "count": 7, "name": "true", "ratio": 0.5, "flags": ["1"],
    }  # fmt: skip


def test_key_value_booleans(live: Live) -> None:
    done = jt(live, "submit", "demo", "steps=1", "delay=0", "fail=true", "--wait")
    assert done.returncode == 1, done.stderr
    assert "demo failure requested with fail=true" in done.stdout
    done = jt(live, "submit", "demo", "steps=1", "delay=0", "fail=false", "--wait")
    assert done.returncode == 0, done.stderr


def test_key_value_parsing_rules() -> None:
    assert _params(["n=3", "x=1.5", "b=true", "z=null", "l=[1, 2]", "d={\"a\": 1}", "s=plain"]) == {
        "n": 3, "x": 1.5, "b": True, "z": None, "l": [1, 2], "d": {"a": 1}, "s": "plain",
    }  # fmt: skip
    assert _params(["empty=", "eq=a=b"]) == {"empty": "", "eq": "a=b"}
    schema = {
        "properties": {
            "name": {"type": "string"},
            "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "ratio": {"type": "number"},
            "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "anything": {},
        }
    }
    pairs = ["name=3", "maybe=null", "ratio=2", "either=4", "anything=5", "unknown=6"]
    assert _params(pairs, schema) == {
        "name": "3", "maybe": None, "ratio": 2, "either": 4, "anything": 5, "unknown": 6,
    }  # fmt: skip


def test_a_malformed_pair_is_an_error_without_a_request(live: Live) -> None:
    done = jt(live, "submit", "typed", "count")
    assert done.returncode == 2
    assert done.stderr.strip() == "jobtrail: params are key=value; got 'count'"


def test_a_wrong_param_prints_the_422_naming_it_and_exits_2(live: Live) -> None:
    done = jt(live, "submit", "typed", "count=abc")
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("jobtrail: 422: invalid params for 'typed': count:"), done.stderr
    done = jt(live, "submit", "typed", "count=1", "bogus=1")
    assert done.returncode == 2
    assert "bogus: unknown parameter" in done.stderr
    done = jt(live, "submit", "no_such_type", "x=1")
    assert done.returncode == 2
    assert "unknown job type 'no_such_type'" in done.stderr


# -- errors of the connection ---------------------------------------------------------------
@pytest.mark.parametrize("verb", [["submit", "sleep"], ["jobs"], ["logs", "sleep-0123456789ab"]])
def test_an_unreachable_server_is_one_line_and_exit_2(verb: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run(*verb, "--url", url)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"jobtrail: cannot reach the jobtrail server at {url}")


def test_the_url_comes_from_jobtrail_url(live: Live) -> None:
    done = run(
        "submit", "sleep", "seconds=0", "steps=1", "--wait", env=cli_env(JOBTRAIL_URL=live.url)
    )
    assert done.returncode == 0, done.stderr
    done = run("jobs", env=cli_env(JOBTRAIL_URL=f"http://127.0.0.1:{free_port()}"))
    assert done.returncode == 2 and "cannot reach" in done.stderr


# -- jobs -----------------------------------------------------------------------------------
def test_jobs_lists_newest_first_and_filters_by_status_and_type(live: Live) -> None:
    ok = live.submit("typed", count=1)
    bad = live.submit("crash", kind="raise", lines=0)
    live.wait(ok["job_id"])
    live.wait(bad["job_id"])

    listing = jt(live, "jobs")
    assert listing.returncode == 0, listing.stderr
    ids = [job_id_of(line) for line in listing.stdout.splitlines()]
    assert ids.index(bad["job_id"]) < ids.index(ok["job_id"]), "newest first"

    failed = jt(live, "jobs", "--status", "failed")
    assert failed.returncode == 0, failed.stderr
    lines = failed.stdout.splitlines()
    assert any(bad["job_id"] in line for line in lines)
    assert all(ok["job_id"] not in line for line in lines)
    assert all("  failed  " in line for line in lines), lines

    typed = jt(live, "jobs", "--type", "typed", "--limit", "1000")
    assert typed.returncode == 0, typed.stderr
    lines = typed.stdout.splitlines()
    assert any(ok["job_id"] in line for line in lines)
    assert all(re.search(r"\btyped-[0-9a-f]{12}\b", line) for line in lines), lines

    as_json = jt(live, "jobs", "--json", "--type", "crash", "--status", "failed")
    assert as_json.returncode == 0, as_json.stderr
    listing_json = json.loads(as_json.stdout)
    assert listing_json["count"] == len(listing_json["jobs"]) >= 1
    assert {j["job_type"] for j in listing_json["jobs"]} == {"crash"}
    assert {j["status"] for j in listing_json["jobs"]} == {"failed"}

    wrong = jt(live, "jobs", "--status", "finished")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


# -- logs -----------------------------------------------------------------------------------
def test_logs_tail_and_level(live: Live) -> None:
    job = live.submit("levels", errors_every=3, count=10)
    assert live.wait(job["job_id"])["status"] == "completed"

    done = jt(live, "logs", job["job_id"], "--tail", "3", "--level", "WARNING")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, lines
    assert all(TEXT_LINE.match(line) for line in lines), lines
    assert [line.split("] ", 1)[1] for line in lines] == [
        "ERROR: error 3",
        "ERROR: error 6",
        "ERROR: error 9",
    ]

    done = jt(live, "logs", job["job_id"], "--level", "warning")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(TEXT_LINE.match(line) for line in lines), lines
    assert [line.split("] ", 1)[1] for line in lines] == [
        "WARNING: a warning record",
        "ERROR: a error record",
        "CRITICAL: a critical record",
        "ERROR: error 0",
        "ERROR: error 3",
        "ERROR: error 6",
        "ERROR: error 9",
    ]

    everything = jt(live, "logs", job["job_id"])
    assert len(everything.stdout.splitlines()) == 15

    as_json = jt(live, "logs", job["job_id"], "--tail", "2", "--json")
    page = json.loads(as_json.stdout)
    assert [r["message"] for r in page["logs"]] == ["info 8", "error 9"]


def test_logs_of_an_unknown_job_or_with_a_bad_level_exit_2(live: Live) -> None:
    done = jt(live, "logs", "sleep-0123456789ab")
    assert done.returncode == 2
    assert done.stderr.startswith("jobtrail: 404: no job with id 'sleep-0123456789ab'")
    job = live.submit("typed", count=1)
    done = jt(live, "logs", job["job_id"], "--level", "LOUD")
    assert done.returncode == 2 and "422" in done.stderr and "level" in done.stderr


def test_logs_follow_prints_until_the_job_ends(
    live: Live, tmp_path: Path, streaming: list[Streaming]
) -> None:
    gate = tmp_path / "gate"
    job = live.submit("wait_for_file", path=str(gate))
    live.wait(job["job_id"], statuses=("running",))
    follow = Streaming([*CLI, "logs", job["job_id"], "-f", "--url", live.url])
    streaming.append(follow)
    follow.wait_for_line(f"waiting for {gate}")
    time.sleep(0.5)  # not synchronisation: gives a wrongly exiting follower time to exit
    assert follow.proc.poll() is None, "logs -f must keep going while the job runs"
    gate.touch()
    code, stderr = follow.finish()
    assert code == 0, stderr
    assert all(TEXT_LINE.match(line) for line in follow.lines), follow.lines
    assert sum("waiting for" in line for line in follow.lines) == 1, "no line printed twice"


def test_logs_follow_of_a_failing_job_exits_1_after_its_last_line(live: Live) -> None:
    job = live.submit("crash", kind="raise", lines=3)
    done = jt(live, "logs", job["job_id"], "-f", "--level", "ERROR")
    assert done.returncode == 1, done.stderr
    assert "ValueError: the job went wrong" in done.stdout
    assert "before the crash" not in done.stdout


def test_ctrl_c_on_logs_follow_exits_130_without_a_traceback(
    live: Live, tmp_path: Path, streaming: list[Streaming]
) -> None:
    gate = tmp_path / "gate"
    job = live.submit("wait_for_file", path=str(gate))
    follow = Streaming([*CLI, "logs", job["job_id"], "-f", "--url", live.url])
    streaming.append(follow)
    try:
        follow.wait_for_line("waiting for")
        follow.proc.send_signal(signal.SIGINT)
        code, stderr = follow.finish()
        assert code == 130
        assert "Traceback" not in stderr, stderr
    finally:
        gate.touch()
    assert live.wait(job["job_id"])["status"] == "completed", "the job is not the CLI's to stop"


# -- cancel ---------------------------------------------------------------------------------
def test_cancel_a_running_job_then_a_finished_one(live: Live, streaming: list[Streaming]) -> None:
    def sleep_jobs(status: str | None = None) -> list[str]:
        params = {"type": "sleep", "limit": 1000, **({"status": status} if status else {})}
        return [j["job_id"] for j in live.http.get("/api/jobs", params=params).json()["jobs"]]

    before = set(sleep_jobs())
    waiter = Streaming([*CLI, "submit", "sleep", "seconds=30", "--url", live.url, "--wait"])
    streaming.append(waiter)
    job_id = ""

    def running() -> bool:
        nonlocal job_id
        new = [j for j in sleep_jobs("running") if j not in before]
        job_id = new[0] if new else ""
        return bool(job_id)

    wait_until(running, what="the sleep job running")
    done = jt(live, "cancel", job_id)
    assert done.returncode == 0, done.stderr
    assert job_id in done.stdout
    assert live.wait(job_id)["status"] == "cancelled"
    code, stderr = waiter.finish()
    assert code == 3, f"--wait exits 3 for a cancelled job: {stderr}"
    assert f"{job_id}  cancelled" in waiter.lines[-1]

    again = jt(live, "cancel", job_id)
    assert again.returncode == 2
    assert again.stdout == ""
    assert (
        again.stderr.strip()
        == f"jobtrail: 409: job {job_id!r} already ended with status 'cancelled'"
    )


def test_cancel_json(live: Live) -> None:
    job = live.submit("sleep", seconds=30)
    live.wait(job["job_id"], statuses=("running",))
    done = jt(live, "cancel", job["job_id"], "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["job_id"] == job["job_id"]
    assert live.wait(job["job_id"])["status"] == "cancelled"


# -- demo -----------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_demo_runs_its_job_and_prints_the_urls_to_try(tmp_path: Path) -> None:
    done = run("demo", env=cli_env(TMPDIR=str(tmp_path)), timeout=90)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    url = re.search(r"server at (http://127\.0\.0\.1:\d+)", out).group(1)  # type: ignore[union-attr]
    job_id = re.search(r"running job (demo-[0-9a-f]{12})", out).group(1)  # type: ignore[union-attr]
    for text in (
        "INFO: demo job starting",
        "INFO: child stdout line",
        "WARNING: child stderr line",
        "WARNING: step 4 took longer than expected",
        "INFO: demo job done",
        f"{job_id}  completed  100%",
        f"curl {url}/api/jobs/{job_id}",
        f"curl '{url}/api/jobs/{job_id}/logs?tail=20&level=WARNING'",
        f"{url}/docs",
        "jobtrail demo --keep",
    ):
        assert text in out, (text, out)
    home = Path(re.search(r"\(home (\S+)\)", out).group(1))  # type: ignore[union-attr]
    assert home.parent == tmp_path
    mark = "jt-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    assert processes_marked(mark) == [], "the demo left worker processes behind"


# -- serve ----------------------------------------------------------------------------------
@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    home = tmp_path / "home"
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--home", str(home), "--port", str(port), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
    )
    try:
        yield proc, f"http://127.0.0.1:{port}", home
    finally:
        mark = "jt-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for leftover in processes_marked(mark):
            leftover.kill()
        if proc.stdout is not None:
            proc.stdout.close()


def health(url: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{url}/api/health", timeout=2)
    except httpx.TransportError:
        return None
    return dict(response.json()) if response.status_code == 200 else None


@pytest.mark.timeout(60)
def test_serve_runs_jobs_and_stops_cleanly_on_sigterm(
    serve: tuple[subprocess.Popen[str], str, Path],
) -> None:
    proc, url, home = serve
    wait_until(lambda: proc.poll() is not None or health(url) is not None, 30, "the server up")
    assert proc.poll() is None, "serve exited"
    assert health(url) == {
        "status": "ok",
        "workers": 1,
        "workers_alive": 1,
        "pending": 0,
        "running": 0,
    }

    done = run("submit", "sleep", "seconds=0.1", "steps=2", "--wait", "--url", url)
    assert done.returncode == 0, done.stdout + done.stderr
    long = run("submit", "sleep", "seconds=60", "--url", url, "--json")
    long_id = json.loads(long.stdout)["job_id"]
    wait_until(lambda: health(url)["running"] == 1, what="the long job running")  # type: ignore[index]

    mark = "jt-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    children = psutil.Process(proc.pid).children(recursive=True)
    if os.environ.get("JOBTRAIL_START_METHOD", "forkserver") != "fork":
        # a forked worker's /proc environ is the server's own; its exec'd children carry it
        assert processes_marked(mark), "the worker carries the home's mark"
    assert len(children) >= 2, "the worker and its job are the server's descendants"

    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    output = proc.stdout.read() if proc.stdout else ""
    # uvicorn shuts down (lifespan included), then re-raises the signal it caught, so the
    # process ends the way SIGTERM ends it: a parent sees -15, never a crash's exit code.
    assert code == -signal.SIGTERM, output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output, output
    assert processes_marked(mark) == []
    wait_until(lambda: all(pid_gone(c.pid) for c in children), what="every child gone")

    db = JobDB(home / "jobs.sqlite3")
    try:
        job = db.get(long_id)
    finally:
        db.close()
    assert job is not None and job.status.value == "failed" and job.error == SERVER_STOPPED
