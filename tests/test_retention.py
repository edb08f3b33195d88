"""Retention: logs of jobs that ended long ago are deleted; the job record stays."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobtrail.backends.local.records import JobDB
from jobtrail.logstore.store import JobLogStore
from jobtrail.service.retention import expire_logs
from support.live import Live, live_server, server_config
from support.waits import wait_until

pytestmark = pytest.mark.timeout(60)

HOUR = 3600.0


def finished_job(live: Live, job_type: str = "levels", **params: object) -> str:
    job = live.submit(job_type, **(params or {"count": 3}))
    done = live.wait(job["job_id"])
    assert done["status"] in ("completed", "failed"), done
    assert live.logs(job["job_id"])["total_lines"] > 0
    return str(job["job_id"])


def age(live: Live, job_id: str, hours: float) -> None:
    """Move the job's end into the past: the very value the retention rule reads."""
    live.server.records.db.update(job_id, completed_at=time.time() - hours * HOUR)


def assert_expired(live: Live, job_id: str) -> None:
    assert not live.server.store.log_path(job_id).exists(), "the log directory is gone"
    job = live.job(job_id)
    assert job["logs_expired"] is True
    assert job["recent_logs"] == []
    for fmt in ("text", "json"):
        response = live.http.get(f"/api/jobs/{job_id}/logs", params={"format": fmt})
        assert response.status_code == 410, response.text
        detail = response.json()["detail"]
        assert detail == (
            f"the logs of job {job_id!r} were deleted by retention "
            f"(older than {live.server.config.retention_hours:g} h)"
        )


def test_logs_past_retention_are_deleted_and_the_job_stays(live: Live) -> None:
    old = finished_job(live)
    failed = finished_job(live, "crash", kind="raise", lines=2)
    recent = finished_job(live)
    before = live.job(old)
    age(live, old, 73)
    age(live, failed, 100)
    age(live, recent, 71)  # inside the 72 h retention

    expired = live.server.expire_logs()
    assert old in expired and failed in expired
    assert recent not in expired

    for job_id in (old, failed):
        assert_expired(live, job_id)
    after = live.job(old)
    kept = ("job_id", "job_type", "params", "status", "progress", "result", "error", "created_at")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    assert live.job(failed)["error"].startswith("ValueError: the job went wrong (jobs_fixture")

    assert live.server.store.log_path(recent).exists()
    assert live.job(recent)["logs_expired"] is False
    assert live.logs(recent)["total_lines"] > 0

    again = live.server.expire_logs()
    assert old not in again and failed not in again, "expired once, not on every run"
    listed = live.http.get("/api/jobs", params={"limit": 1000}).json()["jobs"]
    assert next(j for j in listed if j["job_id"] == old)["logs_expired"] is True


def test_explicit_hours_override_the_configured_retention(live: Live) -> None:
    job_id = finished_job(live)
    age(live, job_id, 2)
    assert job_id not in live.server.expire_logs()
    assert job_id not in live.server.expire_logs(older_than_hours=3)
    assert job_id in live.server.expire_logs(older_than_hours=1)
    assert_expired(live, job_id)


def test_a_running_job_is_never_expired(live: Live, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = live.submit("wait_for_file", path=str(gate))
    job_id = job["job_id"]
    live.wait(job_id, statuses=("running",))
    wait_until(lambda: live.logs(job_id)["total_lines"] > 0, what="the job's first line")
    long_ago = time.time() - 1000 * HOUR
    live.server.records.db.update(job_id, started_at=long_ago, completed_at=long_ago)
    try:
        assert job_id not in live.server.expire_logs(older_than_hours=0)
        assert job_id not in expire_logs(live.server.records, live.server.store, 0)
        assert live.server.store.log_path(job_id).exists()
        assert live.job(job_id)["logs_expired"] is False
    finally:
        gate.touch()
    done = live.wait(job_id)
    assert done["status"] == "completed"
    assert live.logs(job_id)["total_lines"] >= 1, "the log written while running is all there"


def test_a_pending_job_is_never_expired(live: Live, tmp_path: Path) -> None:
    gates = [tmp_path / f"gate{i}" for i in range(2)]
    blockers = [live.submit("wait_for_file", path=str(gate)) for gate in gates]  # both workers
    try:
        for blocker in blockers:
            live.wait(blocker["job_id"], statuses=("running",))
        pending = live.submit("levels", count=1)
        assert live.job(pending["job_id"])["status"] == "pending"
        live.server.records.db.update(pending["job_id"], completed_at=time.time() - 1000 * HOUR)
        assert pending["job_id"] not in live.server.expire_logs(older_than_hours=0)
    finally:
        for gate in gates:
            gate.touch()
    assert live.wait(pending["job_id"])["status"] == "completed"
    assert live.logs(pending["job_id"])["total_lines"] > 0


def test_dry_run_deletes_nothing(live: Live) -> None:
    job_id = finished_job(live)
    age(live, job_id, 1000)
    lines = live.logs(job_id)["logs"]

    assert job_id in live.server.expire_logs(dry_run=True)
    assert job_id in expire_logs(live.server.records, live.server.store, 72, dry_run=True)
    assert live.server.store.log_path(job_id).exists()
    assert live.job(job_id)["logs_expired"] is False
    assert live.logs(job_id)["logs"] == lines

    assert job_id in live.server.expire_logs()
    assert_expired(live, job_id)


# -- jobtrail cleanup -----------------------------------------------------------------------
def cleanup(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", "cleanup", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cleanup_command_on_a_stopped_servers_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with live_server(server_config(home)) as live:
        ended = [finished_job(live), finished_job(live, "crash", kind="raise", lines=1)]
        log_dirs = [live.server.store.log_path(job_id) for job_id in ended]
    assert all(path.exists() for path in log_dirs)

    kept = cleanup(home, "--older-than", "1")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.splitlines() == ["deleted the logs of 0 job(s) older than 1 h"]

    dry = cleanup(home, "--older-than", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == "would delete the logs of 2 job(s) older than 0 h"
    assert sorted(line.strip() for line in lines[1:]) == sorted(ended)
    assert all(path.exists() for path in log_dirs), "--dry-run deletes nothing"

    done = cleanup(home, "--older-than", "0")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "deleted the logs of 2 job(s) older than 0 h"
    assert sorted(line.strip() for line in lines[1:]) == sorted(ended)
    assert not any(path.exists() for path in log_dirs)
    db = JobDB(home / "jobs.sqlite3")
    try:
        for job_id in ended:
            job = db.get(job_id)
            assert job is not None and job.logs_expired
    finally:
        db.close()

    again = cleanup(home, "--older-than", "0")
    assert again.stdout.splitlines() == ["deleted the logs of 0 job(s) older than 0 h"]

    with live_server(server_config(home)) as live:
        for job_id in ended:
            assert_expired(live, job_id)


def test_cleanup_of_a_missing_home_is_an_error(tmp_path: Path) -> None:
    done = cleanup(tmp_path / "nowhere", "--older-than", "0")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"jobtrail: no jobtrail home at {tmp_path / 'nowhere'} (set --home or JOBTRAIL_HOME)"
    )
    assert not (tmp_path / "nowhere").exists(), "cleanup creates no home"


def test_expire_logs_on_a_home_without_a_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with live_server(server_config(home)) as live:
        job_id = finished_job(live)
    db = JobDB(home / "jobs.sqlite3")
    store = JobLogStore(home / "logs")
    try:
        db.update(job_id, completed_at=time.time() - 10 * HOUR)
        assert expire_logs(db, store, 11) == []
        assert expire_logs(db, store, 9, dry_run=True) == [job_id]
        assert store.exists(job_id)
        assert expire_logs(db, store, 9) == [job_id]
        assert not store.exists(job_id)
        assert expire_logs(db, store, 9) == []
    finally:
        store.close()
        db.close()


# -- the server's retention task ------------------------------------------------------------
def test_a_server_expires_old_logs_at_startup(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with live_server(server_config(home)) as live:
        old, recent = finished_job(live), finished_job(live)
    db = JobDB(home / "jobs.sqlite3")
    try:
        db.update(old, completed_at=time.time() - 2 * HOUR)
    finally:
        db.close()

    with live_server(server_config(home, retention_hours=1.0)) as live:
        wait_until(lambda: live.job(old)["logs_expired"], what="the startup retention run")
        assert_expired(live, old)
        assert "older than 1 h" in live.http.get(f"/api/jobs/{old}/logs").json()["detail"]
        assert live.job(recent)["logs_expired"] is False
        assert live.logs(recent)["total_lines"] > 0
