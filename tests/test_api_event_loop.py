"""The API never waits on the service on its event loop: a slow service call (SQLite under
load, a Redis round trip) holds up only its own request, never the others."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from jobtrail.api.app import create_app
from jobtrail.logstore import LogPage
from jobtrail.models import Health, Job
from jobtrail.service import JobService, ServerConfig
from support.live import free_port

SLOW_SECONDS = 1.5


class SlowService:
    """The facade's methods the tested routes call; ``get`` and ``check_logs`` are slow (the
    download asks for text, so ``read``)."""

    def __init__(self, home: Any) -> None:
        self.config = ServerConfig(home=home)
        self.released = threading.Event()

    def get(self, job_id: str) -> Job:
        self.released.wait(SLOW_SECONDS)
        return Job(job_id=job_id, job_type="sleep", params={}, created_at=time.time())

    check_logs = get

    async def peek_on_loop(self, job_id: str) -> Job | None:
        return None  # not at hand: the route must ask ``get`` in a thread

    async def close_on_loop(self) -> None:
        pass

    async def logs_on_loop(self, job_id: str, tail: int) -> LogPage | None:
        return None

    async def health_on_loop(self) -> Health | None:
        return None  # as when Redis does not answer on the loop: asked in a thread

    def recent(self, job_id: str, n: int = 50) -> list[dict[str, Any]]:
        return []

    def log_file(self, job_id: str) -> str:
        return f"/nowhere/{job_id}"

    def read(self, job_id: str, **query: Any) -> LogPage:
        return LogPage([], None, None, 0, 1)

    def health(self) -> Health:
        return Health(workers=1, workers_alive=1, pending=0, running=0)

    def expire_logs(self, *args: Any, **kwargs: Any) -> list[str]:
        return []


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` on a real uvicorn on a free loopback port, in a thread; its URL."""
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(30)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("slow_path", ["/api/jobs/{id}", "/api/jobs/{id}/logs/download"])
def test_a_slow_service_call_does_not_hold_up_other_requests(tmp_path: Any, slow_path: str) -> None:
    service = SlowService(tmp_path)
    app = create_app(server=cast(JobService, service))
    with serving(app) as url:
        slow = threading.Thread(
            target=httpx.get, args=(url + slow_path.format(id="sleep-0123456789ab"),), daemon=True
        )
        slow.start()
        time.sleep(0.2)  # the slow request is now inside service.get
        began = time.monotonic()
        health = httpx.get(f"{url}/api/health", timeout=10)
        took = time.monotonic() - began
        service.released.set()
        slow.join(10)
    assert health.status_code == 200, health.text
    assert took < SLOW_SECONDS / 2, (
        f"GET /api/health took {took:.2f} s while {slow_path} waited in the service: "
        "a route called the service on the event loop"
    )
