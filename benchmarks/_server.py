"""A real `jobtrail serve` subprocess for the benchmarks.

``jobtrail_server()`` starts the console script on a free loopback port with a temporary
home and ``--jobs-module bench_jobs`` (benchmarks/ on the subprocess's PYTHONPATH), waits for
/api/health to report every worker alive, yields a `Server`, and in ``finally`` sends SIGTERM,
then SIGKILL after 10 s (to the process group it started, so no worker outlives it), and
removes the home. The server's own output goes to ``<home>/server.log``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
JOBTRAIL = Path(sys.executable).with_name("jobtrail")
TERMINAL = ("completed", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running server: its URL, its home, and a keep-alive HTTP client."""

    url: str
    home: Path
    proc: subprocess.Popen[bytes]
    http: httpx.Client

    def submit(self, job_type: str, **params: Any) -> str:
        response = self.http.post("/api/jobs", json={"type": job_type, "params": params})
        if response.status_code != 202:
            raise RuntimeError(f"submit {job_type}: {response.status_code} {response.text}")
        return str(response.json()["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/jobs/{job_id}")
        response.raise_for_status()
        return dict(response.json())

    def logs(self, job_id: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(f"/api/jobs/{job_id}/logs", params=params)
        response.raise_for_status()
        return dict(response.json())

    def latest_seq(self, job_id: str) -> int:
        return int(self.logs(job_id, tail=1, format="json")["latest_seq"])

    def cancel(self, job_id: str) -> None:
        response = self.http.post(f"/api/jobs/{job_id}/cancel")
        if response.status_code not in (200, 409):  # 409: it ended already
            response.raise_for_status()

    def cancel_all(self, job_ids: list[str]) -> None:
        """Cancel the jobs, then wait until each is terminal."""
        for job_id in job_ids:
            self.cancel(job_id)
        for job_id in job_ids:
            self.wait(job_id, timeout=60)

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.1) -> dict[str, Any]:
        """The job once it is terminal."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:g}s")
            time.sleep(poll)

    def wait_running(self, job_id: str, timeout: float = 60.0) -> None:
        """Until the job runs and has logged at least one record."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                raise RuntimeError(f"job {job_id} ended early: {job['status']} {job.get('error')}")
            if job["status"] == "running" and job["recent_logs"]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not running after {timeout:g}s")
            time.sleep(0.02)

    def log_dir_bytes(self, job_id: str, suffix: str = ".jsonl") -> tuple[int, int]:
        """(bytes, files) of the job's log segments on disk."""
        directory = self.home / "logs" / job_id
        sizes = [p.stat().st_size for p in directory.glob(f"*{suffix}")]
        return sum(sizes), len(sizes)

    def server_log_tail(self, lines: int = 30) -> str:
        return _tail(self.home.parent, lines)


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            print(
                f"  (server pid {proc.pid} ignored SIGTERM for {grace:g}s: SIGKILL)",
                file=sys.stderr,
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    # Whatever is left of the process group this script started (workers, forkserver).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def jobtrail_server(
    *,
    workers: int = 4,
    worker_nice: int | None = None,
    log_max_bytes: int | None = None,
    extra_args: tuple[str, ...] = (),
    startup_timeout: float = 60.0,
    start_method: str = "forkserver",
) -> Iterator[Server]:
    """A `jobtrail serve` subprocess; `worker_nice=None` keeps the CLI default (10)."""
    home = Path(tempfile.mkdtemp(prefix="jobtrail-bench-"))
    port = free_port()
    args = [
        str(JOBTRAIL),
        "serve",
        "--home",
        str(home / "home"),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--jobs-module",
        "bench_jobs",
        "--start-method",
        start_method,
    ]
    if worker_nice is not None:
        args += ["--worker-nice", str(worker_nice)]
    if log_max_bytes is not None:
        args += ["--log-max-bytes", str(log_max_bytes)]
    args += list(extra_args)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
    env.pop("JOBTRAIL_START_METHOD", None)
    url = f"http://127.0.0.1:{port}"
    log_file = open(home / "server.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(url, home / "home", proc, httpx.Client(base_url=url, timeout=60.0))
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jobtrail serve exited with {proc.returncode}:\n{_tail(home)}")
            with contextlib.suppress(httpx.TransportError):
                response = server.http.get("/api/health", timeout=2.0)
                if response.status_code == 200 and response.json().get("workers_alive") == workers:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"jobtrail serve not healthy after {startup_timeout:g}s:\n{_tail(home)}"
                )
            time.sleep(0.1)
        yield server
    finally:
        server.http.close()
        _stop(proc)
        log_file.close()
        shutil.rmtree(home, ignore_errors=True)


def _tail(home: Path, lines: int = 30) -> str:
    path = home / "server.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
