"""Distributed mode: the job's process is the work-horse's child, and holds nothing of Redis.

The horse (RQ's fork, which needs Redis) only relays; the job runs in a fork of it that closed
its copies of the Redis sockets and forgot the URL and its password (backends/redis/horse.py,
_forget.py). A Redis server that requires a password shows whether any copy is left where a
job can look (``tests/jobpkg/reach.py``). Local mode has no Redis: see tests/test_isolation.py.
``jobtrail worker --job-user``: the job's process becomes USER, and the hostile job type
(tests/jobpkg/hostile.py) gets nowhere: not the password in /proc or in the memory of the
worker's processes, not the home, its database or another job's log, no signal or ptrace.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from support.live import Live, live_server, server_config
from support.redis_server import TESTS, WORKER_COMMAND, Workers, redis_server
from support.sandbox import job_user

pytestmark = pytest.mark.timeout(120)
PASSWORD = "pw-e2-7f3a9c1d5b"
JOBS = ("jobs_fixture", "jobpkg.reach", "jobpkg.hostile")
ATTACKS = (
    "proc_environ",
    "proc_cmdline",
    "own_environ",
    "own_memory",
    "proc_mem",
    "ptrace",
    "signal",
    "read_db",
    "list_home",
    "read_log",
)
WORKER = [sys.executable, "-m", *WORKER_COMMAND, "--jobs-module", "jobs_fixture"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with redis_server(tmp_path_factory.mktemp("redis"), password=PASSWORD) as rs:
        workers = Workers(rs.url, count=0)
        try:
            workers.add(1, "--jobs-module", "jobpkg.reach")
            workers.wait_ready(1)
            config = server_config(tmp_path_factory.mktemp("home"), job_modules=JOBS)
            with live_server(replace(config, backend=rs.url)) as running:
                yield running
        finally:
            workers.stop()


def test_the_job_process_holds_no_redis_connection_url_or_password(live: Live) -> None:
    job = live.submit("redis_reach", needle_hex=PASSWORD.encode().hex())
    done = live.wait(job["job_id"])
    assert done["status"] == "completed", (done["error"], live.all_records(job["job_id"])[-5:])
    assert done["result"] == {"found": [], "open_connections": 0, "socket_fds": 0}


def test_the_relay_keeps_capture_order_and_the_end(live: Live) -> None:
    """What the job logs and prints arrives through the horse, gap-free, before its end."""
    job = live.submit("sleep", seconds=0, steps=3)
    done = live.wait(job["job_id"])
    assert done["status"] == "completed", done
    seqs = [r["seq"] for r in live.all_records(job["job_id"])]
    assert seqs and seqs == list(range(1, len(seqs) + 1))


# -- jobtrail worker --job-user ----------------------------------------------------------------
@pytest.fixture(scope="module")
def as_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, Workers, str]]:
    user = job_user()
    with redis_server(tmp_path_factory.mktemp("redis"), password=PASSWORD) as rs:
        workers = Workers(rs.url, count=0)
        try:
            modules = ("--jobs-module", "jobpkg.reach", "--jobs-module", "jobpkg.hostile")
            workers.add(1, *modules, "--job-user", user)
            workers.wait_ready(1)
            home = tmp_path_factory.mktemp("home")
            config = replace(server_config(home, job_modules=JOBS), backend=rs.url)
            with live_server(config) as running:
                yield running, workers, str(home)
        finally:
            workers.stop()


def test_under_job_user_the_job_reaches_neither_the_worker_nor_the_home(
    as_user: tuple[Live, Workers, str],
) -> None:
    """The job's process runs as USER, with a private TMPDIR: the worker's processes
    (root's), the server's home and the Redis password are out of its reach; ordinary
    jobs and capture still work."""
    live, workers, home = as_user
    worker = psutil.Process(workers.procs[0].pid)
    targets = [worker.pid, *(p.pid for p in worker.children())]  # jobtrail worker, RQ worker
    done = live.wait(live.submit("who_am_i", target_pids=targets, home=home)["job_id"])
    assert done["status"] == "completed", (done["error"], live.all_records(done["job_id"])[-3:])
    assert done["result"]["uid"] == pwd.getpwnam(job_user()).pw_uid
    assert "/jobtrail-jobs-" in done["result"]["tmpdir"]
    assert done["result"]["reached"] == []
    reach = live.wait(live.submit("redis_reach", needle_hex=PASSWORD.encode().hex())["job_id"])
    assert reach["result"] == {"found": [], "open_connections": 0, "socket_fds": 0}
    sleep = live.wait(live.submit("sleep", seconds=0, steps=2)["job_id"])
    assert sleep["status"] == "completed" and live.all_records(sleep["job_id"])


def test_under_job_user_the_hostile_job_gets_nowhere(as_user: tuple[Live, Workers, str]) -> None:
    """Every attack fails: the targets are jobtrail worker, its RQ worker and the server
    (this process, which holds the password in its backend URL); the log is a real one."""
    live, workers, home = as_user
    earlier = live.wait(live.submit("sleep", seconds=0, steps=1)["job_id"])
    worker = psutil.Process(workers.procs[0].pid)
    targets = [os.getpid(), worker.pid, *(p.pid for p in worker.children())]
    done = live.wait(
        live.submit(
            "hostile",
            needles_hex=[PASSWORD.encode().hex()],
            target_pids=targets,
            home=home,
            log_path=str(Path(home) / "logs" / earlier["job_id"]),
        )["job_id"]
    )
    assert done["status"] == "completed", (done["error"], live.all_records(done["job_id"])[-3:])
    worked = {attack: done["result"][attack] for attack in ATTACKS if done["result"][attack]["ok"]}
    assert not worked, worked


def test_job_user_is_refused_clearly_when_it_does_not_exist(tmp_path: Path) -> None:
    done = subprocess.run(
        [*WORKER, "--backend", "redis://127.0.0.1:1/0", "--job-user", "no-such-user-e2"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=TESTS,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])},
    )
    assert done.returncode == 2, done
    assert "--job-user 'no-such-user-e2': no such user on this host" in done.stderr, done.stderr
