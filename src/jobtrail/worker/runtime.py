"""The code that runs inside a worker process: take a job, run it, report how it ended.

Everything the worker says goes down one pipe to the server's listener, in order: the
job's log batches, its progress, and finally its end. That single channel is what makes
the end-of-job barrier simple: when the listener reads "end", every record is written.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import psutil

from jobtrail.errors import JobFailed, JobtrailError
from jobtrail.processes import WORKER_MARK_ENV, kill_tree, worker_mark
from jobtrail.registry import get_job_type
from jobtrail.secrets import secret_values
from jobtrail.worker import capture
from jobtrail.worker.redact import Redactor

PLAYBOOKS_ENV = "JOBTRAIL_PLAYBOOKS"  # the server's --playbooks, for job types that need it
TOKEN_ENV = "JOBTRAIL_TOKEN"  # inherited by every descendant: finds orphans later
SERVER_WATCH_SECONDS = 0.5
BUILTIN_JOB_MODULES = ("jobtrail.jobtypes.builtin", "jobtrail.jobtypes.ansible.job")
# The server (or ``jobtrail worker``) is shutting down: stop the job as a cancel does, but
# say so, since nobody cancelled it. SIGTERM stays the cancel: it is what a person sends.
STOP_SIGNAL = signal.SIGUSR1
log = logging.getLogger("jobtrail")


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to know; picklable, so it reaches spawn and forkserver children."""

    home_mark: str
    job_modules: tuple[str, ...] = ()
    capture_level: int = logging.DEBUG
    nice: int = 10
    playbooks: str | None = None
    server_pid: int = 0
    server_started: float = 0.0
    sys_path: tuple[str, ...] = field(default_factory=tuple)
    redact_patterns: tuple[str, ...] = ()
    redact_defaults: bool = True


class JobCancelled(BaseException):
    """Raised in the job's main thread on SIGTERM (a cancel) or STOP_SIGNAL (``shutdown``:
    what runs it is stopping); a BaseException so `except Exception` in job code cannot
    swallow it."""

    def __init__(self, shutdown: bool = False) -> None:
        super().__init__("shutdown" if shutdown else "cancel")
        self.shutdown = shutdown


class JobModuleError(JobtrailError):
    """A ``--jobs-module`` could not be imported: missing, or it raised while importing.

    One line that names the module and what went wrong, because the person reading it wants
    to fix a path or a typo, not to read importlib's frames."""

    def __init__(self, module: str, exc: Exception) -> None:
        name = getattr(exc, "name", None)
        if isinstance(exc, ModuleNotFoundError) and name and (module + ".").startswith(name + "."):
            what = f"{exc} (run from the folder that holds it, or pass --app-dir)"
        elif isinstance(exc, (ModuleNotFoundError, SyntaxError)):
            what = str(exc)  # a missing dependency, or the file and line of the syntax error
        else:
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
            what = f"{type(exc).__name__}: {exc}{where}"
        super().__init__(f"cannot import job module {module!r}: {what}")
        self.module = module


def import_job_modules(modules: Iterable[str], app_dir: str | None = None) -> None:
    """Import the modules that register job types, ``app_dir`` first on ``sys.path`` (as
    uvicorn's ``--app-dir``: a module in the folder jobtrail runs from is found). Workers get
    the same ``sys.path`` through ``WorkerSettings.sys_path``."""
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # whatever the module raised: one line that names it
            raise JobModuleError(module, exc) from exc


_batcher: capture.RecordBatcher | None = None
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
        raise JobCancelled(shutdown=signum == STOP_SIGNAL)
    if signum == STOP_SIGNAL:  # no job to stop, or it is stopping already: let it finish
        return
    os._exit(128 + signum)


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker if the server dies, instead of leaving it orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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


def worker_main(
    worker_id: int, control: Connection, channel: Connection, settings: WorkerSettings
) -> None:
    """Entry point of a worker process; returns when the server sends None or goes away."""
    global _batcher
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the server's terminal is the server's
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(STOP_SIGNAL, _on_sigterm)
    _die_with_parent()
    os.environ[WORKER_MARK_ENV] = worker_mark(settings.home_mark, worker_id)
    os.environ.pop(TOKEN_ENV, None)  # a job that prints its environment must not leak it
    if settings.playbooks:
        os.environ[PLAYBOOKS_ENV] = settings.playbooks
    else:  # a forkserver started for an earlier server may have handed down another one
        os.environ.pop(PLAYBOOKS_ENV, None)
    for path in settings.sys_path:
        if path not in sys.path:
            sys.path.append(path)
    if settings.nice:
        try:
            os.nice(settings.nice)
        except OSError:
            pass
    if settings.server_pid:
        threading.Thread(
            target=_watch_server, args=(settings,), name="jobtrail-watchdog", daemon=True
        ).start()
    redactor = Redactor(settings.redact_patterns, defaults=settings.redact_defaults)
    _batcher = batcher = capture.RecordBatcher(channel.send, redact=redactor)
    capture.install(batcher, settings.capture_level, clear_inherited=True)
    streams = capture.StreamCapture(batcher)
    streams.start()
    import_job_modules((*BUILTIN_JOB_MODULES, *settings.job_modules))
    channel.send(("ready", worker_id, os.getpid()))
    while True:
        try:
            task = control.recv()
        except (EOFError, OSError):
            break
        if task is None:
            break
        job_id, job_type, params = task
        cancelled = _run_one(batcher, streams, job_id, job_type, params)
        if cancelled:
            break  # a cancelled job may have left state behind: this worker is replaced
    batcher.close()


def _run_one(
    batcher: capture.RecordBatcher,
    streams: capture.StreamCapture,
    job_id: str,
    job_type: str,
    params: dict[str, Any],
    stopped_by: str = "the server",
) -> bool:
    """Run one job and report its end; True if it was stopped (cancel or shutdown), so the
    process that ran it is not given another. ``stopped_by``: what a STOP_SIGNAL means."""
    batcher.redact.set_secrets(secret_values(params))
    batcher.begin_job(job_id)
    batcher.send_event(("start", job_id, os.getpid()))
    outcome: dict[str, Any]
    stopped = False
    _running.set()
    try:
        result = get_job_type(job_type).func(**params)
        _running.clear()
        outcome = {"status": "completed", "result": _jsonable(result)}
    except JobCancelled as stop:
        if stop.shutdown:
            log.warning("job stopped: %s is shutting down", stopped_by)
            outcome = {
                "status": "failed",
                "error": f"{stopped_by} stopped while the job was running",
            }
        else:
            log.warning("job cancelled: stopping it and its child processes")
            outcome = {"status": "cancelled", "error": "cancelled on request"}
        stopped = True
    except JobFailed as exc:
        _running.clear()
        log.error("job failed: %s", exc)
        outcome = {"status": "failed", "error": str(exc), "failure": _jsonable(exc.failure)}
    except SystemExit as exc:
        _running.clear()
        log.error("job called sys.exit(%r)", exc.code)
        outcome = {"status": "failed", "error": f"job called sys.exit({exc.code!r})"}
    except BaseException as exc:  # the job's own failure, whatever it is: report it
        _running.clear()
        log.error("job failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        outcome = {
            "status": "failed",
            "error": batcher.redact(f"{type(exc).__name__}: {exc}"),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        }
    finally:
        _running.clear()
    _stop_leftover_children()
    if not streams.sync():
        log.warning("jobtrail: output of child processes may be incomplete (sync timed out)")
        streams.sync(timeout=1.0)
    batcher.finish_job(outcome)
    return stopped


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
