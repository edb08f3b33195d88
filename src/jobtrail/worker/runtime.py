"""The one bootstrap of a process that runs jobs, and the pool worker built on it.

::

    pool worker (worker_main)                 RQ work-horse (backends/redis/horse.run_job)
    long-lived, one job after another         a fresh fork per job
    send = its log pipe to the listener       send = XADD to the job's stream
            └──────────────────── JobRuntime ────────────────────┘
      signals (SIGTERM → JobCancelled), die with parent, mark, no token, nice,
      redactor, batcher, root-logger handler, fd 1/2 capture;
      run(task): Started, the job's batches and progress, End(outcome); close()

Everything the process says goes down its one channel in order, which is what makes the
end-of-job barrier simple: when the reader sees ``End``, every record is written.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import psutil

from jobtrail import cpu_group
from jobtrail.errors import JobFailed
from jobtrail.isolation import Isolation
from jobtrail.limits import LIMIT_SIGNAL
from jobtrail.messages import Outcome, Ready, Started, StopNote, Task
from jobtrail.models import JobStatus
from jobtrail.processes import (
    below_the_server,
    die_with_parent,
    kill_tree,
    mark_this_process,
    worker_mark,
)
from jobtrail.registry import get_job_type, import_job_modules
from jobtrail.secrets import secret_values
from jobtrail.worker.batcher import RecordBatcher, Send
from jobtrail.worker.failure import describe as describe_exception
from jobtrail.worker.handler import install
from jobtrail.worker.redact import Redactor
from jobtrail.worker.spool import HandedFd, Spool
from jobtrail.worker.streams import StreamCapture, StreamPipes

PLAYBOOKS_ENV = "JOBTRAIL_PLAYBOOKS"  # the server's --playbooks, for job types that need it
TOKEN_ENV = "JOBTRAIL_TOKEN"  # the API token: a job that prints its environment must not leak it
SERVER_WATCH_SECONDS = 0.5
# The server (or ``jobtrail worker``) is shutting down: stop the job as a cancel does, but
# say so, since nobody cancelled it. SIGTERM stays the cancel: it is what a person sends.
STOP_SIGNAL = signal.SIGUSR1
log = logging.getLogger("jobtrail")


class JobCancelled(BaseException):
    """Raised in the job's main thread on SIGTERM (a cancel), STOP_SIGNAL (``shutdown``:
    what runs it is stopping) or LIMIT_SIGNAL (``limit``: over its memory limit or
    timeout); a BaseException so `except Exception` in job code cannot swallow it."""

    def __init__(self, shutdown: bool = False, limit: bool = False) -> None:
        super().__init__("limit" if limit else "shutdown" if shutdown else "cancel")
        self.shutdown = shutdown
        self.limit = limit


_batcher: RecordBatcher | None = None
_running = threading.Event()


def progress(pct: float, step: str | None = None) -> None:
    """Report how far the current job is (0-100) and, optionally, what it is doing now.

    Safe from any thread of the job; a no-op outside a worker, so job functions stay
    callable from plain scripts and tests.
    """
    if _batcher is not None:
        _batcher.set_progress(max(0.0, min(100.0, float(pct))), None if step is None else str(step))


def _on_sigterm(signum: int, frame: Any) -> None:
    if _running.is_set():
        _running.clear()
        raise JobCancelled(shutdown=signum == STOP_SIGNAL, limit=signum == LIMIT_SIGNAL)
    if signum in (STOP_SIGNAL, LIMIT_SIGNAL):  # no job to stop, or it is stopping: let it be
        return
    os._exit(128 + signum)


class JobRuntime:
    """This process, set up to run jobs: its capture installed, its signals meaning cancel.

    ``stopped_by`` names what a STOP_SIGNAL means in a job's error ("the server");
    ``host`` and ``worker`` say where the job runs, in its ``Started``.
    """

    def __init__(
        self,
        send: Send,
        *,
        mark: str,
        nice: int,
        level: int,
        redactor: Redactor,
        stopped_by: str,
        host: str | None = None,
        worker: str | None = None,
        spool: Spool | None = None,
        stop_note: Callable[[], str | None] | None = None,
        pipes: StreamPipes | None = None,
    ) -> None:
        global _batcher
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on a terminal is the server's
        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.signal(STOP_SIGNAL, _on_sigterm)
        signal.signal(LIMIT_SIGNAL, _on_sigterm)
        die_with_parent()  # what started this process died: do not run a job for nobody
        mark_this_process(mark)
        os.environ.pop(TOKEN_ENV, None)
        below_the_server(nice)
        self.batcher = _batcher = RecordBatcher(send, redact=redactor, spool=spool)
        install(self.batcher, level, clear_inherited=True)
        self.streams = StreamCapture(self.batcher, spool, pipes)  # pipes: the survivor's
        self.streams.start()
        self._stopped_by = stopped_by
        self._stop_note = stop_note  # why a LIMIT_SIGNAL came, as its sender wrote it
        self._host = host
        self._worker = worker

    def run(self, task: Task) -> bool:
        """Run one job and report its end; True if it was stopped (cancel or shutdown), so
        the process that ran it is not given another."""
        batcher = self.batcher
        batcher.redact.set_secrets(secret_values(task.params))
        batcher.begin_job(task.job_id)
        batcher.send_event(
            Started(task.job_id, os.getpid(), self._host, self._worker, at=time.time())
        )
        outcome, stopped = self._call(task)
        _stop_leftover_children()
        if not self.streams.sync():
            log.warning("jobtrail: output of child processes may be incomplete (sync timed out)")
            self.streams.sync(timeout=1.0)
        batcher.finish_job(outcome)
        return stopped

    def _call(self, task: Task) -> tuple[Outcome, bool]:
        """The job function's outcome, logged as it happens (a traceback goes to the log)."""
        _running.set()
        try:
            result = get_job_type(task.job_type).func(**task.params)
            _running.clear()
            return Outcome(JobStatus.COMPLETED, result=_jsonable(result)), False
        except JobCancelled as stop:
            if stop.limit:
                error = (self._stop_note and self._stop_note()) or "stopped over a limit"
                log.error("job stopped: %s", error)
                return Outcome.failed(error), True
            if stop.shutdown:
                log.warning("job stopped: %s is shutting down", self._stopped_by)
                return Outcome.failed(f"{self._stopped_by} stopped while the job was running"), True
            log.warning("job cancelled: stopping it and its child processes")
            return Outcome.cancelled(), True
        except JobFailed as exc:
            _running.clear()
            log.error("job failed: %s", exc)
            return Outcome(JobStatus.FAILED, str(exc), failure=_jsonable(exc.failure)), False
        except SystemExit as exc:
            _running.clear()
            log.error("job called sys.exit(%r)", exc.code)
            return Outcome.failed(f"job called sys.exit({exc.code!r})"), False
        except BaseException as exc:  # the job's own failure, whatever it is: report it
            _running.clear()
            error, failure = describe_exception(exc, self.batcher.redact)
            log.error("job failed: %s", error, exc_info=True)
            return Outcome(JobStatus.FAILED, error, failure=failure), False
        finally:
            _running.clear()

    def close(self) -> None:
        self.batcher.close()


def _stop_leftover_children() -> None:
    """A job's children must not outlive it: they would write into the next job's log."""
    children = psutil.Process().children(recursive=True)
    if children:
        log.warning(
            "jobtrail: stopping %d process(es) the job left running: %s",
            len(children),
            ", ".join(str(c.pid) for c in children),
        )
        kill_tree(children, grace=2.0)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


# -- the pool worker ----------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to know; picklable, so it reaches spawn and forkserver children."""

    home_mark: str
    job_modules: tuple[str, ...] = ()
    capture_level: int = logging.DEBUG
    nice: int = 10
    cpu_group: str | None = None  # the idle cpu cgroup jobs join (``cpu_group``), if any
    playbooks: str | None = None
    server_pid: int = 0
    server_started: float = 0.0
    sys_path: tuple[str, ...] = field(default_factory=tuple)
    redact_patterns: tuple[str, ...] = ()
    redact_defaults: bool = True
    isolation: Isolation = field(default_factory=Isolation)  # --job-user, --sandbox


def _watch_server(settings: WorkerSettings) -> None:
    """If the server dies, stop this worker and its children instead of finishing the job
    for nobody (under forkserver the server is not our parent, so PDEATHSIG cannot help)."""
    while True:
        time.sleep(SERVER_WATCH_SECONDS)
        try:
            alive = psutil.Process(settings.server_pid).create_time() == settings.server_started
        except psutil.Error:
            alive = False
        if not alive:
            for child in psutil.Process().children(recursive=True):
                try:
                    child.kill()
                except psutil.Error:
                    pass
            os._exit(70)


def _stop_note(control: Connection) -> str | None:
    """The pool's note sent just before LIMIT_SIGNAL (it is in the pipe by then)."""
    try:
        note = control.recv() if control.poll(0.5) else None
    except (EOFError, OSError):
        return None
    return note.error if isinstance(note, StopNote) else None


def _map_spool(handed: HandedFd | None) -> Spool | None:
    if handed is None:
        return None
    try:
        return Spool.from_fd(handed.fd)
    finally:
        os.close(handed.fd)  # the mapping keeps the file; under fork this is our copy


def worker_main(
    worker_id: int,
    control: Connection,
    channel: Connection,
    settings: WorkerSettings,
    spool_fd: HandedFd | None = None,
    pipes: StreamPipes | None = None,
) -> None:
    """Entry point of a pool worker; returns when the server sends None or goes away.
    ``spool_fd`` is the spool the pool created for it, open (the pool reads it if it dies);
    the worker maps it and closes the fd, so it never needs the spool's path. ``pipes``:
    fd 1's and 2's, whose read ends the pool keeps too (what they hold at a death is kept)."""
    if settings.playbooks:
        os.environ[PLAYBOOKS_ENV] = settings.playbooks
    else:  # a forkserver started for an earlier server may have handed down another one
        os.environ.pop(PLAYBOOKS_ENV, None)
    for path in settings.sys_path:
        if path not in sys.path:
            sys.path.append(path)
    if settings.cpu_group:  # as root, before --job-user (a launcher under bwrap has joined)
        cpu_group.join(settings.cpu_group)
    settings.isolation.enter()  # before JobRuntime: a change of user clears PDEATHSIG
    if settings.server_pid:
        threading.Thread(
            target=_watch_server, args=(settings,), name="jobtrail-watchdog", daemon=True
        ).start()
    runtime = JobRuntime(
        channel.send,
        mark=worker_mark(settings.home_mark, worker_id),
        nice=settings.nice,
        level=settings.capture_level,
        redactor=Redactor(settings.redact_patterns, defaults=settings.redact_defaults),
        stopped_by="the server",
        spool=_map_spool(spool_fd),
        stop_note=lambda: _stop_note(control),
        pipes=pipes,
    )
    import_job_modules(settings.job_modules)
    channel.send(Ready())
    while True:
        try:
            task: Task | None = control.recv()
        except (EOFError, OSError):
            break
        if isinstance(task, StopNote):  # it came after the job it was about had ended:
            channel.send(Ready())  # the pool held this worker back for it; it goes on
            continue
        if task is None:
            break
        with settings.isolation.job_temp():  # its private TMPDIR and HOME, if isolated
            stopped = runtime.run(task)
        if stopped:
            break  # stopped, or a cancelled job may have left state behind: replace me
    runtime.close()
