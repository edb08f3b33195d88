"""forget_redis against what a collection that has not come yet leaves (distributed mode).

``jobtrail worker``'s start check (``connect(url).ping()``) drops a client at once; its
pool and connection are cyclic garbage, each holding a password object of its own, until the
gc runs. When it has not by the time a horse forks the job's process (the gc's timing moves
with everything a process allocates: coverage's tracer made it fail in CI), the job found
them (``dict['password']``, 5 times). The interpreter here disables the gc to make that
moment certain; tests/test_isolation_redis.py checks the whole worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.redis_server import TESTS, redis_server

pytestmark = pytest.mark.timeout(120)
PASSWORD = "pw-x3-5e1b7c02d4"
PROCESS = r"""
import gc, json, multiprocessing, os, sys
from jobtrail.backends.redis import keys
from jobtrail.backends.redis._forget import forget_redis
from jobpkg.reach import redis_reach

def main(url):
    gc.disable()  # no collection until the fork, as when the gc has not run yet
    keys.connect(url).ping()  # run_workers' start check: dropped at once
    keys.connect(url).ping()  # and another, as a retried one would
    conn = keys.connect(url)  # the RQ worker's, alive
    conn.ping()
    pid = os.fork()
    if pid == 0:  # as the horse's job process: forget, then look
        multiprocessing.current_process()._args = ()
        forget_redis(url)
        del url
        print(json.dumps(redis_reach(sys.argv[1])), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    print(json.dumps({"garbage": gc.collect()}), flush=True)

main(sys.stdin.readline().strip())
"""


def test_the_job_process_finds_no_password_of_a_dropped_client(tmp_path: Path) -> None:
    with redis_server(tmp_path, password=PASSWORD) as rs:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}
        done = subprocess.run(
            [sys.executable, "-c", PROCESS, PASSWORD.encode().hex()],
            input=rs.url + "\n",
            capture_output=True,
            text=True,
            env=env,
            cwd=TESTS,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    reach, parent = map(json.loads, done.stdout.splitlines())
    assert parent["garbage"] > 0  # the dropped clients were there, uncollected, at the fork
    assert reach == {"found": [], "open_connections": 0, "socket_fds": 0}
