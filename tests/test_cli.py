"""The `jobtrail` command, run as the real console script against real servers."""

from __future__ import annotations

import contextlib
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

from jobtrail.backends.local.records import JobDB
from jobtrail.cli.jobs import parse_params
from jobtrail.processes import processes_marked
from jobtrail.service import SERVER_STOPPED
from jobtrail.worker.runtime import PLAYBOOKS_ENV
from support.live import Live, free_port, live_server, server_config
from support.modes import MODES, serve_in_mode
from support.redis_server import redis_server
from support.waits import pid_gone, wait_until

pytestmark = pytest.mark.timeout(60)

CLI = [sys.executable, "-m", "jobtrail.cli"]
TEXT_LINE = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\] (DEBUG|INFO|WARNING|ERROR|CRITICAL): "
)
JOB_ID = re.compile(r"\b[a-z0-9_]+-[0-9a-f]{12}\b")
PLAYBOOKS = Path(__file__).parent / "playbooks"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOBTRAIL_URL", "JOBTRAIL_HOME")}
    env["PYTHONFAULTHANDLER"] = "1"  # a CLI that hangs shows where (Streaming.finish)
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


@contextlib.contextmanager
def sigint_reaches_children() -> Iterator[None]:
    """SIGINT handled while a CLI starts, so the CLI handles it as from a terminal. A suite
    started in the background (``tests/run.sh &``) has SIGINT ignored, which every process it
    starts would inherit: the Ctrl-C tests then waited for an exit that never came."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class Streaming:
    """A CLI process whose stdout is read line by line as it comes."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        with sigint_reaches_children():
            self.proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env or cli_env(),
                cwd=cwd,
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
        """Its exit code and stderr; one still running after ``timeout`` is made to print
        where each of its threads is (faulthandler, on SIGABRT) before the test fails."""
        assert self.proc.stderr is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
            signals = " ".join(line for line in status if line.startswith(("Sig", "Shd")))
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(10)
            where = self.proc.stderr.read()
            raise AssertionError(
                f"running after {timeout:g} s ({signals}); it was here:\n{where}"
            ) from None
        self._reader.join(5)
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
    pairs = ["n=3", "x=1.5", "b=true", "z=null", "l=[1, 2]", 'd={"a": 1}', "s=plain"]
    assert parse_params(pairs) == {
        "n": 3, "x": 1.5, "b": True, "z": None, "l": [1, 2], "d": {"a": 1}, "s": "plain",
    }  # fmt: skip
    assert parse_params(["empty=", "eq=a=b"]) == {"empty": "", "eq": "a=b"}
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
    assert parse_params(pairs, schema) == {
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
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["ID", "TYPE", "STATUS", "PROGRESS", "CREATED", "DURATION", "ERROR"]
    ids = [job_id_of(line) for line in rows]
    assert ids.index(bad["job_id"]) < ids.index(ok["job_id"]), "newest first"

    failed = jt(live, "jobs", "--status", "failed")
    assert failed.returncode == 0, failed.stderr
    lines = failed.stdout.splitlines()[1:]  # under the header
    assert any(bad["job_id"] in line for line in lines)
    assert all(ok["job_id"] not in line for line in lines)
    assert all("  failed  " in line for line in lines), lines

    typed = jt(live, "jobs", "--type", "typed", "--limit", "1000")
    assert typed.returncode == 0, typed.stderr
    lines = typed.stdout.splitlines()[1:]
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


# -- the first hour (issue 12) ----------------------------------------------------------------
JOBTRAIL = str(Path(sys.executable).with_name("jobtrail"))  # the console script a user runs
MYJOBS = '''
import logging
from jobtrail import job, progress

log = logging.getLogger(__name__)

@job("deploy")
def deploy(service: str, replicas: int = 2) -> dict:
    """Roll out a service."""
    for i in range(replicas):
        progress(100 * i / replicas, f"replica {i + 1} of {replicas}")
        log.info("starting replica %d of %s", i + 1, service)
    return {"service": service}
'''
READY = re.compile(
    r"^jobtrail serving on (http://127\.0\.0\.1:\d+)  \(web page \1/ , API docs \1/docs\)$"
)


def home_processes(home: Path) -> list[psutil.Process]:
    return processes_marked("jt-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16])


@pytest.fixture
def serving(streaming: list[Streaming]) -> Iterator[list[tuple[Streaming, Path]]]:
    """`jobtrail serve` processes started by a test; each stopped, with its workers, after."""
    started: list[tuple[Streaming, Path]] = []
    try:
        yield started
    finally:
        for proc, _ in started:
            if proc.proc.poll() is None:
                proc.proc.terminate()
                try:
                    proc.proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.proc.kill()
        for _, home in started:
            for leftover in home_processes(home):
                leftover.kill()


def start_serve(
    serving: list[tuple[Streaming, Path]],
    streaming: list[Streaming],
    home: Path,
    *args: str,
    cwd: Path | None = None,
) -> tuple[Streaming, str]:
    """`jobtrail serve --port 0` (the console script, run from ``cwd``), once it said it is
    ready: the process and its URL, read from its ready line."""
    cmd = [JOBTRAIL, "serve", "--home", str(home), "--port", "0", "--workers", "1", *args]
    proc = Streaming(cmd, cwd=cwd)
    streaming.append(proc)
    serving.append((proc, home))
    wait_until(
        lambda: proc.proc.poll() is not None or any(READY.match(line) for line in proc.lines),
        30,
        "the ready line",
    )
    assert proc.proc.poll() is None, proc.lines
    ready = next(m for m in map(READY.match, proc.lines) if m)
    return proc, ready.group(1)


def test_version() -> None:
    done = subprocess.run([JOBTRAIL, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "jobtrail 0.1.0\n"


@pytest.mark.timeout(90)
def test_serve_imports_a_job_module_from_the_folder_it_runs_in_and_says_when_ready(
    tmp_path: Path, serving: list[tuple[Streaming, Path]], streaming: list[Streaming]
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "myjobs.py").write_text(MYJOBS)
    home = tmp_path / "home"
    proc, url = start_serve(serving, streaming, home, "--jobs-module", "myjobs", cwd=app)
    ready = proc.lines.index(next(line for line in proc.lines if READY.match(line)))
    assert proc.lines[ready + 1 : ready + 3] == [
        f"home {home.resolve()}",
        "job types: ansible_playbook, demo, deploy, sleep",
    ]
    assert health(url) is not None, "ready means serving"

    done = run("submit", "deploy", "service=web", "replicas=3", "--wait", "--url", url)
    assert done.returncode == 0, done.stderr
    assert "completed  100%" in done.stdout
    logs = run("logs", job_id_of(done.stdout), "--url", url)
    assert "INFO: starting replica 3 of web" in logs.stdout


def test_serve_app_dir_puts_another_folder_on_the_import_path(
    tmp_path: Path, serving: list[tuple[Streaming, Path]], streaming: list[Streaming]
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "myjobs.py").write_text(MYJOBS)
    _, url = start_serve(
        serving,
        streaming,
        tmp_path / "home",
        "--jobs-module",
        "myjobs",
        "--app-dir",
        str(app),
        cwd=tmp_path,
    )
    done = run("submit", "deploy", "service=api", "--wait", "--url", url)
    assert done.returncode == 0, done.stderr


def test_a_job_module_that_cannot_be_imported_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import jobtrail\n\nLIMIT = 1 / 0\n")
    home = tmp_path / "home"

    def serve(module: str) -> subprocess.CompletedProcess[str]:
        cmd = [JOBTRAIL, "serve", "--home", str(home), "--port", "0", "--jobs-module", module]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=30, cwd=tmp_path, env=cli_env()
        )

    missing = serve("myjobs")
    assert missing.returncode == 2
    assert missing.stderr == (
        "jobtrail: cannot import job module 'myjobs': No module named 'myjobs' "
        "(run from the folder that holds it, or pass --app-dir)\n"
    )
    broken = serve("broken")
    assert broken.returncode == 2
    assert broken.stderr == (
        "jobtrail: cannot import job module 'broken': ZeroDivisionError: division by zero "
        f"(at {tmp_path / 'broken.py'}:3)\n"
    )
    assert missing.stdout == broken.stdout == ""
    assert not home.exists(), "nothing is created before the modules import"

    worker = subprocess.run(
        [JOBTRAIL, "worker", "--backend", "redis://127.0.0.1:9/0", "--jobs-module", "myjobs"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=cli_env(),
    )
    assert worker.returncode == 2
    assert worker.stderr == (
        "jobtrail worker: cannot import job module 'myjobs': No module named 'myjobs' "
        "(run from the folder that holds it, or pass --app-dir)\n"
    )


@pytest.mark.timeout(120)
def test_distributed_serve_and_worker_import_a_job_module_from_their_folder(
    tmp_path: Path, serving: list[tuple[Streaming, Path]], streaming: list[Streaming]
) -> None:

    app = tmp_path / "app"
    app.mkdir()
    (app / "myjobs.py").write_text(MYJOBS)
    with redis_server(tmp_path / "redis") as rs:
        worker = Streaming(
            [JOBTRAIL, "worker", "--backend", rs.url, "--jobs-module", "myjobs"],
            cwd=app,
        )
        streaming.append(worker)
        try:
            _, url = start_serve(
                serving,
                streaming,
                tmp_path / "home",
                "--backend",
                rs.url,
                "--jobs-module",
                "myjobs",
                cwd=app,
            )
            done = run("submit", "deploy", "service=web", "--wait", "--url", url, timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "completed  100%" in done.stdout
        finally:
            worker.proc.terminate()
            worker.proc.wait(20)
            for proc, _ in serving:
                proc.proc.terminate()
                proc.proc.wait(20)


@pytest.mark.timeout(90)
def test_a_second_serve_on_a_home_in_use_names_the_holder_and_a_port_in_use_is_one_line(
    tmp_path: Path, serving: list[tuple[Streaming, Path]], streaming: list[Streaming]
) -> None:
    home = tmp_path / "home"
    first, url = start_serve(serving, streaming, home)
    second = run("serve", "--home", str(home), "--port", "0")
    assert second.returncode == 3, second.stderr
    assert second.stderr == (
        f"jobtrail: home {home.resolve()} is in use by another jobtrail server "
        f"(pid {first.proc.pid}, {url})\n"
    )

    other = tmp_path / "other"
    port = url.rsplit(":", 1)[1]
    taken = run("serve", "--home", str(other), "--port", port)
    assert taken.returncode == 3, taken.stderr
    assert taken.stderr == (
        f"jobtrail: port {port} on 127.0.0.1 is in use by another program (pick another --port)\n"
    )
    assert "Started server process" not in taken.stdout, "uvicorn never ran"
    assert home_processes(other) == [], "no worker started"
    assert health(url) is not None, "the first server is untouched"


@pytest.mark.timeout(90)
def test_every_file_of_a_used_home_is_private(
    tmp_path: Path, serving: list[tuple[Streaming, Path]], streaming: list[Streaming]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "server.lock").write_text("")
    (home / "server.lock").chmod(0o644)  # as an older jobtrail left it
    old_umask = os.umask(0o022)
    try:
        proc, url = start_serve(serving, streaming, home)
    finally:
        os.umask(old_umask)
    done = run("submit", "demo", "delay=0", "--wait", "--url", url)
    assert done.returncode == 0, done.stderr
    files = [path for path in home.rglob("*") if path.is_file()]
    assert {"server.lock", "jobs.sqlite3"} <= {path.name for path in files}
    assert any(path.parent.parent.name == "logs" for path in files), files
    for path in [home, *home.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} is {mode:o}"
    proc.proc.terminate()
    proc.proc.wait(30)
    for path in home.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} after the server stopped"


def test_output_into_a_closed_pipe_ends_quietly(live: Live) -> None:
    job = live.submit("flood", records=20_000, payload=80)
    assert live.wait(job["job_id"], timeout=60)["status"] == "completed"
    for args in (["logs", job["job_id"], "--tail", "10000"], ["jobs", "--limit", "1000"]):
        writer = subprocess.Popen(
            [*CLI, *args, "--url", live.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        head = subprocess.Popen(["head", "-1"], stdin=writer.stdout, stdout=subprocess.PIPE)
        assert writer.stdout is not None and writer.stderr is not None
        writer.stdout.close()  # only head reads it now: it goes away after one line
        first, _ = head.communicate(timeout=30)
        code = writer.wait(30)
        stderr = writer.stderr.read().decode()
        writer.stderr.close()
        assert len(first.splitlines()) == 1
        assert stderr == "", stderr
        # 141 is how a shell reports a process ended by SIGPIPE; a short output fits the pipe
        assert code in (0, 141), (args, code)
        if args[0] == "logs":
            assert code == 141, "1 MB cannot fit a pipe: the writer met the closed end"


SLOW_STOP = """
import time
from jobtrail import job

@job("slow_stop")
def slow_stop(seconds: float = 60.0, cleanup: float = 1.5) -> None:
    \"\"\"Runs until cancelled, then cleans up for a while, as a careful job does.\"\"\"
    try:
        time.sleep(seconds)
    finally:
        time.sleep(cleanup)
"""


@pytest.mark.timeout(90)
def test_cancel_says_what_it_did_and_wait_exits_with_the_job_status(
    tmp_path: Path, serving: list[tuple[Streaming, Path]], streaming: list[Streaming]
) -> None:
    (tmp_path / "slowjobs.py").write_text(SLOW_STOP)
    _, url = start_serve(
        serving, streaming, tmp_path / "home", "--jobs-module", "slowjobs", cwd=tmp_path
    )
    with httpx.Client(base_url=url, timeout=30) as http:

        def submit() -> str:
            response = http.post("/api/jobs", json={"type": "slow_stop", "params": {}})
            assert response.status_code == 202, response.text
            return str(response.json()["job_id"])

        running = submit()
        wait_until(lambda: http.get(f"/api/jobs/{running}").json()["status"] == "running")
        pending = submit()  # the one worker is busy
        done = run("cancel", pending, "--url", url)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{pending}  cancelled  0%  error: cancelled before it started\n"

        done = run("cancel", running, "--wait", "--url", url)
        assert done.returncode == 3, done.stderr
        first, last = done.stdout.splitlines()
        assert first == f"{running}  running  0% — cancel requested"
        assert last == f"{running}  cancelled  0%  error: cancelled on request"

        again = submit()
        wait_until(lambda: http.get(f"/api/jobs/{again}").json()["status"] == "running")
        as_json = run("cancel", again, "--wait", "--json", "--url", url)
        assert as_json.returncode == 3, as_json.stderr
        assert json.loads(as_json.stdout)["status"] == "cancelled", "only the end, as JSON"


def test_show_prints_one_job_with_its_failure_digest_and_newest_lines(live: Live) -> None:
    job = live.submit("fail_digest", lines=30)
    live.wait(job["job_id"])
    done = jt(live, "show", job["job_id"])
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == f"{job['job_id']}  failed"
    fields: dict[str, str] = {}
    for line in out[1 : out.index("  failure")]:
        name, _, value = line.strip().partition(" ")
        fields[name] = value.strip()
    assert fields["type"] == "fail_digest"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", fields["created"]), fields
    assert re.fullmatch(r"\d+\.\ds", fields["duration"]), fields
    assert fields["error"] == "deploy failed: task 'restart app' on web1"
    digest = out.index("  failure")
    assert out[digest + 1 : digest + 5] == [
        "    play:     deploy <b>web</b>",
        "    task:     restart app",
        "    host:     web1",
        "    message:  non-zero return code",
    ]
    assert "    rc:       3" in out
    assert "    stderr:   Job for app.service failed." in out
    shown = out[out.index("newest 10 line(s) of its log:") + 1 :]
    records = [line for line in shown if TEXT_LINE.match(line)]
    assert len(records) == 10
    assert records[-1].endswith("ERROR: job failed: deploy failed: task 'restart app' on web1")
    assert records[-2].endswith("ERROR: task failed on web1"), "oldest first"

    many = jt(live, "show", job["job_id"], "--lines", "60")
    lines = [line for line in many.stdout.splitlines() if TEXT_LINE.match(line)]
    assert len(lines) == 32 and lines[0].endswith("INFO: deploying step 0"), "all 32, from /logs"
    none = jt(live, "show", job["job_id"], "--lines", "0")
    assert "newest" not in none.stdout and not any(map(TEXT_LINE.match, none.stdout.splitlines()))

    as_json = jt(live, "show", job["job_id"], "--json")
    assert json.loads(as_json.stdout)["failure"]["host"] == "web1"
    missing = jt(live, "show", "sleep-0123456789ab")
    assert missing.returncode == 2 and "404" in missing.stderr


def test_jobs_columns_line_up_under_the_header_with_each_duration(live: Live) -> None:
    quick = live.submit("sleep", seconds=0.3)
    live.wait(quick["job_id"])
    crash = live.submit("crash", kind="raise", lines=0)
    live.wait(crash["job_id"])
    slow = live.submit("sleep", seconds=30)
    live.wait(slow["job_id"], statuses=("running",))
    try:
        time.sleep(1.1)
        done = jt(live, "jobs", "--limit", "3")
        assert done.returncode == 0, done.stderr
        header, *rows = done.stdout.splitlines()
        starts = [header.index(name) for name in ("TYPE", "STATUS", "PROGRESS", "CREATED")]
        starts += [header.index(name) for name in ("DURATION", "ERROR")]
        by_id = {row.split()[0]: row for row in rows}
        for row in rows:
            for start in starts[:-1]:
                assert row[start - 2 : start] == "  " and row[start] != " ", (header, row)
        running = by_id[slow["job_id"]]
        assert running[starts[1] :].startswith("running")
        so_far = running[starts[4] :].split()[0]
        assert re.fullmatch(r"\d+\.\ds", so_far) and float(so_far[:-1]) >= 1.0, so_far
        assert re.fullmatch(r"0\.\ds", by_id[quick["job_id"]][starts[4] :].split()[0])
        assert by_id[crash["job_id"]][starts[5] :].startswith("ValueError: the job went wrong (")
        created = running[starts[3] : starts[4]].strip()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", created), created
    finally:
        live.http.post(f"/api/jobs/{slow['job_id']}/cancel")


def test_times_are_utc_with_a_z_or_local_with_their_offset(live: Live) -> None:
    job = live.submit("levels", count=2)
    live.wait(job["job_id"])
    utc = jt(live, "logs", job["job_id"])
    assert utc.stdout and all(TEXT_LINE.match(line) for line in utc.stdout.splitlines())
    local = run(
        "logs",
        job["job_id"],
        "--local-time",
        "--url",
        live.url,
        env=cli_env(TZ="Asia/Kolkata"),
    )
    lines = local.stdout.splitlines()
    assert lines and all(
        re.match(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+05:30\] ", line) for line in lines
    ), lines
    first_utc = utc.stdout.splitlines()[0]
    assert first_utc[12:20] != lines[0][12:20], "converted, not only labelled"
    shown = run("show", job["job_id"], "--local-time", "--url", live.url, env=cli_env(TZ="UTC"))
    assert re.search(r"  created   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00\n", shown.stdout)
    listing = run("jobs", "--local-time", "--url", live.url, env=cli_env(TZ="America/New_York"))
    assert re.search(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d-0[45]:00  ", listing.stdout)


@pytest.mark.timeout(120)
def test_demo_keep_stopped_with_sigterm_removes_its_home(
    tmp_path: Path, streaming: list[Streaming]
) -> None:
    demo = Streaming([*CLI, "demo", "--keep"], env=cli_env(TMPDIR=str(tmp_path)))
    streaming.append(demo)
    demo.wait_for_line("Serving until Ctrl-C", timeout=90)
    home = Path(re.search(r"\(home (\S+)\)", "\n".join(demo.lines)).group(1))  # type: ignore[union-attr]
    assert home.is_dir()
    workers = home_processes(home)
    demo.proc.send_signal(signal.SIGTERM)
    code, stderr = demo.finish(30)
    assert code == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr, stderr
    assert not home.exists(), "SIGTERM cleans up as Ctrl-C does"
    assert list(tmp_path.iterdir()) == []
    assert home_processes(home) == []
    wait_until(lambda: all(pid_gone(p.pid) for p in workers), what="the demo's workers gone")


@pytest.mark.timeout(120)
def test_demo_runs_the_bundled_playbook(tmp_path: Path) -> None:
    done = run("demo", "--type", "ansible_playbook", env=cli_env(TMPDIR=str(tmp_path)), timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PLAY RECAP" in done.stdout
    assert re.search(r"ansible_playbook-[0-9a-f]{12}  completed  100%", done.stdout)
    assert list(tmp_path.iterdir()) == [], "the demo leaves nothing behind"


# -- issue 14: logs --grep/--field, summary, hosts, tasks, rerun, show's root cause -------------
def text_log(live: Live, job_id: str, tmp_path: Path) -> Path:
    """The job's whole log as `jobtrail logs` prints it, in a file for grep."""
    every = jt(live, "logs", job_id, "--tail", "10000")
    assert every.returncode == 0, every.stderr
    path = tmp_path / f"{job_id}.log"
    path.write_text(every.stdout)
    return path


# 13 CLI runs, the test's CPU ~12 s under coverage (py311-forkserver-cov): 10 s at load 4,
# 40 s at load 10, past the module's 60 s at load 30 (nothing hung: CI's stack was mid-run)
@pytest.mark.timeout(240)
def test_logs_grep_prints_matches_with_context_as_grep_does(live: Live, tmp_path: Path) -> None:
    job = live.submit("levels", errors_every=5, count=30)
    live.wait(job["job_id"])
    plain = text_log(live, job["job_id"], tmp_path)
    for ours, theirs in (
        (["--grep", "error", "-C", "1"], ["grep", "-C", "1", "error"]),
        (["--grep", "info 2", "-C", "0"], ["grep", "-C", "0", "info 2"]),
        (["--grep", "error", "-C", "3"], ["grep", "-C", "3", "error"]),
        (["--grep", "error [0-9]*5$", "--regex"], ["grep", "-E", "-C", "2", "error [0-9]*5$"]),
    ):
        done = jt(live, "logs", job["job_id"], *ours)
        assert done.returncode == 0, done.stderr
        expected = subprocess.run([*theirs, str(plain)], capture_output=True, text=True).stdout
        *lines, count = done.stdout.splitlines()
        assert lines == expected.splitlines(), ours
        matches = int(subprocess.run([*theirs, "-c", str(plain)], capture_output=True).stdout)
        assert count == f"{matches} match{'' if matches == 1 else 'es'}", count

    loud = jt(live, "logs", job["job_id"], "--grep", "A CRITICAL", "-i", "-C", "0")
    assert loud.stdout.splitlines()[0].endswith("CRITICAL: a critical record")
    assert loud.stdout.splitlines()[-1] == "1 match"
    none = jt(live, "logs", job["job_id"], "--grep", "A CRITICAL")
    assert none.returncode == 0 and none.stdout == "no match for 'A CRITICAL'\n"

    capped = jt(live, "logs", job["job_id"], "--grep", "info", "--max", "3", "-C", "0")
    *lines, count = capped.stdout.splitlines()
    assert [line.split("] ", 1)[1] for line in lines if line != "--"] == [
        "INFO: a info record",
        "INFO: info 1",
        "INFO: info 2",
    ]
    next_after = re.search(r"--after (\d+)", count)
    assert count.startswith("3 of 25 matches shown") and next_after, count
    rest = jt(live, "logs", job["job_id"], "--grep", "info", "-C", "0", "--after", next_after[1])
    assert rest.stdout.splitlines()[-1] == "22 matches"

    as_json = jt(live, "logs", job["job_id"], "--grep", "error", "--json")
    answer = json.loads(as_json.stdout)
    assert answer["total_matches"] == 7 and answer["q"] == "error" and answer["matches"]
    bad = jt(live, "logs", job["job_id"], "--grep", "(unclosed", "--regex")
    assert bad.returncode == 2 and bad.stderr.startswith("jobtrail: 422: ") and not bad.stdout
    for wrong in (["-f"], ["--tail", "5"]):
        refused = jt(live, "logs", job["job_id"], "--grep", "x", *wrong)
        assert refused.returncode == 2 and refused.stderr.startswith("jobtrail: --"), wrong


def test_logs_field_filters_with_and_without_grep_and_with_follow(live: Live) -> None:
    job = live.submit("fielded")
    live.wait(job["job_id"])

    def messages(stdout: str) -> list[str]:
        return [line.split(": ", 1)[1] for line in stdout.splitlines() if TEXT_LINE.match(line)]

    three = ["try 2", "try 5", "try 8", "a long value"]  # 3, and the text "3"
    plain = jt(live, "logs", job["job_id"], "--field", "attempt:3")
    assert plain.returncode == 0, plain.stderr
    assert messages(plain.stdout) == three
    two = ["--field", "attempt:3", "--field", "user:u0"]
    assert messages(jt(live, "logs", job["job_id"], *two).stdout) == ["try 2", "try 8"]
    followed = jt(live, "logs", job["job_id"], *two, "--tail", "1", "-f")
    assert followed.returncode == 0, followed.stderr
    assert messages(followed.stdout) == ["try 8"], "the page, then the stream from after it"
    streamed = jt(live, "logs", job["job_id"], *two, "--after", "0", "--tail", "1", "-f")
    assert messages(streamed.stdout) == ["try 2", "try 8"], "the rest comes from the stream"
    grep = jt(live, "logs", job["job_id"], "--grep", "try", "--field", "attempt:3", "-C", "0")
    assert messages(grep.stdout) == three[:3] and grep.stdout.splitlines()[-1] == "3 matches"
    none = jt(live, "logs", job["job_id"], "--field", "attempt:3", "--field", "nope:1")
    assert none.returncode == 0 and none.stdout == ""
    malformed = jt(live, "logs", job["job_id"], "--field", "no-colon")
    assert malformed.returncode == 2 and "KEY:VALUE" in malformed.stderr


def test_summary_prints_levels_errors_and_repeated_shapes(live: Live) -> None:
    job = live.submit("levels", errors_every=10, count=100)
    live.wait(job["job_id"])
    done = jt(live, "summary", job["job_id"])
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert re.fullmatch(rf"{job['job_id']}  105 records, \d+(\.\d)? [KM]?B, over \d+\.\ds", out[0])
    lines = {line.split()[0]: line for line in out[1:] if line.startswith("  ") and line[2] != " "}
    assert lines["levels"].split()[1:] == [
        "DEBUG", "1", "INFO", "91", "WARNING", "1", "ERROR", "11", "CRITICAL", "1",
    ]  # fmt: skip
    assert lines["first"].endswith("ERROR: a error record")
    assert lines["last"].endswith("ERROR: error 90")
    repeated = out[out.index("  repeated") + 1 :]
    assert re.fullmatch(r"\s+90 times  info .+  \(seq 7-105\)", repeated[0]), repeated
    as_json = json.loads(jt(live, "summary", job["job_id"], "--json").stdout)
    assert as_json["records"] == 105 and as_json["hosts"] is None


# 5 jobs (in distributed mode one RQ worker's, one after another, each a covered horse) and
# 5 CLI runs: at load 30 under coverage more than the module's 60 s (and the last call may
# take its own 60 s); nothing hung: CI's stack was that last --follow, 12 s in
@pytest.mark.timeout(180)
def test_rerun_verb_reruns_with_overrides_and_waits_in_both_modes(both_cli: Live) -> None:
    first = both_cli.submit("typed", count=2, name="x")
    both_cli.wait(first["job_id"])
    done = jt(both_cli, "rerun", first["job_id"], "count=3", "--wait", timeout=60)
    assert done.returncode == 0, done.stderr
    again = job_id_of(done.stdout)
    assert again != first["job_id"] and "completed" in done.stdout
    rerun = both_cli.job(again)
    assert rerun["rerun_of"] == first["job_id"] and rerun["params"]["count"] == 3
    assert rerun["params"]["name"] == "x"
    as_json = jt(both_cli, "rerun", first["job_id"], "--json")
    assert json.loads(as_json.stdout)["rerun_of"] == first["job_id"]
    assert both_cli.job(first["job_id"])["reruns"][0] == again
    refused = jt(both_cli, "rerun", first["job_id"], "--failed-hosts")
    assert refused.returncode == 2 and refused.stderr.startswith("jobtrail: 422: ")
    failing = both_cli.submit("crash", kind="raise", lines=0)
    both_cli.wait(failing["job_id"])
    failed = jt(both_cli, "rerun", failing["job_id"], "--follow", timeout=60)
    assert failed.returncode == 1 and "ValueError: the job went wrong" in failed.stdout


def test_show_prints_the_duration_root_cause_and_reruns(live: Live) -> None:
    job = live.submit("root_cause", how="from")
    live.wait(job["job_id"])
    again = jt(live, "rerun", job["job_id"], "--wait")
    assert again.returncode == 1, again.stderr
    done = jt(live, "show", job["job_id"], "--lines", "0")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    fields = {line.split()[0]: line.split(None, 1)[1] for line in out[1 : out.index("  failure")]}
    assert re.fullmatch(r"\d+\.\ds", fields["duration"]), fields
    assert fields["reruns"] == job_id_of(again.stdout)
    digest = out[out.index("  failure") + 1 :]
    assert "    type:     RuntimeError" in digest
    assert "    message:  inventory unavailable" in digest
    causes = next(i for i, line in enumerate(digest) if line.startswith("    causes:"))
    assert digest[causes].startswith("    causes:   ← ConnectionError: could not connect to ")
    assert re.fullmatch(r"    frame:    \S*jobs_fixture\.py:\d+ in _connect", digest[causes + 1])
    shown_rerun = jt(live, "show", job_id_of(again.stdout), "--lines", "0").stdout
    assert f"  rerun of  {job['job_id']}" in shown_rerun.splitlines()


@pytest.fixture(scope="module", params=MODES)
def both_cli(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """A server of each mode: the local pool, and Redis with two `jobtrail worker`s."""
    home = tmp_path_factory.mktemp("home")
    with serve_in_mode(request.param, server_config(home), tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def ansible_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    saved = os.environ.get(PLAYBOOKS_ENV)
    try:
        config = server_config(tmp_path_factory.mktemp("home"), playbooks=PLAYBOOKS)
        with live_server(config) as running:
            yield running
    finally:  # the service exports the dir to os.environ: don't leak it into other tests
        if saved is None:
            os.environ.pop(PLAYBOOKS_ENV, None)
        else:
            os.environ[PLAYBOOKS_ENV] = saved


@pytest.mark.timeout(240)
def test_hosts_prints_the_play_recap_tasks_a_table_and_rerun_the_failed_hosts(
    ansible_live: Live,
) -> None:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    job = ansible_live.submit(
        "ansible_playbook", playbook="failing.yml", inventory="web1,web2,", extra_vars=local
    )
    ansible_live.wait(job["job_id"], timeout=120)
    text = "\n".join(r["message"] for r in ansible_live.all_records(job["job_id"]))
    printed = text.split("PLAY RECAP", 1)[1].splitlines()  # as the terminal printed it
    recap = [line.rstrip() for line in printed if " : ok=" in line]
    hosts = jt(ansible_live, "hosts", job["job_id"])
    assert hosts.returncode == 0, hosts.stderr
    assert hosts.stdout.splitlines() == ["PLAY RECAP", *recap], "as the terminal printed it"
    assert len(recap) == 2
    as_json = json.loads(jt(ansible_live, "hosts", job["job_id"], "--json").stdout)
    assert {row["host"]: row["failed"] for row in as_json["hosts"]} == {"web1": 1, "web2": 1}

    tasks = jt(ansible_live, "tasks", job["job_id"])
    assert tasks.returncode == 0, tasks.stderr
    header, *rows = tasks.stdout.splitlines()
    assert header.split() == ["PLAY", "TASK", "HOST", "STATUS", "DURATION"]
    starts = [header.index(name) for name in ("TASK", "HOST", "STATUS", "DURATION")]
    cells = [
        [row[a:b].strip() for a, b in zip([0, *starts], [*starts, len(row)], strict=True)]
        for row in rows
    ]
    assert {(c[1], c[2], c[3]) for c in cells} >= {
        ("Prepare", "web1", "ok"),
        ("Prepare", "web2", "ok"),
        ("Start the service", "web1", "failed"),
        ("Start the service", "web2", "failed"),
    }
    assert all(c[0] == "Failing play" and re.fullmatch(r"\d+\.\ds", c[4]) for c in cells), cells
    slowest = jt(ansible_live, "tasks", job["job_id"], "--slowest", "1", "--json")
    rows_json = json.loads(slowest.stdout)["tasks"]
    every = json.loads(jt(ansible_live, "tasks", job["job_id"], "--json").stdout)["tasks"]
    assert len(rows_json) == 1
    assert rows_json[0]["duration_s"] == max(t["duration_s"] for t in every)
    running = jt(ansible_live, "tasks", job["job_id"], "--running")
    assert running.returncode == 0 and running.stdout == "no task is running\n"

    again = jt(ansible_live, "rerun", job["job_id"], "--failed-hosts", "--wait", timeout=150)
    assert again.returncode == 1, again.stderr
    rerun = ansible_live.job(job_id_of(again.stdout))
    assert rerun["rerun_of"] == job["job_id"]
    assert sorted(str(rerun["params"]["limit"]).strip(",").split(",")) == ["web1", "web2"]
    shown = jt(ansible_live, "show", job["job_id"], "--lines", "0").stdout.splitlines()
    assert "    hosts:    web1, web2" in shown, "every failed host"
    summary = jt(ansible_live, "summary", job["job_id"]).stdout.splitlines()
    assert summary[summary.index("PLAY RECAP") + 1 :] == recap
