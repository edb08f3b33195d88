"""Local mode: jobs run in this host's process pool, records in SQLite in the home.

::

    JobService ── submit ─► PoolExecution ─► WorkerPool ─► worker processes
        ▲                                                   │ one pipe each
        └── job_started / job_progress / job_ended ◄── LogListener ─► JobLogStore

``open_backend`` wires the three parts the service needs: ``LocalJobRecords`` (records.py),
the pool as ``Execution`` (``PoolExecution``, here) and the listener as ``LogIngest``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from typing import Any

import psutil

from jobtrail import cpu_group
from jobtrail.backends.local.listener import LogListener
from jobtrail.backends.local.pool import WorkerPool
from jobtrail.backends.local.records import LocalJobRecords
from jobtrail.isolation import prepare, write_launcher
from jobtrail.limits import Limits
from jobtrail.logstore import JobLogStore
from jobtrail.messages import CANCELLED_BEFORE_START, Outcome
from jobtrail.models import Health
from jobtrail.processes import kill_tree, processes_marked
from jobtrail.service.config import ServerConfig
from jobtrail.service.home import Home
from jobtrail.service.ports import NO_LIMITS, Backend, BackendEvents
from jobtrail.worker.runtime import PLAYBOOKS_ENV, WorkerSettings

log = logging.getLogger("jobtrail.server")


class PoolExecution:
    """The pool as the service's ``Execution``: also ends a job cancelled while pending,
    and stops what a previous server on this home left running before it starts."""

    def __init__(
        self, pool: WorkerPool, records: LocalJobRecords, events: BackendEvents, mark: str
    ) -> None:
        self.pool = pool
        self._records = records
        self._events = events
        self._mark = mark

    def start(self) -> None:
        # a dead server's workers, their children, its forkserver; not our own helpers
        orphans = processes_marked(self._mark, skip_own_children=True)
        if orphans:
            log.warning("stopping %d process(es) left by a previous server", len(orphans))
            kill_tree(orphans, grace=1.0)
        self.pool.start()

    def stop(self) -> list[str]:
        """The pool's interrupted jobs, and any job still shown running: none will finish."""
        interrupted = self.pool.stop()
        return list(dict.fromkeys([*interrupted, *self._records.running_ids()]))

    def submit(
        self, job_id: str, job_type: str, params: dict[str, Any], limits: Limits = NO_LIMITS
    ) -> None:
        self.pool.submit(job_id, job_type, params, limits)

    def cancel(self, job_id: str) -> str | None:
        where = self.pool.cancel(job_id)
        if where == "pending":
            self._events.job_ended(job_id, Outcome.cancelled(CANCELLED_BEFORE_START))
        return where

    async def health_on_loop(self) -> Health:
        """The pool's counts are in memory: never a wait."""
        return self.health()

    def health(self) -> Health:
        return Health(
            workers=self.pool.size,
            workers_alive=self.pool.alive_workers(),
            pending=self.pool.pending_count(),
            running=len(self.pool.running_pids()),
        )

    def running_pids(self) -> dict[str, int]:
        """Job id -> its worker's pid, for the jobs running now."""
        return self.pool.running_pids()


def open_backend(
    config: ServerConfig, home: Home, store: JobLogStore, events: BackendEvents
) -> Backend:
    records = LocalJobRecords(home.path / "jobs.sqlite3")
    listener = LogListener(
        store,
        lambda worker_id, message: pool.handle_message(worker_id, message),
        lambda worker_id: pool.worker_drained(worker_id),
    )
    isolation = prepare(
        config.job_user,
        config.sandbox,
        home=home.path,
        playbooks=config.playbooks,
        sys_path=sys.path,
    )
    cpu = cpu_group.for_jobs(config.worker_cpu, config.worker_nice, log)
    # an isolated worker is spawned through its launcher, each in a PID namespace of its own
    launcher = write_launcher(isolation, home.path / "run", cpu) if isolation.active else None
    context = multiprocessing.get_context("spawn" if launcher else config.start_method)
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["jobtrail.worker.runtime"])
    settings = WorkerSettings(
        home_mark=home.mark,
        job_modules=config.job_modules,
        capture_level=config.capture_level,
        nice=config.worker_nice,
        cpu_group=cpu,
        sys_path=tuple(sys.path),
        playbooks=os.environ.get(PLAYBOOKS_ENV),
        redact_patterns=config.redact_patterns,
        redact_defaults=config.redact_defaults,
        # in its namespace the server is out of sight: the launcher's PDEATHSIG stops it
        server_pid=0 if launcher else os.getpid(),
        server_started=psutil.Process().create_time(),
        isolation=isolation,
    )
    pool = WorkerPool(
        config.workers,
        context,
        settings,
        listener,
        events,
        spool_dir=home.path / "spool",
        launcher=launcher,
    )
    return Backend(records, PoolExecution(pool, records, events, home.mark), listener)
