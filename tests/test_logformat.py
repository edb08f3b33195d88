"""``jobtrail worker --log-format json``: every line the worker writes on stderr is one JSON
object, from its start through a job it runs to its stop (``serve``'s is tested in
test_deploy.py). A real redis-server, a real API server in Redis mode, a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.live import live_server, server_config
from support.redis_server import TESTS, WORKER_COMMAND, Workers, redis_server

pytestmark = pytest.mark.timeout(120)


def worker(url: str, *options: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}
    env.pop("JOBTRAIL_BACKEND", None)
    args = [sys.executable, "-m", *WORKER_COMMAND, "--log-format", "json", *options]
    if url:
        args += ["--backend", url, "--concurrency", "1", "--jobs-module", "jobs_fixture"]
    return subprocess.Popen(args, env=env, cwd=TESTS, stderr=subprocess.PIPE, text=True)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Each line as its JSON object; a line that is not one fails the test, shown."""
    found = []
    for line in text.splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line on the worker's stderr: {line!r}\n{text}")
    return found


def test_a_worker_logs_json_lines_only(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as rs:
        proc = worker(rs.url)
        try:
            registered = Workers(rs.url, 0)
            registered.procs.append(proc)  # type: ignore[arg-type]  # a text-mode Popen
            registered.wait_ready(1)
            config = server_config(tmp_path / "home", backend=rs.url)
            with live_server(config) as live:
                job = live.submit("levels", count=5)
                assert live.wait(job["job_id"])["status"] == "completed"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    lines = json_lines(err)
    assert {"time", "level", "logger", "message"} <= lines[0].keys()
    assert any("RQ worker(s) on" in line["message"] for line in lines), lines


def test_a_refusal_is_a_json_line(tmp_path: Path) -> None:
    proc = worker("")  # no --backend
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    (line,) = json_lines(err)
    assert line["level"] == "ERROR"
    assert line["message"] == "jobtrail worker: --backend redis://HOST:PORT/DB is required"


def test_the_default_stays_text(tmp_path: Path) -> None:
    args = [sys.executable, "-m", *WORKER_COMMAND]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}
    env.pop("JOBTRAIL_BACKEND", None)
    done = subprocess.run(args, env=env, cwd=TESTS, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == "jobtrail worker: --backend redis://HOST:PORT/DB is required\n"
