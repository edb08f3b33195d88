"""The job's process in distributed mode holds nothing of the worker's Redis, raw memory too.

``horse.run_job`` runs here as in RQ's work-horse, in a process that holds what an RQ worker
holds: a live client, clients dropped but not collected (``jobtrail worker``'s start check;
the gc held off, as coverage's tracer once made it in CI), freed copies of the URL. The job's
process is a fork of it that execs a fresh interpreter (``_job_image.py``), so the hostile
job's ``own_memory`` search of its raw memory finds neither the password nor the URL, where
this process's own memory holds both; ``redis_reach`` finds no copy and no socket; a task
larger than a pipe holds (64 KiB) comes through whole, and neither a secret param nor the
job's id shows in its /proc cmdline or environ. With and without a password.
tests/test_isolation_redis.py checks the whole worker, in each of its modes.
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
BIG = 200_000  # characters of one param: more than a pipe's buffer
TOKEN = "tok-z-0c4f1d7e2a9b"  # a secret param
# A job type of this test's own: what its process shows in /proc (cmdline is world-readable)
PROC_SELF = """
from pathlib import Path
from jobtrail import job

@job("proc_self_z")
def proc_self_z(api_token: str) -> dict[str, str]:
    shown = {name: Path("/proc/self", name).read_bytes() for name in ("cmdline", "environ")}
    return {name: data.decode(errors="replace") for name, data in shown.items()}
"""
PROCESS = r"""
import gc, json, sys
from urllib.parse import urlsplit
from jobtrail.backends.redis import horse, keys
from jobtrail.messages import End, from_fields
from jobpkg.hostile import _memory

def outcome(conn, job_id):
    entries = conn.xrange(keys.log_key(job_id))
    ends = [m for m in (from_fields(job_id, f) for _, f in entries) if isinstance(m, End)]
    return ends[-1].outcome.result if ends else None

def main(url, needles_hex):
    gc.disable()  # no collection before the forks, as when the gc has not run yet
    keys.connect(url).ping()  # run_workers' start check: dropped at once
    keys.connect(url).ping()  # and another, as a retried one would
    freed = [url + str(i) for i in range(100)]
    del freed
    horse.WORKER.update(url=url, mark="jtw-forget", name="forget")
    horse.JOB_MODULES[:] = ["jobs_fixture", "jobpkg.hostile", "jobpkg.reach", "proc_self_z"]
    jobs = {
        "proc_self_z-00000000000d": ("proc_self_z", {"api_token": sys.argv[2]}),
        "hostile-00000000000a": ("hostile", {"needles_hex": needles_hex}),
        "redis_reach-00000000000b": ("redis_reach", {"needle_hex": needles_hex[0]}),
        "typed-00000000000c": ("typed", {"count": 1, "name": "n" * int(sys.argv[1])}),
    }
    found = {}
    for job_id, (job_type, params) in jobs.items():
        horse.run_job(job_id, job_type, params, {})
        found[job_type] = outcome(keys.connect(url), job_id)
    needles = [bytes.fromhex(n) for n in needles_hex]
    mine = set()
    for chunk in _memory("self"):
        mine.update(n for n, needle in enumerate(needles) if needle in chunk)
    found["this_process"] = sorted(mine)
    print(json.dumps(found), flush=True)

url = sys.stdin.readline().strip()
secrets = [urlsplit(url).password or "", url]  # the password (if any) and the whole URL
main(url, [s.encode().hex() for s in secrets if s])
"""


@pytest.mark.parametrize("password", [PASSWORD, ""], ids=["password", "no-password"])
def test_the_job_image_holds_nothing_of_the_workers_redis(password: str, tmp_path: Path) -> None:
    (tmp_path / "proc_self_z.py").write_text(PROC_SELF)
    with redis_server(tmp_path / "redis", password=password) as rs:
        path = [str(tmp_path), TESTS, *sys.path]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        done = subprocess.run(
            [sys.executable, "-c", PROCESS, str(BIG), TOKEN],
            input=rs.url + "\n",  # not on the command line: only in this process's memory
            capture_output=True,
            text=True,
            env=env,
            cwd=TESTS,
            timeout=100,
        )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    needles = list(range(2 if password else 1))  # the password and the URL, or the URL
    assert found["this_process"] == needles  # what a copy of this process would hold
    own = found["hostile"]["own_memory"]
    assert own["detail"].startswith("read ") and not own["ok"], own  # it searched: nothing
    assert own["needles"] == [], own
    assert found["redis_reach"] == {"found": [], "open_connections": 0, "socket_fds": 0}
    assert found["typed"]["name"] == "n" * BIG
    shown = found["proc_self_z"]  # the task came down a pipe, not on argv or in the env
    assert shown["cmdline"].split("\0")[1:3] == ["-m", "jobtrail.backends.redis._job_image"]
    for text in shown.values():
        assert TOKEN not in text and "00000000000d" not in text, shown
