"""Running a command as another user, in a mount namespace of its own: how the deploy
tests run jobtrail as its service user without systemd or a container engine."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support.requirements import missing
from support.waits import wait_until


def need(*programs: str, package: str) -> None:
    """Fail (or skip) the test, saying how to install it, if a program is not there."""
    for program in programs:
        if shutil.which(program) is None:
            missing(f"{program} is not installed", f"apt-get install {package}")
    if os.geteuid() != 0:
        missing("these tests mount namespaces and change users", "run them as root")


def free_uid() -> int:
    """A uid no account has: the service's user, as systemd-sysusers would add it. One
    range of 100 per pytest-xdist worker, so that tests running at once get different ones."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1"… under xdist
    uid = 61_000 + (int(worker[2:]) + 1 if worker[2:].isdigit() else 0) * 100
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


# -- the unit -------------------------------------------------------------------------------
def hide_root() -> list[str]:
    """An empty /root, but for the folder that holds this venv's Python when it is there
    (pyenv): put back read-only, so that another user reaches the interpreter (a real
    install's venv uses /usr/bin/python3). Staged on a tmpfs of this namespace's own."""
    python = Path(os.path.realpath(sys.executable))
    if python.parts[1:2] != ("root",):
        return ["mount -n -t tmpfs -o mode=0755 tmpfs /root"]
    keep = shlex.quote(str(Path(*python.parts[:3])))
    return [
        "mount -n -t tmpfs tmpfs /var/tmp",
        "mkdir /var/tmp/keep",
        f"mount -n --bind -o ro {keep} /var/tmp/keep",
        "mount -n -t tmpfs -o mode=0755 tmpfs /root",
        f"mkdir -p {keep}",
        f"mount -n --move /var/tmp/keep {keep}",
    ]


REPO = Path(__file__).resolve().parents[2]


def _cover_point(path: Path, tmp_covered: bool) -> Path | None:
    """The outermost folder above ``path`` that hides it from the service's user: /tmp when
    the sandbox covers it (PrivateTmp), or a folder others cannot enter (tox makes ``.tox``
    0700)."""
    for parent in reversed(path.parents):
        if tmp_covered and parent == Path("/tmp"):
            return parent
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


def keep_reachable(tmp_covered: bool) -> tuple[list[str], list[str]]:
    """Steps that stage this test's venv and checkout (``before`` what hides them is
    mounted) and put them back where they were (``after``), reachable by another user: a
    real install's venv is /opt/jobtrail, but a test's may be a tox env under a 0700 folder,
    or a checkout under /tmp. Staged on a tmpfs of the namespace's own at /dev/shm, which
    neither ProtectSystem nor PrivateTmp covers, unmounted after: jobs need the host's
    (multiprocessing's semaphores, as Ansible's)."""
    keep = [Path(sys.prefix).resolve(), REPO / "src"]
    before = ["mount -n -t tmpfs -o mode=0755 tmpfs /dev/shm"]
    after: list[str] = []
    covered: set[Path] = set()
    for i, path in enumerate(keep):
        cover = _cover_point(path, tmp_covered)
        if cover is None:
            continue
        quoted = shlex.quote(str(path))
        before += [f"mkdir /dev/shm/keep{i}", f"mount -n --bind -o ro {quoted} /dev/shm/keep{i}"]
        if cover != Path("/tmp") and cover not in covered:
            after.append(f"mount -n -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(cover))}")
            covered.add(cover)
        after += [f"mkdir -p {quoted}", f"mount -n --move /dev/shm/keep{i} {quoted}"]
    if not after:
        return [], []
    return before, [*after, "umount -n /dev/shm"]  # the host's /dev/shm (1777) again


def as_user(uid: int, state: Path, volume: str) -> list[str]:
    """The command that follows, run as ``uid`` in a mount namespace where it can reach this
    venv's Python and finds ``state`` at ``volume``, as a container has its volume."""
    stage, put_back = keep_reachable(tmp_covered=False)
    script = "\n".join(
        [
            "set -e",
            "mount -n --make-rprivate /",
            *stage,
            f"mount -n -t tmpfs -o mode=0755 tmpfs {Path(volume).parent}",
            f"mkdir -p {volume}",
            f"mount -n --bind {shlex.quote(str(state))} {volume}",
            *hide_root(),
            *put_back,
            f"cd {volume}",  # WORKDIR
            'exec "$@"',
        ]
    )
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return ["unshare", "--mount", "--", "sh", "-c", script, "sh", *setpriv]


def wait_serving(
    url: str, process: subprocess.Popen[str], timeout: float = 60, output: Path | None = None
) -> None:
    """Until ``url`` answers; if the server exits first, fail with what it said (its
    pipes, or the file ``output`` it writes to)."""

    def serving() -> bool:
        assert process.poll() is None, output.read_text() if output else process.communicate()
        try:
            return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(serving, timeout, "the server to answer /api/health")


def json_lines(stderr: str) -> list[dict[str, str]]:
    entries = [json.loads(line) for line in stderr.splitlines()]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    return entries


# -- a root server whose jobs run as another user (--job-user, --sandbox) ----------------------
JOB_USER = "jtjob"  # shared by every test file that runs jobs as another user


def job_user() -> str:
    """The tests' ``--job-user``: made once, never removed, since test files running at
    the same time (pytest-xdist) share it; made again by whichever finds it missing."""
    try:
        pwd.getpwnam(JOB_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--user-group", JOB_USER],
            capture_output=True,
            check=False,  # another test may have made it meanwhile
        )
        pwd.getpwnam(JOB_USER)
    return JOB_USER


# What starts coverage in a new interpreter (coverage 7.17's patch=subprocess sets the first
# in the test's environment; its .pth file reads it or the second), and where it writes
COVERAGE_ENV = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START", "COVERAGE_FILE")


def as_root_reachable() -> list[str]:
    """The command that follows, run as root in a mount namespace of its own where another
    user can run this venv's Python and read the checkout, as it could a real install's
    (the test's Python may live in pyenv's folder under /root, 0700). Not measured by a
    coverage run: there the venv (a tox env, where the data files go) is read-only."""
    stage, put_back = keep_reachable(tmp_covered=False)
    script = "\n".join(
        ["set -e", "mount -n --make-rprivate /", *stage, *hide_root(), *put_back, 'exec "$@"']
    )
    unset = [arg for name in COVERAGE_ENV for arg in ("-u", name)]
    return ["env", *unset, "unshare", "--mount", "--", "sh", "-c", script, "sh"]


@dataclass
class RootServer:
    """``jobtrail serve`` in a process of its own (run as root by ``serve_as_root``)."""

    url: str
    process: subprocess.Popen[str]
    http: httpx.Client
    home: Path

    def submit(self, job_type: str, **params: Any) -> str:
        response = self.http.post("/api/jobs", json={"type": job_type, "params": params})
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(self, job_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        wanted = statuses or ("completed", "failed", "cancelled")
        wait_until(lambda: self.job(job_id)["status"] in wanted, timeout, f"{job_id} {wanted}")
        return self.job(job_id)

    def run(self, job_type: str, **params: Any) -> dict[str, Any]:
        return self.wait(self.submit(job_type, **params))

    def messages(self, job_id: str) -> list[str]:
        response = self.http.get(f"/api/jobs/{job_id}/logs", params={"format": "json"})
        assert response.status_code == 200, response.text
        return [str(record["message"]) for record in response.json()["logs"]]


@contextlib.contextmanager
def serve_as_root(
    home: Path, *options: str, cwd: Path, token: str | None = None
) -> Iterator[RootServer]:
    """``jobtrail serve --home HOME OPTIONS`` as root where other users reach this venv
    (``as_root_reachable``), run from ``cwd``, with ``token`` in its environment (then
    sent by ``http``); stopped (SIGTERM, then SIGKILL) after."""
    from support.live import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "jobtrail.cli", "serve", "--home", str(home)]
    output = home.with_name(f"{home.name}.out")
    with output.open("w") as out:
        process = subprocess.Popen(
            [*as_root_reachable(), *command, "--port", str(port), *options],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "JOBTRAIL_TOKEN": token} if token else None,
        )
    try:
        wait_serving(url, process, output=output)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
            yield RootServer(url, process, http, home)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
