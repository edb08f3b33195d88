"""``serve --job-user`` and ``--sandbox`` (jobtrail.isolation), local mode.

A real root server (in a mount namespace where another user can reach this venv) runs the
hostile job type (tests/jobpkg/hostile.py): under ``--job-user``, ``--sandbox`` and both,
each attack fails; in the default mode the same job reads the home, another job's log and
its extra-vars file, which shows that the probes work. Ordinary jobs, the capture of a
child's output, cancel, a memory limit and a real playbook work under ``--job-user``; a
user that does not exist, or a job module it cannot read, is refused at start, in one line.
Distributed mode: tests/test_isolation_redis.py.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from jobpkg import hostile

from jobtrail.isolation import Isolation
from support.cpu import assert_in_idle_group
from support.sandbox import (
    COVERAGE_ENV,
    RootServer,
    as_root_reachable,
    job_user,
    need,
    serve_as_root,
)
from support.waits import wait_until

TESTS = Path(__file__).parent
TOKEN = "isolation-test-token-" + uuid.uuid4().hex
OPTIONS = ["--workers", "2", "--worker-nice", "0", "--playbooks", str(TESTS / "playbooks")]
MODULES = ["--jobs-module", "jobs_fixture", "--jobs-module", "jobpkg.isolated"]
# Not own_memory: under the fork start method a pool worker is a copy of the server (README)
ATTACKS = tuple(a for a in hostile.ATTACKS if a != "own_memory")


def _flags(mode: str) -> list[str]:
    flags = {"default": [], "job-user": ["--job-user", job_user()], "sandbox": ["--sandbox"]}
    # its jobs run in the idle cpu cgroup, which bwrap's read-only /sys
    # leaves the launcher to join
    flags["both"] = [
        *flags["job-user"],
        *flags["sandbox"],
        "--worker-nice",
        "10",
        "--worker-cpu",
        "idle",
    ]
    return flags[mode]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], RootServer]]:
    """A server in the mode asked for; one at a time (the tests ask mode by mode), each
    stopped when the next starts or when the module ends."""
    need("unshare", "setpriv", package="util-linux")
    need("bwrap", package="bubblewrap")
    running: dict[str, tuple[RootServer, contextlib.ExitStack]] = {}

    def server(mode: str) -> RootServer:
        if mode not in running:
            for _, stack in running.values():
                stack.close()
            running.clear()
            stack = contextlib.ExitStack()
            home = tmp_path_factory.mktemp(mode) / "home"
            flags = [*OPTIONS, *MODULES, *_flags(mode)]
            started = serve_as_root(home, *flags, cwd=TESTS, token=TOKEN)
            running[mode] = (stack.enter_context(started), stack)
        return running[mode][0]

    try:
        yield server
    finally:
        for _, stack in running.values():
            stack.close()


def _extra_vars_file(server: RootServer, marker: str) -> str | None:
    """The extra-vars file of the running playbook that carries ``marker``, as the job that
    runs it sees its path (found by root through /proc/PID/root: a sandbox's /tmp too)."""
    patterns = [
        "tmp/jobtrail-ansible-*/env/extravars",
        "tmp/job-*/jobtrail-ansible-*/env/extravars",
        "tmp/jobtrail-jobs/job-*/jobtrail-ansible-*/env/extravars",
    ]
    for child in psutil.Process(server.process.pid).children(recursive=True):
        root = f"/proc/{child.pid}/root/"
        for pattern in patterns:
            for path in glob.glob(root + pattern):
                with contextlib.suppress(OSError):
                    if marker in Path(path).read_text():
                        return "/" + path[len(root) :]
    return None


def _attack(server: RootServer) -> dict[str, Any]:
    """The hostile job's findings while another job (a playbook) runs beside it."""
    home = server.home
    earlier = server.run("demo")
    marker = uuid.uuid4().hex
    playbook = server.submit(
        "ansible_playbook",
        playbook="gated.yml",
        extra_vars={"gate": "/nonexistent/gate", "marker": marker},
    )
    found: list[str] = []

    def extra_vars_written() -> bool:
        path = _extra_vars_file(server, marker)
        found[:] = [path] if path else []
        return bool(found)

    try:
        wait_until(extra_vars_written, 60, "the playbook's extra-vars file")
        hostile = server.run(
            "hostile",
            needles_hex=[TOKEN.encode().hex()],
            target_pids=[server.process.pid],
            home=str(home),
            log_path=str(home / "logs" / earlier["job_id"]),
            extra_vars_path=found[0],
        )
    finally:
        server.http.post(f"/api/jobs/{playbook}/cancel")
    assert server.wait(playbook)["status"] == "cancelled"
    assert hostile["status"] == "completed", hostile
    return dict(hostile["result"])


# The tests ask for one mode after another (a server each, started once): keep them grouped.
def test_the_hostile_job_reads_the_home_in_the_default_mode(
    servers: Callable[[str], RootServer],
) -> None:
    found = _attack(servers("default"))
    for attack in ("read_db", "list_home", "read_log", "read_extra_vars", "signal"):
        assert found[attack]["ok"], (attack, found[attack])


def test_the_hostile_job_gets_nowhere_under_job_user(servers: Callable[[str], RootServer]) -> None:
    _gets_nowhere(servers("job-user"))


def test_a_job_runs_as_the_user_in_a_private_folder(servers: Callable[[str], RootServer]) -> None:
    _runs_as_the_user(servers("job-user"))


def test_capture_cancel_and_a_memory_limit_under_job_user(
    servers: Callable[[str], RootServer],
) -> None:
    server = servers("job-user")
    output = server.run("output")
    assert output["status"] == "completed", output
    messages = server.messages(output["job_id"])
    assert "child says hi" in messages and "from os.system" in messages

    _cancels(server)

    response = server.http.post(
        "/api/jobs", json={"type": "hog", "params": {"steps": 40, "mb": 10}, "memory_mb": 150}
    )
    assert response.status_code == 202, response.text
    hog = server.wait(response.json()["job_id"])
    assert hog["status"] == "failed" and "out of memory" in hog["error"], hog


def test_a_playbook_under_job_user(servers: Callable[[str], RootServer]) -> None:
    server = servers("job-user")
    job = server.run("ansible_playbook", playbook="parity.yml", extra_vars={"db_password": "x"})
    assert job["status"] == "completed", (job["error"], server.messages(job["job_id"])[-5:])
    assert job["result"]["stats"]["localhost"]["failed"] == 0
    assert any("changed-output" in m for m in server.messages(job["job_id"]))


def test_the_hostile_job_gets_nowhere_under_job_user_and_sandbox(
    servers: Callable[[str], RootServer],
) -> None:
    _gets_nowhere(servers("both"))


def test_a_sandboxed_job_runs_as_the_user_and_is_cancelled(
    servers: Callable[[str], RootServer],
) -> None:
    _runs_as_the_user(servers("both"))
    _cancels(servers("both"))  # the pool signals bwrap's child, not bwrap


def test_a_sandboxed_job_runs_in_the_idle_cpu_group(servers: Callable[[str], RootServer]) -> None:
    job = servers("both").run("priority")
    assert job["status"] == "completed", job
    assert_in_idle_group(job["result"]["cpu_cgroup"])


def test_the_hostile_job_gets_nowhere_under_sandbox(servers: Callable[[str], RootServer]) -> None:
    _gets_nowhere(servers("sandbox"))


def _gets_nowhere(server: RootServer) -> None:
    found = _attack(server)
    worked = {attack: found[attack] for attack in ATTACKS if found[attack]["ok"]}
    assert not worked, worked


def _runs_as_the_user(server: RootServer) -> None:
    job = server.run("whoami")
    assert job["status"] == "completed", job
    me = job["result"]
    user = pwd.getpwnam(job_user())
    ids = (me["uid"], me["euid"], me["gid"], me["child_uid"])
    assert ids == (user.pw_uid, user.pw_uid, user.pw_gid, user.pw_uid)
    assert 0 not in me["groups"] and not me["back_to_root"]
    assert me["tmpdir"] == me["home"] == me["mkdtemp_parent"]
    assert (me["folder_mode"], me["folder_uid"]) == (0o700, user.pw_uid)
    assert me["pid"] == 1, "pid 1 of a PID namespace of its own"
    assert max(me["processes"]) < 100, me["processes"]  # only its own (and its child's)
    second = server.run("whoami")["result"]
    assert second["tmpdir"] != me["tmpdir"], "a new private folder for each job"


def _cancels(server: RootServer) -> None:
    """A cancel stops the job's whole tree (its worker, child and grandchild)."""
    waiting = server.submit("process_tree", seconds=60)
    server.wait(waiting, "running")
    wait_until(lambda: len(_tree(server)) >= 3, 30, "the job's child and grandchild")
    tree = _tree(server)
    assert server.http.post(f"/api/jobs/{waiting}/cancel").status_code == 200
    assert server.wait(waiting)["status"] == "cancelled"
    wait_until(lambda: not any(p.is_running() for p in tree), 30, "the job's tree to stop")


def _tree(server: RootServer) -> list[psutil.Process]:
    """The running job's processes, seen by root: its worker (the one of USER's with
    children; it runs one job) and their descendants."""
    for process in psutil.Process(server.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one that ended meanwhile
            if process.username() == job_user() and process.children():
                return [process, *process.children(recursive=True)]
    return []


def test_a_job_temp_folder_is_private_and_removed(tmp_path: Path) -> None:
    """In the job's process (here, this one): TMPDIR, HOME and tempfile's folder point to
    a new 0700 folder with a random name for one job; afterwards all is as it was."""
    before = (os.environ.get("TMPDIR"), os.environ.get("HOME"), tempfile.gettempdir())
    with Isolation(jobs_tmp=str(tmp_path)).job_temp() as folder:
        assert folder is not None and folder.parent == tmp_path
        assert len(folder.name) == len("job-") + 32
        assert folder.stat().st_mode & 0o777 == 0o700
        assert os.environ["TMPDIR"] == os.environ["HOME"] == tempfile.gettempdir() == str(folder)
        (folder / "left-behind").write_text("x")
    assert not folder.exists()
    assert (os.environ.get("TMPDIR"), os.environ.get("HOME"), tempfile.gettempdir()) == before
    with Isolation().job_temp() as nothing:  # not isolated: the job's environment is left be
        assert nothing is None


def _refusal(tmp_path: Path, *options: str, app_dir: Path | None = None) -> str:
    """What ``serve OPTIONS`` says when it refuses to start (exit 2, one line)."""
    command = [sys.executable, "-m", "jobtrail.cli", "serve", "--home", str(tmp_path / "home")]
    done = subprocess.run(
        [*as_root_reachable(), *command, "--port", "0", *options],
        cwd=app_dir or TESTS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert not (tmp_path / "home").exists(), "refused before the home was made"
    return lines[0]


def test_coverage_stays_out_of_the_root_servers(tmp_path: Path) -> None:
    """Under a coverage run the servers here neither measure (their venv, where the data
    files go, is read-only in their namespace) nor fail to start when a save fails."""
    need("unshare", "setpriv", package="util-linux")
    measured = {name: str(tmp_path / name) for name in COVERAGE_ENV}
    env = subprocess.run(
        [*as_root_reachable(), "env"],
        env={**os.environ, **measured},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert not [line for line in env.splitlines() if line.startswith(tuple(COVERAGE_ENV))]
    code = (
        "import coverage, jobtrail.secrecy as s\n"
        "coverage.Coverage(data_file='/proc/.coverage').start()\n"
        "s._before_exec()\n"
        "print('exec goes on')"
    )
    clean = {k: v for k, v in os.environ.items() if k not in COVERAGE_ENV}
    done = subprocess.run(
        [sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "exec goes on\n"), done.stderr


def test_refusals_at_start(tmp_path: Path) -> None:
    need("unshare", "setpriv", package="util-linux")
    unknown = _refusal(tmp_path, "--job-user", "no-such-user-jt")
    assert "'no-such-user-jt': no such user" in unknown
    private = tmp_path / "private"  # pytest's folder is root's, 0700: USER cannot enter it
    private.mkdir()
    (private / "hidden_jobs.py").write_text("from jobtrail import job\n")
    blocked = _refusal(
        tmp_path,
        "--job-user",
        job_user(),
        "--jobs-module",
        "hidden_jobs",
        "--app-dir",
        str(private),
    )
    first_closed = next(p for p in reversed(private.parents) if not p.stat().st_mode & 0o001)
    assert f"cannot import hidden_jobs ({private / 'hidden_jobs.py'}" in blocked, blocked
    assert f"open up {first_closed} (chmod o+x {first_closed})" in blocked, blocked
