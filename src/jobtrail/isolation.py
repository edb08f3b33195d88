"""Keeping a job away from the server and from other jobs: ``--job-user`` and ``--sandbox``.

::

    server (root)       prepare() ─► check_reachable() ─► write_launcher()   at start, once
        │ spawns each worker through the launcher:
        ▼
    launcher            setpriv --pdeathsig KILL unshare --pid --fork --mount-proc python …
                        or  bwrap --ro-bind / / --tmpfs /tmp … --unshare-pid --as-pid-1 python …
                            (and every job type's declared paths: ``jobtrail.sandbox_paths``)
        ▼
    worker (pid 1 of its own PID namespace)   enter(): become USER, no way back
        └─ each job: job_temp(): a private TMPDIR/HOME (0700, USER's), removed after it

A worker sees only its own processes (a fresh /proc), so a job can neither signal nor
ptrace the server or another job, although jobs share USER. What a worker needs from the
server (control and log pipes, its spool) is handed over as open file descriptors, which
the launcher passes through, so it never opens the home by path.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jobtrail import cpu_group
from jobtrail.errors import JobtrailError
from jobtrail.registry import declared_sandbox_paths
from jobtrail.sandbox_paths import SandboxPaths, check_declared, describe_unreachable, union

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
JOBS_TMP_MODE = 0o1733  # USER may create entries, but not list them, nor remove another's


class IsolationError(JobtrailError):
    """``--job-user`` or ``--sandbox`` cannot be used as asked; the message says what to fix."""


@dataclass(frozen=True)
class JobUser:
    """The account jobs run as, resolved once by the server (workers need no NSS lookup)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def named(cls, name: str) -> JobUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise IsolationError(
                f"--job-user {name!r}: no such user on this host "
                f"(create it: useradd --system --no-create-home {name})"
            ) from None
        if entry.pw_uid == 0:
            raise IsolationError(f"--job-user {name!r} is root: name an unprivileged user")
        groups = tuple(sorted(set(os.getgrouplist(name, entry.pw_gid))))
        return cls(name, entry.pw_uid, entry.pw_gid, groups)


@dataclass(frozen=True)
class Isolation:
    """How workers are isolated; picklable, so it reaches spawned workers in their settings.

    ``jobs_tmp`` is where each job's private directory is made; ``hidden`` the paths a
    sandbox covers with an empty tmpfs (the home); ``visible`` what it binds back read-only
    (the import path, the playbooks); ``declared`` each job type's own paths (sandbox only)."""

    user: JobUser | None = None
    sandbox: bool = False
    jobs_tmp: str | None = None
    hidden: tuple[str, ...] = ()
    visible: tuple[str, ...] = ()
    cwd: str = field(default_factory=os.getcwd)
    declared: tuple[tuple[str, SandboxPaths], ...] = ()

    @property
    def active(self) -> bool:
        """Workers start through the launcher, each in a PID namespace of its own."""
        return self.user is not None or self.sandbox

    def sandbox_paths(self, job_type: str | None = None) -> SandboxPaths:
        """What the sandbox binds: ``job_type``'s declared paths (a distributed job's own
        namespace), or with None every type's (a pool worker, which runs them all)."""
        declared = dict(self.declared)
        if job_type is None:
            return union(declared.values())
        return declared.get(job_type, SandboxPaths())

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in its own PID namespace (and under bwrap with ``sandbox``). It
        starts as root; the process itself becomes USER (``enter``), so it can still
        create its private directories first. Killed when its parent (thread) dies."""
        if self.sandbox:
            return [*self._bwrap(), "--", *argv]
        unshare = ["unshare", "--pid", "--ipc", "--fork", "--mount-proc", "--kill-child=KILL", "--"]
        if self.jobs_tmp is not None:
            # the jobs' folder, a tmpfs of this worker's own (its mount namespace): a job
            # cannot open another worker's job's files, even by a path it was told
            mount = f'mount -n -t tmpfs -o mode={JOBS_TMP_MODE:o} tmpfs "$0" && exec "$@"'
            argv = ["sh", "-c", mount, self.jobs_tmp, *argv]
        return ["setpriv", "--pdeathsig", "KILL", "--", *unshare, *argv]

    def _bwrap(self) -> list[str]:
        args = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        args += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm"]
        made: set[str] = set()

        def way_to(path: str, itself: bool = True) -> None:
            # bwrap would make the folders on the way 0700 (inside /tmp's tmpfs): USER
            # could not pass; an existing folder is left as it is
            for folder in [*reversed(Path(path).parents[:-1]), *([Path(path)] if itself else [])]:
                if str(folder) not in made:
                    made.add(str(folder))
                    args.extend(["--perms", "0755", "--dir", str(folder)])

        for path in self.hidden:  # empty, and closed even to root: it has no capabilities
            way_to(path, itself=False)
            args += ["--perms", "0000", "--tmpfs", path]
        for path in dict.fromkeys([*self.visible, self.cwd]):  # spawn enters the server's cwd
            way_to(path)
            if path in self.visible:
                args += ["--ro-bind", path, path]
        for path, writable in self.sandbox_paths().binds():  # at last: on top of the rest
            real = os.path.realpath(path)
            way_to(real, itself=False)  # a file's folder, not the file
            args += ["--bind" if writable else "--ro-bind", real, real]
        args += ["--unshare-pid", "--unshare-ipc", "--as-pid-1", "--die-with-parent"]
        # root keeps only what it needs to become USER; as root itself, no capability at all
        keep = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if self.user else []
        return [*args, "--cap-drop", "ALL", *keep]

    def enter(self) -> None:
        """In the worker, before it reads anything of a job: become USER for good."""
        if self.user is not None:
            become(self.user)

    @contextlib.contextmanager
    def job_temp(self) -> Iterator[Path | None]:
        """A private directory for one job, as its TMPDIR and HOME; removed after it.

        Its name is random, in a folder USER cannot list, so another job does not find it."""
        if self.jobs_tmp is None:
            yield None
            return
        path = Path(self.jobs_tmp) / f"job-{secrets.token_hex(16)}"
        os.mkdir(path, 0o700)
        saved = {name: os.environ.get(name) for name in ("TMPDIR", "HOME")}
        saved_tempdir = tempfile.tempdir  # mkdtemp() caches the first TMPDIR it saw
        os.environ["TMPDIR"] = os.environ["HOME"] = tempfile.tempdir = str(path)
        try:
            yield path
        finally:
            tempfile.tempdir = saved_tempdir
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            shutil.rmtree(path, ignore_errors=True)


def become(user: JobUser) -> None:
    """Drop root for ``user``: groups first (they need root), then gid, then uid, all three
    ids of each, so nothing can switch back; no setuid program may raise it again.

    The change of user makes the process non-dumpable, which would leave its own /proc
    entries root's: a job could not read /proc/self/environ, nor list /proc/self/fd (which
    ``subprocess`` uses to close fds). It is made dumpable again, as a process that USER
    started is: its PID namespace keeps it out of other jobs' sight."""
    os.setgroups(list(user.groups))
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise IsolationError(f"could still become root after dropping to {user.name}")


# -- the server's side --------------------------------------------------------------------------
def prepare(
    user_name: str | None,
    sandbox: bool,
    *,
    home: Path,
    playbooks: Path | None,
    sys_path: Sequence[str],
) -> Isolation:
    """The isolation asked for, checked (root, the user, bwrap); for ``--job-user`` alone,
    with the mount point of its workers' temporary folders."""
    if user_name is None and not sandbox:
        return Isolation()
    flag = "--job-user" if user_name is not None else "--sandbox"
    if os.geteuid() != 0:
        raise IsolationError(f"{flag} needs the server to run as root (it runs as {os.geteuid()})")
    user = JobUser.named(user_name) if user_name is not None else None
    if sandbox and shutil.which("bwrap") is None:
        raise IsolationError("--sandbox needs bubblewrap: apt-get install bubblewrap")
    home = home.resolve()
    declared = declared_sandbox_paths() if sandbox else {}
    problem = check_declared(declared, [str(home)])
    if problem:
        raise IsolationError(problem)
    jobs_tmp = "/tmp" if sandbox else (_jobs_tmp_for() if user is not None else None)
    visible = [str(playbooks.resolve())] if playbooks is not None and playbooks.is_dir() else []
    for entry in [sys.prefix, *sys_path]:  # the venv: its bin/python and pyvenv.cfg
        path = Path(entry or ".").resolve()
        if path.is_dir() and path != Path("/") and not _overlaps(path, home):
            visible.append(str(path))
    return Isolation(
        user=user,
        sandbox=sandbox,
        jobs_tmp=jobs_tmp,
        hidden=(str(home),) if sandbox else (),
        visible=tuple(dict.fromkeys(visible)),
        declared=tuple(sorted(declared.items())),
    )


def _overlaps(path: Path, home: Path) -> bool:
    return path == home or home in path.parents or path in home.parents


def _jobs_tmp_for() -> str:
    """``--job-user`` without a sandbox (which has a /tmp of its own): the mount point, in
    the host's temporary folder, of each worker's own tmpfs for its jobs' directories. One
    for every server: each worker mounts its own over it, in its own mount namespace.
    Root's, so that nobody else can put something in its place."""
    folder = Path(tempfile.gettempdir()) / "jobtrail-jobs"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o755)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise IsolationError(f"{folder} exists and is not root's folder: remove it")
    return str(folder)


def write_launcher(
    isolation: Isolation, folder: Path, cpu: str | None = None, python: str = sys.executable
) -> str:
    """The executable multiprocessing spawns a worker with: ``python`` behind the launcher,
    which first joins the jobs' idle ``cpu`` group (``cpu_group``). In ``folder``, which only
    root can read (the home)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / "worker-launcher"
    command = shlex.join(isolation.wrap([python]))
    join = f"{cpu_group.launcher_line(cpu)}\n" if cpu else ""
    path.write_text(f'#!/bin/sh\n{join}exec {command} "$@"\n')
    os.chmod(path, 0o700)
    return str(path)


# The check runs as the worker will: launched the same way, root until it drops to USER,
# then importing what a worker imports; stdlib only before that.
_CHECK = r"""
import json, os, subprocess, sys
spec = json.loads(sys.argv[1])
for entry in spec["sys_path"]:
    if entry not in sys.path:
        sys.path.append(entry)
if spec["uid"] is not None:
    os.setgroups(spec["groups"]); os.setresgid(*[spec["gid"]] * 3); os.setresuid(*[spec["uid"]] * 3)

def blocked(path, last):
    # the first folder on the way that USER cannot enter, or the path itself
    parts = os.path.realpath(path).split("/")
    for i in range(2, len(parts) + 1):
        step = "/".join(parts[:i])
        if not os.access(step, os.X_OK if i < len(parts) else last):
            return step
    return None

def fail(what, path, last, detail):
    found = {"what": what, "path": path, "blocked": blocked(path, last), "detail": detail}
    print(json.dumps(found))
    sys.exit(0)

try:
    subprocess.run([sys.executable, "-c", "pass"], check=True)
except (OSError, subprocess.CalledProcessError) as exc:
    fail("run the interpreter", os.path.realpath(sys.executable), os.X_OK, str(exc))
for name, path in spec["modules"]:
    try:
        __import__(name)
    except Exception as exc:
        fail(f"import {name}", path, os.R_OK, f"{type(exc).__name__}: {exc}")
if spec["playbooks"]:
    try:
        os.listdir(spec["playbooks"])
    except OSError as exc:
        fail("read the playbooks", spec["playbooks"], os.R_OK | os.X_OK, str(exc))
if spec["declared"]:
    from jobtrail.sandbox_paths import SandboxPaths, first_unreachable
    declared = {t: SandboxPaths(tuple(r), tuple(w)) for t, (r, w) in spec["declared"].items()}
    found = first_unreachable(declared)
    if found:
        print(json.dumps({"declared": found}))
        sys.exit(0)
print(json.dumps({"ok": True}))
"""


def check_reachable(
    isolation: Isolation,
    modules: Sequence[str],
    *,
    playbooks: Path | None,
    sys_path: Sequence[str],
    python: str = sys.executable,
) -> None:
    """Refuse, naming the path to open up, if a worker could not run as configured: USER
    cannot run the interpreter, import jobtrail or a job module, read the playbooks, or
    read (write) a path a job type declares for the sandbox, as the sandbox binds it."""
    if not isolation.active:
        return
    wanted = ["jobtrail.worker.runtime", *modules]
    spec = {
        "uid": None if isolation.user is None else isolation.user.uid,
        "gid": None if isolation.user is None else isolation.user.gid,
        "groups": [] if isolation.user is None else list(isolation.user.groups),
        "sys_path": list(sys_path),
        "modules": [(name, _module_file(name)) for name in wanted],
        "playbooks": None if playbooks is None else str(playbooks),
        "declared": {t: (p.read, p.write) for t, p in isolation.declared},
    }
    argv = isolation.wrap([python, "-c", _CHECK, json.dumps(spec)])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=isolation.cwd)
    lines = done.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1])
    except (IndexError, ValueError):
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise IsolationError(f"the isolated worker does not start: {detail}") from None
    if found.get("ok"):
        return
    who = f"the job user {isolation.user.name!r}" if isolation.user else "the sandbox"
    if "declared" in found:
        user = isolation.user.name if isolation.user else None
        raise IsolationError(describe_unreachable(found["declared"], who, user))
    where = found["blocked"]
    fix = ""
    if where:
        mode = "o+x" if where != found["path"] else "o+rx" if Path(where).is_dir() else "o+r"
        fix = f": open up {where} (chmod {mode} {where})"
    raise IsolationError(f"{who} cannot {found['what']} ({found['path']}: {found['detail']}){fix}")


def _module_file(name: str) -> str:
    module = sys.modules.get(name)
    found = getattr(module, "__file__", None) if module is not None else None
    return str(found or name)
