"""The server SIGKILLed with jobs running, then restarted on the same home."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobtrail.processes import processes_marked
from jobtrail.service import home_mark
from support.live import free_port
from support.waits import pid_gone, wait_until

pytestmark = pytest.mark.timeout(120)
TESTS = Path(__file__).parent


class ServerProcess:
    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(TESTS)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobtrail.cli",
                "serve",
                "--home",
                str(home),
                "--port",
                str(self.port),
                "--workers",
                "2",
                "--jobs-module",
                "jobs_fixture",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        wait_until(self._healthy, timeout=30, what="server up")

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, "server exited"
        try:
            return self.http.get("/api/health").json()["workers_alive"] == 2
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def test_sigkilled_server_restarts_with_every_job_known_and_nothing_left_running(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    home = tmp_path / "home"
    first = ServerProcess(home)
    servers.append(first)
    tree = first.http.post(
        "/api/jobs", json={"type": "process_tree", "params": {"seconds": 120}}
    ).json()
    logger = first.http.post(
        "/api/jobs", json={"type": "wait_for_file", "params": {"path": str(tmp_path / "never")}}
    ).json()
    queued = first.http.post(
        "/api/jobs", json={"type": "sleep", "params": {"seconds": 0.1, "steps": 1}}
    ).json()

    def started_pids() -> dict[str, int]:
        text = first.http.get(f"/api/jobs/{tree['job_id']}/logs").json()["logs"]
        return {
            m[1]: int(m[2]) for line in text if (m := re.search(r"(child|grandchild) (\d+)", line))
        }

    wait_until(lambda: len(started_pids()) == 2, timeout=30, what="process tree up")
    wait_until(
        lambda: first.http.get(f"/api/jobs/{logger['job_id']}").json()["status"] == "running",
        what="running",
    )
    wait_until(  # its first line written: the last 20 ms before a kill are not guaranteed
        lambda: first.http.get(f"/api/jobs/{logger['job_id']}/logs").json()["total_lines"] >= 1,
        what="the waiting job's first line",
    )
    orphans = started_pids()
    workers = [p.pid for p in processes_marked(home_mark(home))]
    assert len(workers) >= 2
    first.stop(signal.SIGKILL)

    second = ServerProcess(home)
    servers.append(second)
    for job in (tree, logger):
        got = second.http.get(f"/api/jobs/{job['job_id']}").json()
        assert got["status"] == "failed"
        assert "server stopped" in got["error"]
        logs = second.http.get(f"/api/jobs/{job['job_id']}/logs").json()
        assert logs["total_lines"] >= 1, "the log stays readable"
    tree_logs = second.http.get(f"/api/jobs/{tree['job_id']}/logs").json()["logs"]
    assert any("grandchild" in line for line in tree_logs), "its last records are intact"
    for pid in (*orphans.values(), *workers):
        wait_until(lambda pid=pid: pid_gone(pid), what=f"orphan {pid} stopped")
    deadline = time.monotonic() + 30
    while second.http.get(f"/api/jobs/{queued['job_id']}").json()["status"] != "completed":
        assert time.monotonic() < deadline, "the pending job runs after the restart"
        time.sleep(0.1)


def test_torn_last_line_after_crash_is_skipped(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    home = tmp_path / "home"
    first = ServerProcess(home)
    servers.append(first)
    job = first.http.post("/api/jobs", json={"type": "levels", "params": {"count": 50}}).json()
    wait_until(
        lambda: first.http.get(f"/api/jobs/{job['job_id']}").json()["status"] == "completed",
        what="done",
    )
    first.stop()
    segment = sorted((home / "logs" / job["job_id"]).glob("*.jsonl"))[-1]
    with segment.open("ab") as f:
        f.write(b'{"seq":56,"timestamp":"2026-')  # a write cut short by a crash
    second = ServerProcess(home)
    servers.append(second)
    got = second.http.get(f"/api/jobs/{job['job_id']}")
    assert got.status_code == 200
    assert got.json()["recent_logs"][0]["message"] == "info 49"
    logs = second.http.get(f"/api/jobs/{job['job_id']}/logs", params={"tail": 5}).json()
    assert logs["logs"][-1].endswith("INFO: info 49")


def test_second_server_on_same_home_is_refused(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    home = tmp_path / "home"
    servers.append(ServerProcess(home))
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobtrail.cli",
            "serve",
            "--home",
            str(home),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert f"home {home.resolve()} is in use by another jobtrail server" in second.stderr
