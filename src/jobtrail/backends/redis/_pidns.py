"""``jobtrail worker --job-user``: each job's process in PID, mount and IPC namespaces of its own.

Jobs share USER, so without them one job could signal, ptrace or read the /proc of another
(``isolation.become`` makes it dumpable again) and see the worker's processes. The horse
calls ``new_pid_namespace`` just before it forks the job's process, which so becomes pid 1
of a new PID namespace; the horse stays outside (it keeps its pid, and relays). In the fork,
still root, ``enter_job_namespaces`` makes a mount namespace with a fresh /proc (only the
job's own processes) and a tmpfs of its own over the jobs' folder, and an IPC namespace.
With ``--sandbox`` that mount namespace is also a sandbox, made here before the job's
process execs its fresh image (``_job_image``), without bubblewrap, whose own exec and
setup would come on top of it: every mount read-only, an empty /tmp
and /dev/shm of its own, each hidden folder (the users' homes) an empty tmpfs of mode 0000,
and the paths the job's type declares (``SandboxPaths``) bound at their place, read-only or
writable: only its own type's, since each job has a mount namespace of its own.

The RQ worker, outside, still sees the job's tree with host pids in /proc: its watches,
limits and cancels work as before. As pid 1, the job's process receives from outside only
the signals it has a handler for (JobRuntime sets SIGTERM's and the stop signals') and
SIGKILL; a signal it sends itself, or one of its children sends it, without a handler, is
ignored; and its death kills every process left in its namespace.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
from pathlib import Path

from jobtrail.isolation import JOBS_TMP_MODE, Isolation, IsolationError, JobUser, become
from jobtrail.registry import declared_sandbox_paths
from jobtrail.sandbox_paths import (
    SandboxPaths,
    check_declared,
    describe_unreachable,
    first_unreachable,
)

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY = 0x1
HOMES = ("/root", "/home")  # what --sandbox hides: the homes of this host's users
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (since Linux 5.12)
NOTHING_DECLARED = SandboxPaths()

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def new_pid_namespace() -> None:
    """In the horse: its next child is pid 1 of a new PID namespace (the horse is not in it)."""
    _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")


def _mount(source: str, target: str, kind: str | None, flags: int, data: str | None) -> None:
    encoded = [None if s is None else s.encode() for s in (source, target, kind, data)]
    _check(_libc.mount(*encoded[:3], ctypes.c_ulong(flags), encoded[3]), f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("set", "clear", "propagation", "userns")]


def _read_only_everywhere(top: str = "/", read_only: bool = True) -> None:
    """Every mount from ``top`` down read-only (mount_setattr(2), recursive); with
    ``read_only`` False, ``top``'s own mount writable again (a declared path to write)."""
    attr = (
        _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
        if read_only
        else _MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
    )
    result = _libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        top.encode(),
        ctypes.c_uint(AT_RECURSIVE if read_only else 0),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, f"mount_setattr {top} {'read-only' if read_only else 'writable'}")


def _bind(source: str, target: str, writable: bool) -> None:
    """``source`` at ``target`` (made first if missing, as a file or a folder like it),
    read-only or writable whatever the mount it came from was."""
    if not os.path.lexists(target):
        if os.path.isdir(source):
            os.makedirs(target)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
    _mount(source, target, None, MS_BIND | MS_REC, None)
    _read_only_everywhere(target, read_only=not writable)


def _own_tmpfs(folder: str, visible: list[Path], binds: list[tuple[str, bool]]) -> None:
    """A writable tmpfs of its own over ``folder``, with what is ``visible`` below it (a
    checkout or venv under /tmp, as CI's may be) bound back read-only, then the declared
    ``binds`` below it: reached through an fd opened on the old folder before the tmpfs
    covers it."""
    below = [v for v in visible if Path(folder) in v.parents]
    keep = [v for v in below if not any(u in v.parents for u in below)]  # outermost
    declared = [(Path(p), w) for p, w in binds if Path(folder) in Path(p).parents]
    old = os.open(folder, os.O_PATH | os.O_DIRECTORY) if keep or declared else -1
    try:
        _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        for path in keep:
            os.makedirs(path, exist_ok=True)
            source = f"/proc/self/fd/{old}/{path.relative_to(folder)}"
            _mount(source, str(path), None, MS_BIND | MS_REC, None)
            _read_only_everywhere(str(path))
        for path, writable in declared:  # the way to it as the host has it: 0755, root's
            _bind(f"/proc/self/fd/{old}/{path.relative_to(folder)}", str(path), writable)
    finally:
        if old >= 0:
            os.close(old)


def _hide(folder: Path, visible: list[Path]) -> None:
    """``folder`` covered by an empty tmpfs of mode 0000; if it holds a ``visible`` path
    (the interpreter under /root/.pyenv), each of its entries instead, but the ones on the
    way there (their names stay listable, not their contents; a symlink stays)."""
    if not any(folder == v or folder in v.parents for v in visible):
        _mount("tmpfs", str(folder), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0,size=4k")
        return
    if folder in visible:
        return
    for entry in os.scandir(folder):
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            _hide(path, visible)
        elif not entry.is_symlink():
            _mount("/dev/null", str(path), None, MS_BIND, None)  # a file: empty


def enter_job_namespaces(
    jobs_tmp: str | None,
    tmp_mode: int,
    sandbox: bool = False,
    hidden: tuple[str, ...] = (),
    visible: tuple[str, ...] = (),
    declared: SandboxPaths = NOTHING_DECLARED,
) -> None:
    """In the job's process (pid 1 of its PID namespace), as root: a private mount namespace
    with a /proc of this PID namespace and ``jobs_tmp`` a tmpfs of its own, and an IPC
    namespace, before it becomes USER; with ``sandbox``, read-only but for its own /tmp and
    /dev/shm, ``hidden`` covered but for the way to what is ``visible``, and the job type's
    ``declared`` paths bound (checked at start: none is in ``hidden`` or covers /tmp)."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare(CLONE_NEWNS|CLONE_NEWIPC)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates to the host
    if sandbox:
        _read_only_everywhere()  # before the mounts below, which stay writable
        binds = [(os.path.realpath(p), w) for p, w in declared.binds()]
        for path in ("/tmp", "/dev/shm"):
            _own_tmpfs(path, [Path(p) for p in visible], binds)
        for path in hidden:
            _hide(Path(path), [Path(p) for p in visible])
        for path, writable in binds:  # the rest of the system: the same place, its mode
            if Path("/tmp") not in Path(path).parents:
                _bind(path, path, writable)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    if jobs_tmp:
        os.makedirs(jobs_tmp, exist_ok=True)  # in the sandbox's /tmp, made just now
        _mount("tmpfs", jobs_tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={tmp_mode:o}")


def job_isolation(
    user_name: str | None, sandbox: bool = False, playbooks: str | None = None
) -> Isolation:
    """``--job-user USER``: every job's process becomes USER, with a private TMPDIR/HOME in
    a folder of root's that USER cannot list (1733); with ``--sandbox`` (which needs it: a
    root job could undo its mounts) in a read-only system with the homes hidden. Refused
    unless this runs as root."""
    if user_name is None:
        if sandbox:
            raise IsolationError("--sandbox in jobtrail worker needs --job-user USER")
        return Isolation()
    if os.geteuid() != 0:
        raise IsolationError(
            f"--job-user needs jobtrail worker to run as root (uid {os.geteuid()})"
        )
    user = JobUser.named(user_name)
    jobs_tmp = tempfile.mkdtemp(prefix="jobtrail-jobs-")
    os.chmod(jobs_tmp, JOBS_TMP_MODE)
    hidden = tuple(p for p in HOMES if Path(p).is_dir()) if sandbox else ()
    needed = [sys.prefix, sys.base_prefix, os.path.dirname(sys.executable), *sys.path]
    needed += [playbooks] if playbooks else []  # kept in sight when under a home
    visible = tuple(dict.fromkeys(os.path.realpath(p) for p in needed if p and os.path.isdir(p)))
    declared = declared_sandbox_paths() if sandbox else {}
    _check_declared(user, declared, hidden)
    return Isolation(
        user=user,
        sandbox=sandbox,
        jobs_tmp=jobs_tmp,
        hidden=hidden,
        visible=visible,
        declared=tuple(sorted(declared.items())),
    )


def _check_declared(
    user: JobUser, declared: dict[str, SandboxPaths], hidden: tuple[str, ...]
) -> None:
    """Refuse, in one line, a declared path the sandbox cannot bind or USER cannot reach:
    checked as USER, in a fork (this process stays root), on the host's view, which is the
    job's for every path that may be declared."""
    problem = check_declared(declared, hidden)
    if problem:
        raise IsolationError(problem)
    if not declared:
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            become(user)
            os.write(write_end, json.dumps(first_unreachable(declared)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    if not text:
        raise IsolationError(f"could not check the declared sandbox paths as {user.name!r}")
    found = json.loads(text)
    if found:
        raise IsolationError(describe_unreachable(found, f"the job user {user.name!r}", user.name))
