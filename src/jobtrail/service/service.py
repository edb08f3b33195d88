"""The server-side core: the home, the job records, the listener and the pool, wired together.

The API and the CLI's embedded server only talk to ``JobServer``; it owns no HTTP.
Job state of pending and running jobs lives in memory (``_active``) and is written through
to SQLite on every change but progress, which is persisted at most every
``PROGRESS_PERSIST_SECONDS``, so a chatty job cannot turn into a stream of disk writes.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from jobtrail.backends.local.listener import LogListener
from jobtrail.backends.local.pool import SERVER_STOPPED, WorkerPool
from jobtrail.backends.local.records import JobDB
from jobtrail.errors import JobFinished, JobNotFound, LogsExpired, QueueFull
from jobtrail.logstore.store import JobLogStore, LinePage, LogPage, LogStats, Record
from jobtrail.models import Health, Job, JobStatus, is_job_id, new_job_id
from jobtrail.processes import kill_tree, processes_marked
from jobtrail.registry import get_job_type
from jobtrail.secrets import MASK, mask_secrets, secret_values
from jobtrail.service.retention import expire_logs
from jobtrail.worker.runtime import (
    BUILTIN_JOB_MODULES,
    PLAYBOOKS_ENV,
    WorkerSettings,
    import_job_modules,
)

log = logging.getLogger("jobtrail.server")

START_METHODS = ("fork", "spawn", "forkserver")
PROGRESS_PERSIST_SECONDS = 1.0
SECRETS_LOST = (
    "the server restarted before the job started, and secret params are never written to "
    "disk: submit it again"
)


def default_start_method() -> str:
    """forkserver: workers start from a clean single-threaded process, not a copy of the
    multi-threaded server (fork), and faster than spawn; env JOBTRAIL_START_METHOD overrides."""
    method = os.environ.get("JOBTRAIL_START_METHOD", "forkserver")
    if method not in START_METHODS:
        raise ValueError(
            f"JOBTRAIL_START_METHOD must be one of {', '.join(START_METHODS)}; got {method!r}"
        )
    return method


def default_home() -> Path:
    return Path(os.environ.get("JOBTRAIL_HOME", "~/.jobtrail")).expanduser()


@dataclass(frozen=True)
class ServerConfig:
    home: Path = field(default_factory=default_home)
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    start_method: str = field(default_factory=default_start_method)
    job_modules: tuple[str, ...] = ()
    playbooks: Path | None = None
    log_max_bytes: int = 10 * 1024 * 1024
    log_segments: int = 5
    retention_hours: float = 72.0
    capture_level: int = logging.DEBUG
    worker_nice: int = 10
    max_pending: int = 10_000
    token: str | None = None  # with a token, every endpoint but /api/health needs it
    redact_patterns: tuple[str, ...] = ()
    redact_defaults: bool = True
    backend: str = "local"  # or redis://HOST:PORT/DB: see jobtrail.distributed


def home_mark(home: Path) -> str:
    """The mark every process of a server on this home carries in its environment."""
    return "jt-" + hashlib.sha256(str(home.expanduser().resolve()).encode()).hexdigest()[:16]


class HomeInUse(RuntimeError):
    """Another jobtrail server already uses this home; the message names it (pid, URL)
    from what it wrote into ``server.lock``."""

    def __init__(self, home: Path, holder: str) -> None:
        try:
            found = json.loads(holder)
        except ValueError:
            found = {}
        about = [f"pid {found['pid']}"] if isinstance(found, dict) and found.get("pid") else []
        if isinstance(found, dict) and found.get("url"):
            about.append(str(found["url"]))
        named = f" ({', '.join(about)})" if about else ""
        super().__init__(f"home {home} is in use by another jobtrail server{named}")
        self.home = home


def open_server(config: ServerConfig) -> JobServer:
    """The server for ``config.backend``: this module's local one, or the Redis-backed one."""
    if config.backend == "local":
        return JobServer(config)
    from jobtrail.backends.redis.command import check_backend
    from jobtrail.backends.redis.server import DistributedServer

    check_backend(config.backend)
    return DistributedServer(config)


class JobServer:
    def __init__(self, config: ServerConfig) -> None:
        self._open_home(config)
        self.db = JobDB(self.home / "jobs.sqlite3")
        self._lock = threading.Lock()
        self._active: dict[str, Job] = {}
        self._progress_saved: dict[str, float] = {}
        self._ended = threading.Condition(self._lock)
        self.listener = LogListener(self.store, self._on_message, self._on_drained)
        context = multiprocessing.get_context(config.start_method)
        if config.start_method == "forkserver":
            context.set_forkserver_preload(["jobtrail.worker.runtime"])
        settings = WorkerSettings(
            home_mark=self.mark,
            job_modules=config.job_modules,
            capture_level=config.capture_level,
            nice=config.worker_nice,
            sys_path=tuple(sys.path),
            playbooks=os.environ.get(PLAYBOOKS_ENV),
            redact_patterns=config.redact_patterns,
            redact_defaults=config.redact_defaults,
            server_pid=os.getpid(),
            server_started=psutil.Process().create_time(),
        )
        self.pool = WorkerPool(config.workers, context, settings, self.listener, self)
        self._started = False

    def _open_home(self, config: ServerConfig) -> None:
        """What a server needs whatever runs its jobs: the job types imported, the home
        created private and locked to this server, its process mark, and the log store."""
        self.config = config
        # job types read it in the server (param checks) and in workers, which inherit it
        if config.playbooks is not None:
            os.environ[PLAYBOOKS_ENV] = str(config.playbooks.expanduser().resolve())
        else:
            os.environ.pop(PLAYBOOKS_ENV, None)
        import_job_modules((*BUILTIN_JOB_MODULES, *config.job_modules))
        self.home = config.home.expanduser().resolve()
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        lock_path = self.home / "server.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)  # a lock file from an older version may be 0644
        self._lock_file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._lock_file.read()
            self._lock_file.close()
            raise HomeInUse(self.home, holder) from None
        self.publish_address(None)
        self.mark = home_mark(self.home)
        self.store = JobLogStore(
            self.home / "logs",
            max_segment_bytes=config.log_max_bytes,
            max_segments=config.log_segments,
        )

    def publish_address(self, url: str | None) -> None:
        """Write this server's pid and URL into the lock it holds, so a second server on
        the same home can say which one is in the way."""
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(json.dumps({"pid": os.getpid(), "url": url}) + "\n")
        self._lock_file.flush()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Recover from a previous server's end, then start the listener and the workers."""
        # a dead server's workers, their children, its forkserver; not our own helpers
        orphans = processes_marked(self.mark, skip_own_children=True)
        if orphans:
            log.warning("stopping %d process(es) left by a previous server", len(orphans))
            kill_tree(orphans, grace=1.0)
        failed = self.db.fail_running(SERVER_STOPPED, time.time())
        if failed:
            log.warning("marked %d job(s) failed: %s", len(failed), SERVER_STOPPED)
        self.listener.start()
        self.pool.start()
        for job in self.db.pending():
            if MASK in secret_values(job.params):
                # secret values live only in memory: this job cannot run as submitted
                now = time.time()
                self.db.update(
                    job.job_id, status=JobStatus.FAILED, error=SECRETS_LOST, completed_at=now
                )
                continue
            with self._lock:
                self._active[job.job_id] = job
            self.pool.submit(job.job_id, job.job_type, job.params)
        self._started = True

    def stop(self) -> None:
        if not self._started:
            self._close_files()
            return
        self._started = False
        interrupted = self.pool.stop()
        self.listener.stop()
        now = time.time()
        for job_id in interrupted:
            with self._lock:
                job = self._active.pop(job_id, None)
            if job is not None and not job.status.terminal:
                self.db.update(
                    job_id,
                    status=JobStatus.FAILED,
                    error=SERVER_STOPPED,
                    completed_at=now,
                )
        with self._lock:
            for job in self._active.values():
                if job.status is JobStatus.RUNNING:
                    self.db.update(
                        job.job_id, status=JobStatus.FAILED, error=SERVER_STOPPED, completed_at=now
                    )
        self._close_files()

    def _close_files(self) -> None:
        self.store.close()
        self.db.close()
        self._lock_file.close()

    # -- jobs -------------------------------------------------------------------------------
    def submit(self, job_type: str, params: dict[str, Any]) -> Job:
        job, values = self._accept(job_type, params, self.pool.pending_count())
        self.db.insert(job)
        with self._lock:
            self._active[job.job_id] = job
        self.pool.submit(job.job_id, job_type, values)
        return replace(job)

    def _accept(
        self, job_type: str, params: dict[str, Any], pending: int
    ) -> tuple[Job, dict[str, Any]]:
        """The record to store (secrets masked) and the checked params to run, or why not."""
        values = get_job_type(job_type).validate(params)
        if pending >= self.config.max_pending:
            raise QueueFull(self.config.max_pending)
        job = Job(
            job_id=new_job_id(job_type),
            job_type=job_type,
            params=mask_secrets(values),
            created_at=time.time(),
        )
        return job, values

    def get(self, job_id: str) -> Job:
        if not is_job_id(job_id):
            raise JobNotFound(job_id)
        with self._lock:
            job = self._active.get(job_id)
            if job is not None:
                return replace(job)
        found = self.db.get(job_id)
        if found is None:
            raise JobNotFound(job_id)
        return found

    def list(
        self, status: str | None = None, job_type: str | None = None, limit: int = 50
    ) -> builtins.list[Job]:
        jobs = self.db.list_jobs(status, job_type, limit)
        with self._lock:
            return [replace(self._active.get(job.job_id, job)) for job in jobs]

    def cancel(self, job_id: str) -> Job:
        """The job as the cancel left it: ``cancelled`` if it had not started; still
        ``running`` with ``cancel_requested`` while its process tree is being stopped (asking
        again changes nothing). JobFinished once it ended."""
        job = self.get(job_id)
        if job.status.terminal:
            raise JobFinished(job_id, job.status.value)
        where = self.pool.cancel(job_id)
        if where == "pending":
            self.job_ended(job_id, {"status": "cancelled", "error": "cancelled before it started"})
        elif where == "running":
            with self._lock:
                active = self._active.get(job_id)
                if active is not None:  # else it ended meanwhile: get() shows how
                    active.cancel_requested = True
                    self.db.update(job_id, cancel_requested=True)
        return self.get(job_id)

    def wait(self, job_id: str, timeout: float) -> Job:
        """Block until the job is terminal (or timeout); for the CLI and tests."""
        deadline = time.monotonic() + timeout
        with self._ended:
            while job_id in self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ended.wait(left)
        return self.get(job_id)

    def check_logs(self, job_id: str) -> Job:
        """The job, if its logs can be read; LogsExpired once retention removed them."""
        job = self.get(job_id)
        if job.logs_expired:
            raise LogsExpired(job_id, self.config.retention_hours)
        return job

    def log_file(self, job_id: str) -> str:
        return str(self.store.log_path(job_id))

    # -- the facade's log reads: the API calls these, never the store -----------------------
    def recent(self, job_id: str, n: int = 50) -> builtins.list[Record]:
        return self.store.recent(job_id, n)

    def read(
        self,
        job_id: str,
        *,
        tail: int = 100,
        min_level: str = "DEBUG",
        after: int | None = None,
        since: str | None = None,
        match: Mapping[str, str] | None = None,
    ) -> LogPage:
        return self.store.read(
            job_id, tail=tail, min_level=min_level, after=after, since=since, match=match
        )

    def read_lines(self, job_id: str, *, after: int, limit: int = 2000) -> LinePage:
        return self.store.read_lines(job_id, after=after, limit=limit)

    def watch(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (in the store's writer thread) after each append to the job."""
        return self.store.watch(job_id, callback)

    def stats(self, job_id: str) -> LogStats:
        return self.store.stats(job_id)

    def health(self) -> Health:
        return Health(
            workers=self.pool.size,
            workers_alive=self.pool.alive_workers(),
            pending=self.pool.pending_count(),
            running=len(self.pool.running_pids()),
        )

    # -- events from the pool (listener and monitor threads) ---------------------------------
    def job_started(self, job_id: str, pid: int) -> None:
        now = time.time()
        with self._lock:
            job = self._active.get(job_id)
            if job is None:
                return
            job.status = JobStatus.RUNNING
            job.started_at = now
        self.db.update(job_id, status=JobStatus.RUNNING, started_at=now)

    def job_progress(self, job_id: str, pct: float, step: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            job = self._active.get(job_id)
            if job is None:
                return
            job.progress = pct
            job.current_step = step if step is not None else job.current_step
            if now - self._progress_saved.get(job_id, 0.0) < PROGRESS_PERSIST_SECONDS:
                return
            self._progress_saved[job_id] = now
            step = job.current_step
        self.db.update(job_id, progress=pct, current_step=step)

    def job_ended(self, job_id: str, outcome: dict[str, Any]) -> None:
        now = time.time()
        status = JobStatus(outcome["status"])
        with self._lock:
            job = self._active.get(job_id)
            if job is None:
                return
            extra = self._ended_extra(job, outcome)
            fields: dict[str, Any] = {
                "status": status,
                "error": outcome.get("error"),
                "result": outcome.get("result"),
                "completed_at": now,
                "extra": extra,
            }
            if status is JobStatus.COMPLETED:
                fields["progress"] = 100.0
            else:
                fields["progress"] = job.progress
            fields["current_step"] = job.current_step
            self.db.update(job_id, **fields)
            self._active.pop(job_id, None)
            self._progress_saved.pop(job_id, None)
            self._ended.notify_all()

    def _ended_extra(self, job: Job, outcome: dict[str, Any]) -> dict[str, Any]:
        """The job's extra fields once it ended: what the worker reported (drops, last seq,
        failure digest), plus what the listener could not write."""
        extra = dict(job.extra)
        for key in ("dropped", "last_seq", "failure"):
            if key in outcome:
                extra[key] = outcome[key]
        stats = self.store.stats(job.job_id)
        if stats.dropped:
            extra["dropped"] = extra.get("dropped", 0) + stats.dropped
            extra["log_note"] = f"log cut: {stats.cut_reason}"
        return extra

    def _on_message(self, worker_id: int, message: tuple[Any, ...]) -> None:
        self.pool.handle_message(worker_id, message)

    def _on_drained(self, worker_id: int) -> None:
        self.pool.worker_drained(worker_id)

    # -- retention ----------------------------------------------------------------------------
    def expire_logs(
        self, older_than_hours: float | None = None, dry_run: bool = False
    ) -> builtins.list[str]:
        """Delete logs of jobs that ended longer ago than the retention; never a running job's."""
        hours = self.config.retention_hours if older_than_hours is None else older_than_hours
        return expire_logs(self.db, self.store, hours, dry_run)
