"""The same API checks against both backends: the local pool, and Redis + RQ workers.

In the ``redis`` variant a real redis-server runs on a free loopback port and two
``jobtrail worker`` processes (one job at a time each) stand for two hosts.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import pytest
from test_stream import SHUTDOWN_NOISE, all_events, records, serve_process, stop_while_followed

from support.live import Live, live_server
from support.live import server_config as make_config
from support.modes import MODES, serve_in_mode
from support.redis_server import redis_server, workers
from support.waits import pid_gone, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", params=MODES)
def both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("home")
    with serve_in_mode(request.param, make_config(home), tmp_path_factory) as live:
        yield live


def test_submit_get_list_and_progress(both: Live) -> None:
    job = both.submit("sleep", seconds=0.6, steps=3)
    assert job["status"] in ("pending", "running")
    running = both.wait(job["job_id"], statuses=("running", "completed"))
    assert running["started_at"]
    done = both.wait(job["job_id"])
    assert done["status"] == "completed" and done["result"] == {"slept": 0.6}
    assert done["progress"] == 100 and done["current_step"] == "step 3/3"
    assert done["recent_logs"][0]["message"] == "step 3 of 3 done"
    listing = both.http.get("/api/jobs", params={"type": "sleep", "limit": 5}).json()
    assert listing["jobs"][0]["job_id"] == job["job_id"], "newest first"
    completed = both.http.get("/api/jobs", params={"status": "completed"}).json()["jobs"]
    assert job["job_id"] in {j["job_id"] for j in completed}
    assert all(j["status"] == "completed" for j in completed)
    health = both.http.get("/api/health").json()
    assert health["status"] == "ok" and health["workers_alive"] == 2


def test_logs_tail_level_and_after(both: Live) -> None:
    job = both.submit("levels", errors_every=100, count=1000)
    both.wait(job["job_id"])
    page = both.logs(job["job_id"], level="ERROR", tail=5, format="json")
    assert [r["message"] for r in page["logs"]][-3:] == ["error 700", "error 800", "error 900"]
    assert {r["level"] for r in page["logs"]} <= {"ERROR", "CRITICAL"}
    text = both.logs(job["job_id"], tail=2)["logs"]
    assert text[-1].endswith("INFO: info 999")
    seen: list[int] = []
    after = 0
    while True:
        page = both.logs(job["job_id"], after=after, tail=300, format="json")
        seen += [r["seq"] for r in page["logs"]]
        if not page["more"]:
            break
        after = page["last_seq"]
    assert seen == list(range(1, page["latest_seq"] + 1)), "gap-free, no repeats"


def test_threads_keep_order_and_barrier_holds(both: Live) -> None:
    jobs = [both.submit("log_threads", threads=3, records=2000, tag=f"j{i}") for i in range(2)]
    for job in jobs:
        done = both.wait(job["job_id"], timeout=90)
        assert done["status"] == "completed"
        # the first response that shows the job terminal already has its whole log
        assert done["recent_logs"][0]["seq"] == both.logs(job["job_id"], tail=1)["latest_seq"]
        records = both.all_records(job["job_id"])
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
        per_thread: dict[str, list[int]] = {}
        for record in records:
            if record["logger"] == "fixture":
                tag, t, n = re.fullmatch(r"(\w+) t=(\d) n=(\d+)", record["message"]).groups()
                assert tag == job["params"]["tag"]
                per_thread.setdefault(t, []).append(int(n))
        assert all(ns == list(range(2000)) for ns in per_thread.values()) and per_thread


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("sigkill", r"job process died: killed by SIGKILL"),
        ("exit", r"exited with code 3"),
        ("raise", r"^ValueError: the job went wrong \(jobs_fixture\.py:\d+ in crash\)$"),
        ("sysexit", r"sys\.exit\(4\)"),
    ],
)
def test_crashes_fail_only_their_job_and_say_why(both: Live, kind: str, error: str) -> None:
    crashed = both.submit("crash", kind=kind)
    done = both.wait(crashed["job_id"])
    assert done["status"] == "failed"
    assert re.search(error, done["error"]), done["error"]
    messages = [r["message"] for r in both.all_records(crashed["job_id"])]
    assert [m for m in messages if m.startswith("before the crash")] == [
        f"before the crash {i}" for i in range(5)
    ]
    after = both.submit("sleep", seconds=0.05, steps=1)
    assert both.wait(after["job_id"])["status"] == "completed"


def test_cancel_running_stops_the_whole_tree(both: Live) -> None:
    job = both.submit("process_tree", seconds=60)
    both.wait(job["job_id"], statuses=("running",))

    def tree() -> dict[str, int]:
        found = {}
        for record in both.all_records(job["job_id"]):
            match = re.fullmatch(r"(child|grandchild) (\d+)", record["message"])
            if match:
                found[match[1]] = int(match[2])
        return found

    wait_until(lambda: len(tree()) == 2, what="child and grandchild started")
    pids = tree()
    job_pid = psutil.Process(pids["child"]).ppid()
    assert both.http.post(f"/api/jobs/{job['job_id']}/cancel").status_code == 200
    done = both.wait(job["job_id"])
    assert done["status"] == "cancelled"
    for pid in pids.values():
        wait_until(lambda pid=pid: pid_gone(pid), what=f"process {pid} gone")
    if both.server.config.backend != "local":
        wait_until(lambda: pid_gone(job_pid), what="the work-horse gone")
    assert both.http.post(f"/api/jobs/{job['job_id']}/cancel").status_code == 409


def test_cancel_of_a_running_job_answers_that_it_is_being_cancelled(
    both: Live, tmp_path: Path
) -> None:
    job = both.submit("slow_to_stop", path=str(tmp_path / "never"), cleanup=1.5)
    job_id = job["job_id"]
    both.wait(job_id, statuses=("running",))
    assert both.job(job_id)["cancel_requested"] is False
    answer = both.http.post(f"/api/jobs/{job_id}/cancel")
    assert answer.status_code == 200
    assert answer.json()["status"] == "running" and answer.json()["cancel_requested"] is True
    shown = both.job(job_id)  # its finally block takes 1.5 s: still stopping
    assert shown["status"] == "running" and shown["cancel_requested"] is True
    listed = both.http.get("/api/jobs", params={"type": "slow_to_stop"}).json()["jobs"]
    assert next(j for j in listed if j["job_id"] == job_id)["cancel_requested"] is True
    again = both.http.post(f"/api/jobs/{job_id}/cancel")
    assert again.status_code == 200, "asking again while it stops is not a conflict"
    assert again.json()["status"] == "running" and again.json()["cancel_requested"] is True
    done = both.wait(job_id)
    assert done["status"] == "cancelled" and done["cancel_requested"] is False
    messages = [r["message"] for r in both.all_records(job_id)]
    assert "cleaned up" in messages, "the second cancel did not cut the job's cleanup"
    assert messages[-1] == "job cancelled: stopping it and its child processes"
    assert both.http.post(f"/api/jobs/{job_id}/cancel").status_code == 409


def test_cancel_pending_never_runs(both: Live, tmp_path: Path) -> None:
    gate = tmp_path / "gate"  # the blockers hold both workers until the cancel was answered
    blockers = [both.submit("wait_for_file", path=str(gate)) for _ in range(2)]
    for blocker in blockers:
        both.wait(blocker["job_id"], statuses=("running",))
    try:
        pending = both.submit("sleep", seconds=0.1)
        answer = both.http.post(f"/api/jobs/{pending['job_id']}/cancel")
    finally:
        gate.touch()
    assert answer.status_code == 200
    assert answer.json()["status"] == "cancelled", "the answer is what the cancel did"
    assert answer.json()["cancel_requested"] is False
    done = both.wait(pending["job_id"])
    assert done["status"] == "cancelled" and done["started_at"] is None
    for blocker in blockers:
        assert both.wait(blocker["job_id"])["status"] == "completed"
    assert both.job(pending["job_id"])["started_at"] is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"type": "typed", "params": {"count": "many"}}, "count"),
        ({"type": "typed", "params": {"count": 1, "colour": "red"}}, "colour: unknown parameter"),
        ({"type": "nope", "params": {}}, "known types:"),
        ({"type": "typed", "params": {"count": "3"}}, "count: Input should be a valid integer"),
        ({"type": "typed", "params": {"count": True}}, "(got a boolean)"),
        ({"type": "ansible_playbook", "params": {}}, "playbook: required parameter is missing"),
    ],
)
def test_bad_input_is_422(both: Live, body: object, fragment: str) -> None:
    response = both.http.post("/api/jobs", json=body)
    assert response.status_code == 422 and fragment in response.json()["detail"]


def test_unknown_ids_are_404(both: Live) -> None:
    for path in ("/api/jobs/sleep-0123456789ab", "/api/jobs/nope/logs"):
        assert both.http.get(path).status_code == 404
    assert both.http.post("/api/jobs/sleep-0123456789ab/cancel").status_code == 404


def test_secrets_are_masked_in_output(both: Live, tmp_path: Path) -> None:
    job = both.submit("leaky", user="ann", password="hunter2-secret")
    done = both.wait(job["job_id"])
    assert done["params"]["password"] == "********"
    text = "\n".join(both.logs(job["job_id"], tail=100)["logs"])
    assert "hunter2-secret" not in text and "connecting as ann" in text


def test_a_running_job_streams_every_record_live_then_ends(both: Live) -> None:
    # redis: worker -> Redis stream -> this server's ingest -> its files -> the stream's hub
    job = both.submit("chatty", count=3000, payload=50, burst=100, pause=0.02)
    events = all_events(both, job["job_id"], {"after": 0})
    got = records(events)
    assert [r["seq"] for r in got] == list(range(1, 3001)), "every record once, in order"
    assert got[-1]["message"].startswith("chatty 3000 ")
    statuses = [json.loads(e.data)["status"] for e in events if e.event == "status"]
    assert "running" in statuses, "followed while it ran"
    assert json.loads(events[-1].data)["status"] == "completed"


@pytest.mark.timeout(120)
def test_stopping_an_api_server_or_a_worker_host_while_a_job_runs(tmp_path: Path) -> None:
    """An API server's SIGTERM ends its followers' streams at once and leaves the job running
    on its worker; a worker host's SIGTERM stops the job saying so, not as a cancel."""
    with redis_server(tmp_path / "redis") as rs, workers(rs.url, count=1) as hosts:
        params = {"path": str(tmp_path / "never"), "cleanup": 0.3}
        with serve_process(tmp_path / "home1", "--backend", rs.url) as (proc, url, stderr):
            job = httpx.post(f"{url}/api/jobs", json={"type": "slow_to_stop", "params": params})
            job_id = job.json()["job_id"]
            wait_until(
                lambda: httpx.get(f"{url}/api/jobs/{job_id}").json()["status"] == "running", 30
            )
            shutdown = stop_while_followed(url, proc, job_id)
            assert proc.wait(30) in (0, -signal.SIGTERM)
        assert shutdown["status"] == "running" and shutdown["reason"] == "the server is stopping"
        log = stderr.read_text()
        assert not [word for word in SHUTDOWN_NOISE if word in log], log
        with live_server(replace(make_config(tmp_path / "home2"), backend=rs.url)) as live:
            assert live.job(job_id)["status"] == "running", "the job ran on without a server"
            host = hosts.procs[0]
            host.send_signal(signal.SIGTERM)
            done = live.wait(job_id, timeout=40)
            assert done["status"] == "failed", done
            assert re.fullmatch(
                r"jobtrail worker on \S+ stopped while the job was running", done["error"]
            )
            messages = [r["message"] for r in live.all_records(job_id)]
            assert "cleaned up" in messages, "the job's finally block ran"
            assert re.fullmatch(
                r"job stopped: jobtrail worker on \S+ is shutting down", messages[-1]
            )
            assert not any("cancel" in m for m in messages), messages
            assert host.wait(20) == 0
