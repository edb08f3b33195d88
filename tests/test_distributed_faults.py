"""Faults in distributed mode, with real processes: a worker host killed, Redis restarted,
an API server restarted while jobs run; and two API servers reading at once."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import redis

from jobtrail.backends.redis import keys as b
from support.live import Live, live_server
from support.live import server_config as make_config
from support.redis_server import redis_server, workers
from support.waits import wait_until

pytestmark = pytest.mark.timeout(180)


def _steps(live: Live, job_id: str) -> list[str]:
    return [r["message"] for r in live.all_records(job_id) if r["message"].startswith("step ")]


def _gap_free(live: Live, job_id: str) -> list[dict[str, object]]:
    records = live.all_records(job_id)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    return records


def test_a_killed_worker_host_fails_its_job_with_the_cause_in_time(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis") as rs,
        workers(rs.url, count=2) as hosts,
        live_server(replace(make_config(tmp_path / "home"), backend=rs.url)) as live,
    ):
        job = live.submit("sleep", seconds=60, steps=600)
        live.wait(job["job_id"], statuses=("running",))
        wait_until(lambda: len(_steps(live, job["job_id"])) >= 3, what="some records")
        client = redis.Redis.from_url(rs.url)
        rq_worker = client.get(b.heartbeat_key(job["job_id"])).decode()
        rq_pid = int(rq_worker.split(".")[-2])
        host = next(p for p in hosts.procs if p.pid == psutil.Process(rq_pid).ppid())
        survivor = next(p for p in hosts.procs if p is not host)
        before = len(_steps(live, job["job_id"]))
        killed_at = time.monotonic()
        hosts.kill_host(host)
        done = live.wait(job["job_id"], timeout=b.HOST_LOST_WITHIN + 10)
        took = time.monotonic() - killed_at
        assert done["status"] == "failed"
        assert "worker host stopped answering" in done["error"], done["error"]
        assert rq_worker in done["error"], "the error names the worker that vanished"
        assert took <= b.HOST_LOST_WITHIN, f"took {took:.1f}s"
        assert len(_steps(live, job["job_id"])) >= before, "records that arrived are kept"
        _gap_free(live, job["job_id"])
        assert survivor.poll() is None
        after = live.submit("sleep", seconds=0.1, steps=1)
        assert live.wait(after["job_id"])["status"] == "completed", "the other host serves on"


def test_redis_restarted_mid_job_with_aof_keeps_state_and_every_record(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis", appendonly=True) as rs,
        workers(rs.url, count=1),
        live_server(replace(make_config(tmp_path / "home"), backend=rs.url)) as live,
    ):
        earlier = live.submit("levels", count=20)
        assert live.wait(earlier["job_id"])["status"] == "completed"
        job = live.submit("sleep", seconds=4, steps=40)
        wait_until(lambda: len(_steps(live, job["job_id"])) >= 5, what="records before")
        rs.restart()  # SIGTERM (a clean stop writes the AOF), then start on the same port
        done = live.wait(job["job_id"], timeout=60)
        assert done["status"] == "completed", done
        assert _steps(live, job["job_id"]) == [f"step {i} of 40 done" for i in range(1, 41)]
        _gap_free(live, job["job_id"])
        kept = live.job(earlier["job_id"])
        assert kept["status"] == "completed" and len(kept["recent_logs"]) == 25
        listed = {j["job_id"] for j in live.http.get("/api/jobs").json()["jobs"]}
        assert {earlier["job_id"], job["job_id"]} <= listed
        again = live.submit("sleep", seconds=0.1, steps=1)
        assert live.wait(again["job_id"], timeout=60)["status"] == "completed"


def test_redis_restarted_without_persistence_loses_job_state(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis") as rs,
        workers(rs.url, count=1),
        live_server(replace(make_config(tmp_path / "home"), backend=rs.url)) as live,
    ):
        job = live.submit("levels", count=5)
        assert live.wait(job["job_id"])["status"] == "completed"
        rs.restart()
        assert live.http.get(f"/api/jobs/{job['job_id']}").status_code == 404
        assert (tmp_path / "home" / "logs" / job["job_id"]).is_dir(), "the files stay on disk"
        again = live.submit("sleep", seconds=0.1, steps=1)
        assert live.wait(again["job_id"], timeout=60)["status"] == "completed"


def test_two_api_servers_and_a_restarted_one_see_the_same_jobs_and_logs(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis") as rs,
        workers(rs.url, count=2),
        live_server(replace(make_config(tmp_path / "b"), backend=rs.url)) as other,
    ):
        config = replace(make_config(tmp_path / "a"), backend=rs.url)
        with live_server(config) as first:
            running = first.submit("sleep", seconds=2.5, steps=25)
            wait_until(lambda: len(_steps(first, running["job_id"])) >= 3, what="records")
            assert other.job(running["job_id"])["status"] == "running"
        # server A is down: the job goes on, and another one runs from start to end
        while_down = other.submit("levels", count=500)
        assert other.wait(while_down["job_id"])["status"] == "completed"
        assert other.wait(running["job_id"])["status"] == "completed"
        with live_server(config) as restarted:
            for job_id in (running["job_id"], while_down["job_id"]):
                done = restarted.wait(job_id)
                assert done["status"] == "completed"
                assert restarted.all_records(job_id) == other.all_records(job_id)
                _gap_free(restarted, job_id)
            assert len(_steps(restarted, running["job_id"])) == 25
            mine = {j["job_id"] for j in restarted.http.get("/api/jobs").json()["jobs"]}
            theirs = {j["job_id"] for j in other.http.get("/api/jobs").json()["jobs"]}
            assert mine == theirs


def _lose_delivery(client: redis.Redis, job_id: str) -> None:
    """What a worker leaves when it takes a job off the queue and dies before the job starts:
    the job out of the queue, marked started, in the started registry with its lease run out."""
    from rq import Queue
    from rq.job import Job as RQJob
    from rq.job import JobStatus as RQStatus
    from rq.registry import StartedJobRegistry

    queue = Queue(b.QUEUE, connection=client)
    rq_job = RQJob.fetch(job_id, connection=client)
    queue.remove(rq_job)
    rq_job.set_status(RQStatus.STARTED)
    # the worker's execution entry, its lease already run out (as a dead worker leaves it)
    registry = StartedJobRegistry(queue=queue)
    client.zadd(registry.key, {f"{job_id}:lost-execution": time.time() - 60})


def test_a_delivery_lost_before_start_is_retried_once_then_failed(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis") as rs,
        live_server(replace(make_config(tmp_path / "home"), backend=rs.url)) as live,
    ):
        client = redis.Redis.from_url(rs.url)
        retried = live.submit("sleep", seconds=0.1, steps=1)
        _lose_delivery(client, retried["job_id"])
        wait_until(
            lambda: (
                live.job(retried["job_id"])["status"] == "pending"
                and client.lpos(f"rq:queue:{b.QUEUE}", retried["job_id"]) is not None
            ),
            what="the lost job back in the queue",
        )
        twice = live.submit("sleep", seconds=0.1, steps=1)
        _lose_delivery(client, twice["job_id"])
        wait_until(lambda: client.lpos(f"rq:queue:{b.QUEUE}", twice["job_id"]) is not None)
        _lose_delivery(client, twice["job_id"])
        failed = live.wait(twice["job_id"], timeout=30)
        assert failed["status"] == "failed" and "died before it started" in failed["error"]
        with workers(rs.url, count=1):
            assert live.wait(retried["job_id"], timeout=60)["status"] == "completed"
