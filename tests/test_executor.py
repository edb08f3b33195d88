"""The pool: isolation of crashes, replacement of workers, cancel, the end-of-job barrier."""

from __future__ import annotations

import re
import signal

import psutil
import pytest

from support.live import Live
from support.waits import epoch, pid_gone, wait_until

pytestmark = pytest.mark.timeout(120)


def test_concurrent_jobs_and_threads_lose_nothing_and_mix_nothing(live: Live) -> None:
    jobs = [live.submit("log_threads", threads=4, records=2000, tag=f"job{i}") for i in range(4)]
    for job in jobs:
        done = live.wait(job["job_id"], timeout=60)
        assert done["status"] == "completed", done
        records = [r for r in live.all_records(job["job_id"]) if r["logger"] == "fixture"]
        tag = job["params"]["tag"]
        assert len(records) == 4 * 2000
        seqs = [r["seq"] for r in live.all_records(job["job_id"])]
        assert seqs == list(range(1, len(seqs) + 1)), "seq must be gap-free and ordered"
        per_thread: dict[str, list[int]] = {}
        for record in records:
            got_tag, t, n = re.fullmatch(r"(\w+) t=(\d) n=(\d+)", record["message"]).groups()
            assert got_tag == tag, "a record of another job leaked in"
            per_thread.setdefault(t, []).append(int(n))
        assert all(ns == list(range(2000)) for ns in per_thread.values()), (
            "a thread's order changed"
        )


def test_end_of_job_barrier_first_terminal_get_sees_whole_log(live: Live) -> None:
    for _ in range(5):
        job = live.submit("log_threads", threads=2, records=3000, tag="barrier")
        done = live.wait(job["job_id"], timeout=60)
        # the very first GET that reports completed must already see every record
        assert (
            done["recent_logs"][0]["seq"]
            == live.logs(job["job_id"], tail=1, format="json")["latest_seq"]
        )
        page = live.logs(job["job_id"], tail=1, format="json")
        assert page["latest_seq"] >= 6000


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("sigkill", r"killed by SIGKILL"),
        ("exit", r"exited with code 3"),
        ("raise", r"^ValueError: the job went wrong \(jobs_fixture\.py:\d+ in crash\)$"),
        ("oom", r"^MemoryError"),
        ("sysexit", r"sys\.exit\(4\)"),
    ],
)
def test_a_crash_fails_only_its_job_and_the_pool_keeps_serving(
    live: Live, kind: str, error: str
) -> None:
    bystander = live.submit("log_threads", threads=2, records=20000, tag="bystander")
    crashed = live.submit("crash", kind=kind)
    done = live.wait(crashed["job_id"])
    assert done["status"] == "failed"
    assert re.search(error, done["error"]), done["error"]
    messages = [r["message"] for r in live.all_records(crashed["job_id"])]
    assert [m for m in messages if m.startswith("before the crash")] == [
        f"before the crash {i}" for i in range(5)
    ], "records emitted before the crash are kept"
    if kind == "raise":
        assert any("Traceback" in m and "ValueError: the job went wrong" in m for m in messages)
    assert live.wait(bystander["job_id"], timeout=60)["status"] == "completed"
    assert len(live.all_records(bystander["job_id"])) >= 40000
    wait_until(lambda: live.server.health().workers_alive == 2, what="pool back to full size")
    after = live.submit("sleep", seconds=0.1, steps=2)
    assert live.wait(after["job_id"])["status"] == "completed"


def test_cancel_running_job_stops_whole_process_tree(live: Live) -> None:
    job = live.submit("process_tree", seconds=60)
    live.wait(job["job_id"], statuses=("running",))

    def tree_pids() -> dict[str, int]:
        pids = {}
        for record in live.all_records(job["job_id"]):
            match = re.fullmatch(r"(child|grandchild) (\d+)", record["message"])
            if match:
                pids[match[1]] = int(match[2])
        return pids

    wait_until(lambda: len(tree_pids()) == 2, what="child and grandchild started")
    pids = tree_pids()
    worker_pid = psutil.Process(pids["child"]).ppid()
    response = live.http.post(f"/api/jobs/{job['job_id']}/cancel")
    assert response.status_code == 200
    done = live.wait(job["job_id"])
    assert done["status"] == "cancelled"
    for pid in (*pids.values(), worker_pid):
        wait_until(lambda pid=pid: pid_gone(pid), what=f"process {pid} gone")
    again = live.http.post(f"/api/jobs/{job['job_id']}/cancel")
    assert again.status_code == 409
    assert "already ended" in again.json()["detail"]
    wait_until(lambda: live.server.health().workers_alive == 2, what="pool back to full size")


def test_cancel_pending_job_never_runs(fresh: Live) -> None:
    blockers = [fresh.submit("sleep", seconds=2, steps=2) for _ in range(2)]
    pending = fresh.submit("sleep", seconds=0.1)
    response = fresh.http.post(f"/api/jobs/{pending['job_id']}/cancel")
    assert response.status_code == 200
    done = fresh.wait(pending["job_id"])
    assert done["status"] == "cancelled"
    assert done["started_at"] is None
    for blocker in blockers:
        assert fresh.wait(blocker["job_id"])["status"] == "completed"
    assert fresh.job(pending["job_id"])["started_at"] is None


def test_jobs_run_in_submission_order(fresh: Live) -> None:
    jobs = [fresh.submit("sleep", seconds=0.01, steps=1) for _ in range(20)]
    finished = [fresh.wait(j["job_id"]) for j in jobs]
    starts = [epoch(f["started_at"]) for f in finished]
    assert all(f["status"] == "completed" for f in finished)
    # two workers: a job never starts before the one submitted two places earlier
    assert all(starts[i] >= starts[i - 2] - 0.25 for i in range(2, len(starts)))  # see test_faults


def test_worker_killed_from_outside_is_replaced(live: Live) -> None:
    job = live.submit("sleep", seconds=30, steps=30)
    live.wait(job["job_id"], statuses=("running",))
    pid = live.server.execution.running_pids()[job["job_id"]]
    psutil.Process(pid).send_signal(signal.SIGTERM)  # SIGTERM = cancel semantics inside
    psutil.Process(pid).kill()
    done = live.wait(job["job_id"])
    assert done["status"] in ("failed", "cancelled")
    wait_until(lambda: live.server.health().workers_alive == 2, what="pool back to full size")
