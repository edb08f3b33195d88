"""Faults and overload: floods, a full disk, a deep queue. Each claim in the README's
guarantees section points at one of these (or at test_executor / test_restart)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from support.live import Live, live_server
from support.live import server_config as make_config
from support.requirements import missing
from support.waits import epoch

pytestmark = pytest.mark.timeout(180)


def test_flood_keeps_worker_memory_bounded_and_loses_nothing(fresh: Live) -> None:
    job = fresh.submit("flood", records=300_000)
    fresh.wait(job["job_id"], statuses=("running", "completed"))
    peak = 0
    baseline = None
    while True:
        pid = fresh.server.execution.running_pids().get(job["job_id"])
        if pid is None:
            break
        try:
            rss = psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            break
        baseline = baseline or rss
        peak = max(peak, rss)
        time.sleep(0.02)
    done = fresh.wait(job["job_id"], timeout=120)
    assert done["status"] == "completed"
    latest = fresh.logs(job["job_id"], tail=1, format="json")["latest_seq"]
    assert latest + done["records_dropped"] >= 300_000, "every record is written or counted"
    assert done["records_dropped"] == 0, "back-pressure, not loss, at this rate"
    if baseline:
        assert peak - baseline < 64 * 1024 * 1024, f"worker grew by {(peak - baseline) >> 20} MiB"


def test_two_hundred_jobs_on_two_workers_all_run_in_order(fresh: Live) -> None:
    jobs = [fresh.submit("sleep", seconds=0, steps=1) for _ in range(200)]
    done = [fresh.wait(j["job_id"], timeout=120) for j in jobs]
    assert [d["status"] for d in done] == ["completed"] * 200
    starts = [epoch(d["started_at"]) for d in done]
    # FIFO dispatch: job i is handed out only after job i-2 was; their start times, stamped
    # when the listener reads each worker's "start", may differ by that latency
    assert all(starts[i] >= starts[i - 2] - 0.25 for i in range(2, 200)), "submission order"
    assert fresh.http.get("/api/jobs", params={"limit": 1000}).json()["count"] >= 200


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """HOME/logs on a 1 MiB tmpfs: a disk that fills up, for real."""
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(logs)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = " ".join(mounted.stderr.decode().split())
        missing(f"cannot mount a small tmpfs here ({reason})", "run the tests as root")
    try:
        yield tmp_path / "home"
    finally:
        subprocess.run(["umount", "-l", str(logs)], check=False)


def test_full_disk_cuts_the_log_and_nothing_else_breaks(small_disk: Path) -> None:
    with live_server(make_config(small_disk)) as live:
        answers: list[int] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                answers.append(live.http.get("/api/health").status_code)
                time.sleep(0.05)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            job = live.submit("flood", records=40_000, payload=100)
            done = live.wait(job["job_id"], timeout=120)
        finally:
            stop.set()
            poller.join()
        assert done["status"] == "completed"
        assert done["records_dropped"] > 0
        assert "disk full" in (done["log_note"] or "")
        assert set(answers) == {200}, "the server kept answering"
        assert done["recent_logs"], "the newest lines are still shown from memory"
        page = live.logs(job["job_id"], tail=5)
        assert page["total_lines"] == 5
        again = live.submit("sleep", seconds=0, steps=1)
        assert live.wait(again["job_id"])["status"] == "completed"
