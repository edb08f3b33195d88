"""``jobtrail worker --job-user``: each job's process in PID, mount and IPC namespaces of its own.

Jobs share USER, so without them one job could signal, ptrace or read the /proc of another
(``isolation.become`` makes it dumpable again) and see the worker's processes. The horse
calls ``new_pid_namespace`` just before it forks the job's process, which so becomes pid 1
of a new PID namespace; the horse stays outside (it keeps its pid, and relays). In the fork,
still root, ``enter_job_namespaces`` makes a mount namespace with a fresh /proc (only the
job's own processes) and a tmpfs of its own over the jobs' folder, and an IPC namespace.

The RQ worker, outside, still sees the job's tree with host pids in /proc: its watches,
limits and cancels work as before. As pid 1, the job's process receives from outside only
the signals it has a handler for (JobRuntime sets SIGTERM's and the stop signals') and
SIGKILL; a signal it sends itself, or one of its children sends it, without a handler, is
ignored; and its death kills every process left in its namespace.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_REC, MS_PRIVATE = 0x4000, 0x40000

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


def enter_job_namespaces(jobs_tmp: str | None, tmp_mode: int) -> None:
    """In the job's process (pid 1 of its PID namespace), as root: a private mount namespace
    with a /proc of this PID namespace and ``jobs_tmp`` a tmpfs of its own, and an IPC
    namespace, before it becomes USER."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare(CLONE_NEWNS|CLONE_NEWIPC)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates to the host
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    if jobs_tmp:
        _mount("tmpfs", jobs_tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={tmp_mode:o}")
