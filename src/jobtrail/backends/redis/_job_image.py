"""The job's process in distributed mode: a fresh interpreter image, not a copy of the worker.

The horse forks the job's process, which is a copy of the RQ worker: the Redis password is in
its raw memory (bytes Python freed are not overwritten), where a job that reads
``/proc/self/mem`` finds it. So the copy does only what must happen before the job's code
and while it is still privileged (``horse.JobRelay.become_job_process``: its namespaces,
mounts and tmpfs, becoming USER, its parent-death signal), keeps the fds it was handed and
nothing else (``keep_only``: every other fd, the Redis sockets first, is closed by the exec)
and execs ``python -m jobtrail.backends.redis._job_image``::

    horse ─ fork ─► the copy: namespaces, USER, PDEATHSIG ─ exec ─► this module's main()
      └─ writes the task (JSON) into fd 0's pipe ────────────────────► read, fd 0 /dev/null
                                                   JobRuntime (capture, signals) runs the job

Nothing of the job is on argv or in the environment (``/proc/PID/cmdline`` is world-readable):
the task, its options (params may hold secrets), the worker's job modules and ``sys.path``
and the fd numbers come down the pipe the horse writes after the fork. The image imports
what a pool worker imports and the job modules, not redis or rq.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from jobtrail.isolation import Isolation

MODULE = "jobtrail.backends.redis._job_image"
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4
TASK_FD = 0  # the pipe the task comes down, then /dev/null


def check_reachable(
    isolation: Isolation, job_modules: Sequence[str], playbooks: str | None
) -> None:
    """``jobtrail worker --job-user``, at start: refuse (``IsolationError``, naming the path
    to open up) when USER could not exec the interpreter, import this module, jobtrail or a
    job module, or list the playbooks, as every job's process now does as USER. Checked as
    for ``serve --job-user``, outside the sandbox, whose mounts keep all of them in sight."""
    from dataclasses import replace
    from pathlib import Path

    from jobtrail import isolation as checks

    if isolation.user is None:
        return
    checks.check_reachable(
        replace(isolation, sandbox=False, jobs_tmp=None, hidden=(), visible=()),
        [MODULE, *job_modules],
        playbooks=Path(playbooks) if playbooks else None,
        sys_path=sys.path,
    )


# -- in the copy, before the exec --------------------------------------------------------------
def keep_only(keep: set[int]) -> None:
    """``keep`` survives the exec; every other fd of this process is closed by it (the
    worker's Redis sockets, whatever a library opened without close-on-exec)."""
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, closed by now
            os.set_inheritable(int(name), int(name) in keep)


def exec_image(task_read: int, keep: set[int]) -> NoReturn:
    """Become a fresh interpreter running ``main``, the task pipe as fd 0."""
    os.dup2(task_read, TASK_FD)
    os.close(task_read)
    keep_only({TASK_FD, 1, 2, *keep})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", MODULE])


def dumpable() -> bool:
    """Whether this process is dumpable (an exec makes it so: ``main`` restores this)."""
    return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1)


def hand_over(task_write: int, spec: dict[str, Any]) -> None:
    """In the horse: the task for the job's image, down the pipe its fd 0 reads. A job
    that died before reading it leaves a broken pipe: the horse then relays its death."""
    data = json.dumps(spec).encode()
    with contextlib.suppress(BrokenPipeError), open(task_write, "wb") as pipe:
        pipe.write(data)


# -- in the new image ----------------------------------------------------------------------------
def _set_dumpable(on: bool) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, int(on), 0, 0, 0)


def _refuse_a_tracer() -> None:
    """The exec made this process dumpable until ``main`` undid it: a process of the same
    user (another job, in the default mode) that attached meanwhile would stay attached.
    None can attach now, so one that is attached is refused the task."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("TracerPid:") and line.split()[1] != "0":
                raise PermissionError(f"traced by pid {line.split()[1]}: the task is not read")


def _read_task() -> dict[str, Any]:
    chunks = []
    while chunk := os.read(TASK_FD, 1 << 16):
        chunks.append(chunk)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, TASK_FD)
    os.close(null)
    spec: dict[str, Any] = json.loads(b"".join(chunks))
    return spec


def _cancelled_early(signum: int, frame: Any) -> None:
    """A cancel before JobRuntime set its handlers: what SIGTERM's default would do."""
    os._exit(128 + signum)


def main() -> NoReturn:
    """Run the job the horse handed over, its messages down the pipe to the horse."""
    _set_dumpable(False)  # until the task is read: the params may hold secrets
    if os.getpid() == 1:  # --job-user: its namespace's init, which ignores default actions
        signal.signal(signal.SIGTERM, _cancelled_early)
    code = 1
    try:
        _refuse_a_tracer()
        spec = _read_task()
        if spec["dumpable"]:  # as the fork was: USER's own /proc readable (--job-user)
            _set_dumpable(True)
        sys.path[:] = spec["sys_path"]
        _run(spec)
        code = 0
    except BaseException:  # before the capture, or past the job's end: the worker's log
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run(spec: dict[str, Any]) -> None:
    from multiprocessing.connection import Connection

    from jobtrail.isolation import Isolation
    from jobtrail.messages import Task
    from jobtrail.registry import import_job_modules, skip_param_models
    from jobtrail.worker.redact import Redactor
    from jobtrail.worker.runtime import JobRuntime
    from jobtrail.worker.spool import HandedFd, Spool
    from jobtrail.worker.streams import StreamPipes

    skip_param_models()  # validated by the server: the models would cost 40 % of the start
    import_job_modules(spec["job_modules"])
    fds, options = spec["fds"], spec["options"]
    spool = None
    if fds["spool"] >= 0:  # the mapping keeps the file
        spool = Spool.from_fd(fds["spool"])
        os.close(fds["spool"])
    pipes = None
    if fds["pipes"]:
        out_r, out_w, err_r, err_w = (HandedFd(fd) for fd in fds["pipes"])
        pipes = StreamPipes((out_r, out_w), (err_r, err_w))
    notes = fds["notes"]
    runtime = JobRuntime(
        Connection(fds["channel"], readable=False).send,
        mark=spec["mark"],
        nice=int(options.get("nice", 0)),
        level=int(options.get("level", 10)),
        redactor=Redactor(
            tuple(options.get("redact_patterns", ())), defaults=bool(options.get("redact", True))
        ),
        stopped_by=f"jobtrail worker on {spec['host']}",
        host=spec["host"],
        worker=spec["worker"] or None,
        spool=spool,
        stop_note=lambda: _stop_note(notes),
        pipes=pipes,
    )
    task = Task(spec["job_id"], spec["job_type"], spec["params"])
    with Isolation(jobs_tmp=spec["jobs_tmp"], cwd="/").job_temp():  # its TMPDIR and HOME
        runtime.run(task)
    runtime.close()


def _stop_note(fd: int) -> str | None:
    """Why the RQ worker is stopping this job: it wrote the reason before LIMIT_SIGNAL."""
    if fd < 0:
        return None
    import select

    try:
        ready, _, _ = select.select([fd], [], [], 0.5)
        note = os.read(fd, 4096) if ready else b""
    except OSError:
        return None
    return note.decode(errors="replace").strip() or None


if __name__ == "__main__":
    main()
