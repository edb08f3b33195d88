"""``jobtrail worker --job-user``: each job's process in PID, mount and IPC namespaces of its own.

Jobs share USER, so without them one job could signal, ptrace or read the /proc of another
(``isolation.become`` makes it dumpable again) and see the worker's processes. The horse
calls ``new_pid_namespace`` just before it forks the job's process, which so becomes pid 1
of a new PID namespace; the horse stays outside (it keeps its pid, and relays). In the fork,
still root, ``enter_job_namespaces`` makes a mount namespace with a fresh /proc (only the
job's own processes) and a tmpfs of its own over the jobs' folder, and an IPC namespace.
With ``--sandbox`` that mount namespace is also a sandbox, made here without an exec
(bubblewrap would cost a fresh interpreter per job): every mount read-only, an empty /tmp
and /dev/shm of its own, each hidden folder (the users' homes) an empty tmpfs of mode 0000.

The RQ worker, outside, still sees the job's tree with host pids in /proc: its watches,
limits and cancels work as before. As pid 1, the job's process receives from outside only
the signals it has a handler for (JobRuntime sets SIGTERM's and the stop signals') and
SIGKILL; a signal it sends itself, or one of its children sends it, without a handler, is
ignored; and its death kills every process left in its namespace.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from pathlib import Path

from jobtrail.isolation import JOBS_TMP_MODE, Isolation, IsolationError, JobUser

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY = 0x1
HOMES = ("/root", "/home")  # what --sandbox hides: the homes of this host's users
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (since Linux 5.12)

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


def _read_only_everywhere(top: str = "/") -> None:
    """Every mount from ``top`` down read-only (mount_setattr(2), recursive)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    result = _libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        top.encode(),
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, f"mount_setattr {top} read-only")


def _own_tmpfs(folder: str, visible: list[Path]) -> None:
    """A writable tmpfs of its own over ``folder``, with what is ``visible`` below it (a
    checkout or venv under /tmp, as CI's may be) bound back read-only: reached through an fd
    opened on the old folder before the tmpfs covers it."""
    below = [v for v in visible if Path(folder) in v.parents]
    keep = [v for v in below if not any(u in v.parents for u in below)]  # outermost
    old = os.open(folder, os.O_PATH | os.O_DIRECTORY) if keep else -1
    try:
        _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        for path in keep:
            os.makedirs(path, exist_ok=True)
            source = f"/proc/self/fd/{old}/{path.relative_to(folder)}"
            _mount(source, str(path), None, MS_BIND | MS_REC, None)
            _read_only_everywhere(str(path))
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
) -> None:
    """In the job's process (pid 1 of its PID namespace), as root: a private mount namespace
    with a /proc of this PID namespace and ``jobs_tmp`` a tmpfs of its own, and an IPC
    namespace, before it becomes USER; with ``sandbox``, read-only but for its own /tmp and
    /dev/shm, ``hidden`` covered but for the way to what is ``visible``."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare(CLONE_NEWNS|CLONE_NEWIPC)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates to the host
    if sandbox:
        _read_only_everywhere()  # before the mounts below, which stay writable
        for path in ("/tmp", "/dev/shm"):
            _own_tmpfs(path, [Path(p) for p in visible])
        for path in hidden:
            _hide(Path(path), [Path(p) for p in visible])
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
    return Isolation(user=user, sandbox=sandbox, jobs_tmp=jobs_tmp, hidden=hidden, visible=visible)
