"""Distributed mode: the job's process is the work-horse's child, and holds nothing of Redis.

The horse (RQ's fork, which needs Redis) only relays; the job runs in a fork of it that execs
a fresh interpreter, keeping only the fds it was handed (backends/redis/horse.py,
_job_image.py). A Redis server that requires a password shows whether any copy is left where
a job can look (``tests/jobpkg/reach.py``), its raw memory included (the hostile job's
``own_memory``), in every mode. Local mode has no Redis: see tests/test_isolation.py.
``jobtrail worker --job-user``: the job's process becomes USER, and the hostile job type
(tests/jobpkg/hostile.py) gets nowhere: not the password in /proc or in the memory of the
worker's processes or its own, not the home, its database or another job's log, no signal
or ptrace.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import redis
from jobpkg import hostile

from jobtrail.backends.redis.keys import log_key
from jobtrail.messages import Started, from_fields
from support.cpu import assert_in_idle_group
from support.live import Live, live_server, server_config
from support.redis_server import TESTS, WORKER_COMMAND, Workers, redis_server
from support.sandbox import as_root_reachable, job_user
from support.waits import wait_until

pytestmark = pytest.mark.timeout(120)
PASSWORD = "pw-e2-7f3a9c1d5b"
JOBS = ("jobs_fixture", "jobpkg.reach", "jobpkg.hostile", "jobpkg.isolated")
# Not read_extra_vars: no playbook runs beside the hostile job here.
ATTACKS = tuple(a for a in hostile.ATTACKS if a != "read_extra_vars")
WORKER = [sys.executable, "-m", *WORKER_COMMAND, "--jobs-module", "jobs_fixture"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with redis_server(tmp_path_factory.mktemp("redis"), password=PASSWORD) as rs:
        workers = Workers(rs.url, count=0)
        try:
            workers.add(1, "--jobs-module", "jobpkg.reach", "--jobs-module", "jobpkg.hostile")
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


def test_the_job_finds_the_password_nowhere_in_its_own_memory(live: Live) -> None:
    """The default mode (the worker as root, so /proc and ptrace are not the question here:
    see test_secrecy.py): the job's process is a fresh image, whose raw memory holds
    neither the password nor the URL the RQ worker above it uses."""
    needles = [PASSWORD.encode().hex(), live.server.config.backend.encode().hex()]
    done = live.wait(live.submit("hostile", needles_hex=needles)["job_id"], timeout=60)
    assert done["status"] == "completed", (done["error"], live.all_records(done["job_id"])[-3:])
    own = done["result"]["own_memory"]
    assert own["detail"].startswith("read ") and not own["ok"] and own["needles"] == [], own


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
    """``jobtrail worker --job-user --concurrency 2`` and a server."""
    playbooks = ("--playbooks", str(Path(TESTS) / "playbooks"))
    with _worker_as_user(tmp_path_factory, "--concurrency", "2", *playbooks) as running:
        yield running


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, Workers, str]]:
    """``jobtrail worker --job-user --sandbox`` and a server."""
    with _worker_as_user(tmp_path_factory, "--concurrency", "1", "--sandbox") as running:
        yield running


@contextlib.contextmanager
def _worker_as_user(
    tmp_path_factory: pytest.TempPathFactory, *options: str
) -> Iterator[tuple[Live, Workers, str]]:
    """``jobtrail worker --job-user USER OPTIONS``, run where USER can reach this venv's
    Python, as a real install's (its jobs start child interpreters), and a server."""
    with redis_server(tmp_path_factory.mktemp("redis"), password=PASSWORD) as rs:
        workers = Workers(rs.url, count=0)
        try:
            modules = [f"--jobs-module={module}" for module in JOBS[1:]]
            command = [*WORKER, "--backend", rs.url, *modules, "--job-user", job_user(), *options]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}
            env.pop("JOBTRAIL_BACKEND", None)
            workers.procs.append(
                subprocess.Popen([*as_root_reachable(), *command], env=env, cwd=TESTS)
            )
            workers.wait_ready(int(options[options.index("--concurrency") + 1]))
            home = tmp_path_factory.mktemp("home")
            playbooks = Path(TESTS) / "playbooks"
            config = server_config(home, job_modules=JOBS, playbooks=playbooks)
            # the idle cpu group's test: the job's process joins it before its namespaces
            config = replace(config, backend=rs.url, worker_nice=10, worker_cpu="idle")
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
    """Every attack fails while another job's tree runs beside it (the same USER's: only its
    PID namespace keeps it out of reach). The targets: that tree, jobtrail worker, its RQ
    workers and the server (this process, which holds the password in its backend URL)."""
    live, workers, home = as_user
    earlier = live.wait(live.submit("sleep", seconds=0, steps=1)["job_id"])
    beside = live.submit("process_tree", seconds=60)["job_id"]
    try:
        tree = _job_tree(workers, lambda: len(_job_tree(workers)) >= 3)
        worker = psutil.Process(workers.procs[0].pid)
        targets = [os.getpid(), worker.pid, *(p.pid for p in worker.children())]
        done = live.wait(
            live.submit(
                "hostile",
                needles_hex=[PASSWORD.encode().hex()],
                target_pids=[*targets, *(p.pid for p in tree)],
                home=home,
                log_path=str(Path(home) / "logs" / earlier["job_id"]),
            )["job_id"],
            timeout=60,
        )
    finally:
        live.http.post(f"/api/jobs/{beside}/cancel")
    assert live.wait(beside)["status"] == "cancelled"
    assert done["status"] == "completed", (done["error"], live.all_records(done["job_id"])[-3:])
    worked = {attack: done["result"][attack] for attack in ATTACKS if done["result"][attack]["ok"]}
    assert not worked, worked
    own = done["result"]["own_memory"]  # it searched its raw memory, and found nothing
    assert own["detail"].startswith("read ") and own["needles"] == [], own


def test_under_job_user_a_job_is_pid_1_of_its_own_namespace(
    as_user: tuple[Live, Workers, str],
) -> None:
    """It sees only its own processes; its Started names its pid as the host sees it."""
    live, workers, _ = as_user
    done = live.wait(live.submit("whoami")["job_id"])
    assert done["status"] == "completed", (done["error"], live.all_records(done["job_id"])[-3:])
    me = done["result"]
    assert (me["uid"], me["child_uid"], me["back_to_root"]) == (
        pwd.getpwnam(job_user()).pw_uid,
        pwd.getpwnam(job_user()).pw_uid,
        False,
    )
    assert me["pid"] == 1 and me["processes"] == [1], me
    assert me["tmpdir"] == me["home"] == me["mkdtemp_parent"], me
    assert (me["folder_mode"], me["folder_uid"]) == (0o700, pwd.getpwnam(job_user()).pw_uid)
    client = redis.Redis.from_url(workers.url)
    try:
        entries = client.xrange(log_key(done["job_id"]))
    finally:
        client.close()
    started = [m for m in (from_fields(done["job_id"], f) for _, f in entries)]
    pids = [m.pid for m in started if isinstance(m, Started)]
    assert len(pids) == 1 and pids[0] > 1, pids


def test_capture_cancel_and_a_memory_limit_under_job_user(
    as_user: tuple[Live, Workers, str],
) -> None:
    """The RQ worker, outside the job's namespaces, still finds and stops its whole tree."""
    live, workers, _ = as_user
    output = live.wait(live.submit("output")["job_id"])
    assert output["status"] == "completed", (output["error"], live.all_records(output["job_id"]))
    messages = [r["message"] for r in live.all_records(output["job_id"])]
    assert "child says hi" in messages and "from os.system" in messages, messages[-8:]

    waiting = live.submit("process_tree", seconds=60)["job_id"]
    tree = _job_tree(workers, lambda: len(_job_tree(workers)) >= 3)
    assert live.http.post(f"/api/jobs/{waiting}/cancel").status_code == 200
    assert live.wait(waiting, timeout=60)["status"] == "cancelled"
    wait_until(lambda: not any(p.is_running() for p in tree), 30, "the job's tree to stop")

    response = live.http.post(
        "/api/jobs", json={"type": "hog", "params": {"steps": 40, "mb": 10}, "memory_mb": 150}
    )
    assert response.status_code == 202, response.text
    hog = live.wait(response.json()["job_id"], timeout=60)
    assert hog["status"] == "failed" and "out of memory" in hog["error"], hog


def test_under_sandbox_a_job_writes_only_to_its_tmp_and_sees_no_home(
    sandboxed: tuple[Live, Workers, str],
) -> None:
    """Read-only everywhere but its own /tmp (empty at start but for the jobs' folder) and
    /dev/shm; /root and /home hidden (but for the way to pyenv's interpreter, here); its
    children still run; the hostile job gets nowhere."""
    live, workers, home = sandboxed
    me = live.wait(live.submit("whoami")["job_id"])
    assert me["status"] == "completed", (me["error"], live.all_records(me["job_id"])[-3:])
    assert me["result"]["pid"] == 1 and me["result"]["uid"] == pwd.getpwnam(job_user()).pw_uid
    tmpdir = me["result"]["tmpdir"]
    assert tmpdir.startswith("/tmp/jobtrail-jobs-"), tmpdir
    folders = ["/", "/etc", "/var/tmp", TESTS, "/dev/shm", "/tmp"]
    probe = live.wait(
        live.submit("sandbox_probe", write_to=folders, list_dirs=["/root", "/home"])["job_id"]
    )
    assert probe["status"] == "completed", (probe["error"], live.all_records(probe["job_id"]))
    found = probe["result"]
    assert found["written"] == ["/dev/shm", "/tmp"], found
    # its /tmp: the jobs' folder, and the way to a checkout or venv that lies under /tmp
    needed = [Path(os.path.realpath(p)) for p in (sys.prefix, TESTS, *sys.path) if p]
    others = [n for n in found["tmp"] if n != Path(tmpdir).parent.name]
    assert Path(tmpdir).parent.name in found["tmp"], found
    assert all(any(Path("/tmp", n) in (p, *p.parents) for p in needed) for n in others), found
    for folder, names in found["listed"].items():  # pyenv's way, if it lives in /root
        python = Path(os.path.realpath(sys.executable))
        assert all(python.is_relative_to(Path(folder) / name) for name in names), found
    assert live.wait(live.submit("output")["job_id"])["status"] == "completed"
    placed = live.wait(live.submit("priority")["job_id"])  # joined before its namespaces
    assert placed["status"] == "completed", (placed["error"], live.all_records(placed["job_id"]))
    assert_in_idle_group(placed["result"]["cpu_cgroup"])
    worker = psutil.Process(workers.procs[0].pid)
    targets = [os.getpid(), worker.pid, *(p.pid for p in worker.children())]
    done = live.wait(
        live.submit(
            "hostile", needles_hex=[PASSWORD.encode().hex()], target_pids=targets, home=home
        )["job_id"],
        timeout=60,
    )
    assert done["status"] == "completed", (done["error"], live.all_records(done["job_id"])[-3:])
    worked = {attack: done["result"][attack] for attack in ATTACKS if done["result"][attack]["ok"]}
    assert not worked, worked
    own = done["result"]["own_memory"]  # it searched its raw memory, and found nothing
    assert own["detail"].startswith("read ") and own["needles"] == [], own


def test_a_playbook_under_job_user(as_user: tuple[Live, Workers, str]) -> None:
    live, _, _ = as_user
    job = live.submit("ansible_playbook", playbook="parity.yml", extra_vars={"db_password": "x"})
    done = live.wait(job["job_id"], timeout=90)
    assert done["status"] == "completed", (done["error"], live.all_records(done["job_id"])[-5:])
    assert done["result"]["stats"]["localhost"]["failed"] == 0
    assert any("changed-output" in r["message"] for r in live.all_records(done["job_id"]))


def _job_tree(workers: Workers, ready: Callable[[], bool] | None = None) -> list[psutil.Process]:
    """A running job's processes, seen by root: the job's process (USER's, with children)
    and its descendants; with ``ready``, once it holds."""
    if ready is not None:
        wait_until(ready, 30, "the job's child and grandchild")
    for process in psutil.Process(workers.procs[0].pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one that ended meanwhile
            if process.username() == job_user() and process.children():
                return [process, *process.children(recursive=True)]
    return []


def test_job_user_is_refused_clearly_when_it_does_not_exist() -> None:
    refusal = _worker_refusal("--job-user", "no-such-user-e2")
    assert "--job-user 'no-such-user-e2': no such user on this host" in refusal, refusal


def test_sandbox_without_job_user_is_refused() -> None:
    refusal = _worker_refusal("--sandbox")
    assert "--sandbox in jobtrail worker needs --job-user USER" in refusal, refusal


def test_job_user_is_refused_clearly_when_it_cannot_import_a_job_module(tmp_path: Path) -> None:
    """Every job's process execs the interpreter and imports the job modules as USER: a
    module in a folder USER cannot enter is refused at start, naming the first folder on
    the way there that USER cannot enter."""
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    (hidden / "hidden_jobs_z.py").write_text("from jobtrail import job\n")
    refusal = _worker_refusal(
        "--job-user", job_user(), "--jobs-module", "hidden_jobs_z", path=str(hidden)
    )
    assert f"the job user {job_user()!r} cannot import hidden_jobs_z" in refusal, refusal
    blocked = refusal.split("open up ", 1)[-1].split(" ", 1)[0]  # the first on the way
    assert Path(blocked) in (hidden, *hidden.parents), refusal
    assert f"(chmod o+x {blocked})" in refusal, refusal


def _worker_refusal(*options: str, path: str = "") -> str:
    """What ``jobtrail worker OPTIONS`` says on stderr when it refuses to start (exit 2),
    run where USER can reach this venv (``path``: one more folder on the import path)."""
    done = subprocess.run(
        [*as_root_reachable(), *WORKER, "--backend", "redis://127.0.0.1:1/0", *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=TESTS,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([p for p in (path, TESTS) if p] + sys.path),
        },
    )
    assert done.returncode == 2, done
    return done.stderr
