"""/metrics: the figures a real Prometheus scrapes from a running server, in both modes.

The Prometheus is Debian's ``prometheus`` (tests/run.sh installs it), started with a
generated config that scrapes the server every second with its token, its database in
``tmp_path``; the test asks its HTTP API for jobtrail's series, as a dashboard would.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from jobtrail.api.app import create_app
from jobtrail.service.metrics import JobMetrics
from support.live import Live, free_port, live_server, server_config
from support.redis_server import redis_server, workers
from support.requirements import missing
from support.waits import wait_until

pytestmark = pytest.mark.timeout(180)

TOKEN = "metrics-test-token"


@pytest.fixture(scope="module", params=["local", "redis"])
def both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    config = server_config(tmp_path_factory.mktemp("home"), token=TOKEN)
    if request.param == "local":
        with live_server(config) as live:
            live.http.headers["Authorization"] = f"Bearer {TOKEN}"
            yield live
        return
    with (
        redis_server(tmp_path_factory.mktemp("redis")) as rs,
        workers(rs.url, count=2),
        live_server(replace(config, backend=rs.url)) as live,
    ):
        live.http.headers["Authorization"] = f"Bearer {TOKEN}"
        yield live


class Prometheus:
    """A real Prometheus scraping ``target`` every second; ``value`` asks its query API."""

    def __init__(self, directory: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            missing("prometheus is not installed", "apt-get install prometheus")
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: jobtrail\n"
            "    scrape_interval: 1s\n"
            f"    authorization: {{credentials: {TOKEN}}}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log = directory / "prometheus.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/query", params={"query": promql})
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        try:
            result = self.query(promql)
        except httpx.HTTPError:
            return None  # not serving yet
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float, timeout: float = 30.0) -> None:
        """Until the newest scrape says ``expected`` (a scrape a second: a few at most)."""
        seen: list[float | None] = []

        def matches() -> bool:
            seen.append(self.value(promql))
            return seen[-1] == expected

        try:
            wait_until(matches, timeout, f"{promql} == {expected}")
        except AssertionError:
            tail = self.log.read_text()[-2000:]
            raise AssertionError(f"{promql}: last {seen[-3:]}, wanted {expected}\n{tail}") from None

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


def test_prometheus_scrapes_the_server(both: Live, tmp_path: Path) -> None:
    live = both
    done = [live.submit("levels", count=20)["job_id"] for _ in range(3)]
    failed = live.submit("fail_digest")["job_id"]
    for job_id in [*done, failed]:
        live.wait(job_id)
    gate = tmp_path / "gate"
    held = live.submit("wait_for_file", path=str(gate))["job_id"]
    live.wait(held, statuses=("running",))
    following = threading.Event()
    stop = threading.Event()

    def follow() -> None:  # one follower of the running job's live log
        with live.http.stream("GET", f"/api/jobs/{held}/logs/stream") as response:
            following.set()
            for _ in response.iter_bytes():
                if stop.is_set():
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    prometheus = Prometheus(tmp_path, live.url.removeprefix("http://"))
    try:
        assert following.wait(10)
        prometheus.wait_for('up{job="jobtrail"}', 1.0)
        prometheus.wait_for('jobtrail_jobs_ended_total{status="completed",type="levels"}', 3.0)
        prometheus.wait_for('jobtrail_jobs_ended_total{status="failed",type="fail_digest"}', 1.0)
        prometheus.wait_for('jobtrail_jobs{status="running",type="wait_for_file"}', 1.0)
        prometheus.wait_for("jobtrail_workers_busy", 1.0)
        prometheus.wait_for("jobtrail_workers", 2.0)
        prometheus.wait_for('jobtrail_job_duration_seconds_count{type="levels"}', 3.0)
        prometheus.wait_for('jobtrail_job_duration_seconds_bucket{type="levels",le="+Inf"}', 3.0)
        prometheus.wait_for("jobtrail_streams_open", 1.0)
        prometheus.wait_for("jobtrail_stream_followers", 1.0)
        prometheus.wait_for("jobtrail_records_dropped_total", 0.0)
        prometheus.wait_for("jobtrail_export_dropped_total", 0.0)
        captured = prometheus.value("jobtrail_records_captured_total")
        assert captured is not None and captured >= 3 * 20, captured
        # the job ends: it leaves the running gauge and joins the counters, and its stream closes
        gate.write_text("go")
        live.wait(held)
        prometheus.wait_for('jobtrail_jobs_ended_total{type="wait_for_file"}', 1.0)
        prometheus.wait_for("jobtrail_workers_busy", 0.0)
        prometheus.wait_for("jobtrail_stream_followers", 0.0)
        assert prometheus.query('jobtrail_jobs{type="wait_for_file"}') == []
    finally:
        stop.set()
        gate.write_text("go")
        prometheus.close()
        follower.join(10)


def test_listener_lag_is_the_age_of_what_waits(both: Live, tmp_path: Path) -> None:
    """A store that cannot write (its lock held, as a hung disk would) while a job logs:
    the listener (or stream ingest) falls behind, and the lag Prometheus sees grows past a
    second; written again, it is back to 0 once the job ended."""
    live = both
    prometheus = Prometheus(tmp_path, live.url.removeprefix("http://"))
    job_id = ""
    try:
        prometheus.wait_for('up{job="jobtrail"}', 1.0)
        prometheus.wait_for("jobtrail_listener_lag_seconds", 0.0)
        job_id = live.submit("chatty", count=10**6, burst=10, pause=0.01)["job_id"]
        wait_until(lambda: live.logs(job_id, tail=1)["latest_seq"] > 0, 30, "the job's lines")
        with live.server.store._write_lock:  # what a hung disk does to the writer
            prometheus.wait_for("jobtrail_listener_lag_seconds > bool 1", 1.0)
        live.http.post(f"/api/jobs/{job_id}/cancel")
        live.wait(job_id)
        prometheus.wait_for("jobtrail_listener_lag_seconds", 0.0)
    finally:
        if job_id and live.job(job_id)["status"] in ("pending", "running"):
            live.http.post(f"/api/jobs/{job_id}/cancel")
        prometheus.close()


def test_metrics_need_the_token_unless_public(tmp_path: Path) -> None:
    config = server_config(tmp_path / "home", token=TOKEN, workers=1)
    with TestClient(create_app(config)) as client:
        assert client.get("/metrics").status_code == 401
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "jobtrail_workers 1.0" in answer.text
        assert "process_cpu_seconds_total" in answer.text
        assert client.get("/api/jobs").status_code == 401
    config = replace(config, home=tmp_path / "home2")
    with TestClient(create_app(config, metrics_public=True)) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/api/jobs").status_code == 401, "only /metrics is public"


def test_each_ended_job_is_folded_once(fresh: Live) -> None:
    """Scrapes reread the last seconds of ends (a job's end may be written after a later
    one's): a job seen twice is still counted once, and jobs ended before the fold began
    are not counted."""
    before = fresh.submit("levels", count=1)["job_id"]
    fresh.wait(before)
    metrics = JobMetrics(fresh.server)
    ids = [fresh.submit("levels", count=1)["job_id"] for _ in range(5)]
    for job_id in ids[:2]:
        fresh.wait(job_id)
    first = metrics.snapshot()
    for job_id in ids:
        fresh.wait(job_id)
    for _ in range(3):
        snap = metrics.snapshot()
    assert sum(first.ended.values()) >= 2
    assert snap.ended == {("completed", "levels"): 5}
    assert sum(snap.durations["levels"].counts) == 5
    wait_until(lambda: metrics.snapshot().health.running == 0, 10, "idle workers")
    assert metrics.snapshot().ended == {("completed", "levels"): 5}
