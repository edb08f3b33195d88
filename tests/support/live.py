"""Real servers for the tests: a JobService with real worker processes behind a real uvicorn
on a free loopback port (as httpx's own tests run theirs). Everything started here is stopped
in ``finally``; the pytest fixtures over it are in ``conftest``."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from jobtrail.api.app import create_app
from jobtrail.service import JobService, ServerConfig

TERMINAL = ("completed", "failed", "cancelled")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _worker_ports() -> range:
    """This test process's own ports: below the kernel's ephemeral range (which ``bind(0)``
    and every outgoing connection draw from), one slice per pytest-xdist worker (a slice of
    its own for a run without xdist), so that no other test process of the run picks a port
    of it between ``free_port()`` and the server's bind. Empty where there is no room."""
    low = min(_ephemeral_low(), 32_768)
    if low < 12_000:
        return range(0)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1"… under xdist
    slot = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    slots = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) + 1, 9)
    size = (low - 10_000) // slots
    start = 10_000 + (slot % slots) * size
    return range(start, start + size)


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts as a process (an
    in-process uvicorn gets a bound socket instead: ``live_server``). Picked at random in
    this process's slice (``_worker_ports``), so that parallel test processes never share
    one; the kernel's pick where there is no slice."""
    ports = _worker_ports()
    for _ in range(200):
        port = random.choice(ports) if ports else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (or still in TIME_WAIT): another one
            return int(sock.getsockname()[1])
    raise AssertionError(f"no free port in {ports}")


@dataclass
class Live:
    """A running server: its URL, an HTTP client, and the JobService behind it."""

    url: str
    http: httpx.Client
    server: JobService

    def submit(self, job_type: str, **params: Any) -> dict[str, Any]:
        response = self.http.post("/api/jobs", json={"type": job_type, "params": params})
        assert response.status_code == 202, response.text
        return dict(response.json())

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(
        self, job_id: str, timeout: float = 30.0, statuses: tuple[str, ...] = TERMINAL
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(0.05)

    def logs(self, job_id: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(f"/api/jobs/{job_id}/logs", params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def all_records(self, job_id: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.logs(job_id, after=after, tail=10000, format="json")
            records.extend(page["logs"])
            if not page["more"]:
                return records
            after = page["last_seq"]


def server_config(home: Path, **overrides: Any) -> ServerConfig:
    """The tests' server: two workers that can run the jobs of ``jobs_fixture``."""
    config = ServerConfig(home=home, workers=2, job_modules=("jobs_fixture",), worker_nice=0)
    return replace(config, **overrides)


@contextlib.contextmanager
def live_server(config: ServerConfig) -> Iterator[Live]:
    app = create_app(config)
    # bound here and handed over: no other process can take the port before uvicorn listens
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    uv = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=3
        )
    )
    thread = threading.Thread(
        target=uv.run, kwargs={"sockets": [listener]}, name="uvicorn", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as http:
            yield Live(url, http, app.state.service)
    finally:
        uv.should_exit = True
        thread.join(60)
        listener.close()  # uvicorn closes it on shutdown; not if it never started
