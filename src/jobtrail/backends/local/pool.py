"""A pool of long-lived worker processes, one job at a time each, that survives its workers.

``concurrent.futures.ProcessPoolExecutor`` marks the whole pool broken when one worker
dies, failing unrelated jobs; here a dead worker fails only its own job and is replaced.

::

    submit ─► pending deque ─► monitor thread ─► worker's control pipe ─► worker_main
                                    ▲  sentinels: a worker died
    listener thread ─► handle_message / worker_drained (the worker's log pipe hit EOF)

A job whose worker died is finalised only once the listener has drained that worker's log
pipe, so every record the worker sent before it died is written first; then the lines its
spool (``HOME/spool/worker-N.spool``, created here before the worker starts) still held are
written after them (``LogListener.recover``), and only then is the job's end recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

import psutil

from jobtrail.backends.local import _spawn
from jobtrail.backends.local._last_words import Recovering, WorkerSpool, WorkerSpools
from jobtrail.backends.local._spawn import start_process
from jobtrail.backends.local._watches import PoolWatches
from jobtrail.limits import SAMPLE_EVERY, Limits
from jobtrail.messages import (
    CANCELLED_ON_REQUEST,
    End,
    Message,
    Outcome,
    Progress,
    Ready,
    Started,
    Task,
)
from jobtrail.models import JobStatus
from jobtrail.processes import (
    TreeStop,
    kill_tree,
    processes_marked,
    tree_of,
    worker_mark,
)
from jobtrail.service.ports import NO_LIMITS, SERVER_STOPPED, BackendEvents
from jobtrail.worker.runtime import STOP_SIGNAL, WorkerSettings, worker_main

log = logging.getLogger("jobtrail.pool")

DRAIN_TIMEOUT = 5.0  # after a worker died, how long its descendants may keep its log pipe open
STOP_GRACE = 3.0  # on stop, how long a running job may take to stop before its tree is killed


class LogSink(Recovering, Protocol):
    """Where worker pipes go: the listener reads them and hands control messages back."""

    def add_channel(self, worker_id: int, conn: Connection) -> None: ...


@dataclass
class _Worker:
    worker_id: int
    process: BaseProcess
    pid: int
    control: Connection
    started_at: float
    job_id: str | None = None
    ready: bool = False
    cancel: TreeStop | None = None  # its job is being cancelled
    died_at: float | None = None
    drained: bool = False
    spool: WorkerSpool = dataclasses.field(default_factory=WorkerSpool)  # read if it dies
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # its job's


class WorkerPool:
    def __init__(
        self,
        size: int,
        context: BaseContext,
        settings: WorkerSettings,
        sink: LogSink,
        events: BackendEvents,
        spool_dir: Path | None = None,
        launcher: str | None = None,
    ) -> None:
        self.size = size
        self._launcher = launcher  # isolation's: each worker in a PID namespace below it
        self._spools = WorkerSpools(spool_dir)
        self._ctx = context
        self._settings = settings
        self._sink = sink
        self._events = events
        self._lock = threading.RLock()
        self._workers: dict[int, _Worker] = {}
        self._pending: deque[Task] = deque()
        self._next_id = 0
        self._stopping = False
        # Under fork and spawn this thread is the workers' parent, and their
        # PR_SET_PDEATHSIG fires when the *thread* that started them exits: it must outlive
        # their stop grace, so stop() ends it last.
        self._exiting = False
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._respawn_after = 0.0
        self._fast_deaths = 0
        self._watches = PoolWatches()  # running jobs' trees: peak memory, limits
        self._monitor = threading.Thread(
            target=self._monitor_loop, name="jobtrail-pool", daemon=True
        )

    # -- public ---------------------------------------------------------------------------
    def start(self) -> None:
        self._monitor.start()
        self._wake()

    def submit(
        self, job_id: str, job_type: str, params: dict[str, Any], limits: Limits = NO_LIMITS
    ) -> None:
        with self._lock:
            self._pending.append(Task(job_id, job_type, params, *limits.to_json().values()))
        self._wake()

    def cancel(self, job_id: str) -> str | None:
        """'pending' or 'running' for a job this pool holds, None otherwise."""
        with self._lock:
            for i, task in enumerate(self._pending):
                if task.job_id == job_id:
                    del self._pending[i]
                    return "pending"
            worker = self._worker_running(job_id)
            if worker is None:
                return None
            if worker.cancel is not None or self._watches.stopping(worker.worker_id):
                return "running"  # a second SIGTERM would cut its cleanup short
            worker.cancel = cancel = TreeStop(worker.pid)
        cancel.terminate()
        self._wake()
        return "running"

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def running_pids(self) -> dict[str, int]:
        with self._lock:
            return {w.job_id: w.pid for w in self._workers.values() if w.job_id}

    def alive_workers(self) -> int:
        with self._lock:
            return sum(
                1 for w in self._workers.values() if w.died_at is None and w.process.is_alive()
            )

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop every worker and its children; returns the ids of jobs that were running.

        A running job is told with STOP_SIGNAL, not SIGTERM, so its log says that the server
        is shutting down rather than that it was cancelled; what is left after STOP_GRACE
        is killed."""
        with self._lock:
            self._stopping = True
            interrupted = [w.job_id for w in self._workers.values() if w.job_id]
            workers = list(self._workers.values())
        self._wake()
        for worker in workers:
            try:
                worker.control.send(None)
            except (OSError, ValueError):
                pass
        busy = [w for w in workers if w.job_id is not None]
        for worker in busy:  # the job logs why it stops, runs its finally blocks, reports
            with contextlib.suppress(OSError):
                os.kill(worker.pid, STOP_SIGNAL)
        deadline = time.monotonic() + 1.0
        for worker in workers:
            if worker.job_id is None:
                worker.process.join(max(0.0, deadline - time.monotonic()))
        deadline = time.monotonic() + STOP_GRACE
        for worker in busy:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        # Busy workers and their trees: found from the worker pids (a forked worker's own
        # /proc environ is the server's, without the mark) and by the mark, which every
        # exec'd descendant carries even when reparented. Not the forkserver or resource
        # tracker: those are this process's to keep.
        tree = processes_marked(worker_mark(self._settings.home_mark))
        for worker in workers:
            if worker.process.is_alive():
                tree += tree_of(worker.pid)
        kill_tree(list({p.pid: p for p in tree}.values()), grace=1.0)
        for worker in workers:
            worker.process.join(1.0)
            worker.control.close()
            worker.spool.close()
        with self._lock:
            self._exiting = True
        self._wake()
        self._monitor.join(timeout)
        return interrupted

    # -- called by the listener thread ------------------------------------------------------
    def handle_message(self, worker_id: int, message: Message) -> None:
        if isinstance(message, Progress):
            self._events.job_progress(message.job_id, message.pct, message.step)
        elif isinstance(message, Started):  # its pid as this host sees it, not a namespace's
            worker = self._workers.get(worker_id)  # its pid is set on this thread (Ready)
            pid = message.pid if worker is None else worker.pid
            self._events.job_started(message.job_id, pid, at=message.at)
        elif isinstance(message, End):
            self._job_end_message(worker_id, message.job_id, message.outcome)
        elif isinstance(message, Ready):
            with self._lock:
                worker = self._workers.get(worker_id)
                if worker is not None:
                    worker.ready = True
                    if self._launcher is not None:
                        worker.pid = _spawn.launched_pid(worker.pid)
                    self._fast_deaths = 0
            self._wake()

    def worker_drained(self, worker_id: int) -> None:
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is not None:
                worker.drained = True
        self._wake()

    # -- internals --------------------------------------------------------------------------
    def _job_end_message(self, worker_id: int, job_id: str, outcome: Outcome) -> None:
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is None or worker.job_id != job_id:
                return
            if worker.cancel is not None:
                outcome = dataclasses.replace(
                    outcome, status=JobStatus.CANCELLED, error=CANCELLED_ON_REQUEST
                )
            elif self._stopping and outcome.status is JobStatus.CANCELLED:
                # the SIGTERM came from stop(), not from a person: say what happened
                outcome = dataclasses.replace(
                    outcome, status=JobStatus.FAILED, error=SERVER_STOPPED
                )
            limited = self._watches.stopping(worker_id)
            outcome = self._watches.ended(worker_id, outcome)  # its peak; a limit's error
            if outcome.status is JobStatus.CANCELLED or limited:
                worker.ready = False  # it exits after a cancel or a limit: no new job
            worker.job_id = None
        self._events.job_ended(job_id, outcome)
        self._wake()

    def _worker_running(self, job_id: str) -> _Worker | None:
        for worker in self._workers.values():
            if worker.job_id == job_id and worker.died_at is None:
                return worker
        return None

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"")
        except (OSError, ValueError):
            pass

    def _spawn(self) -> None:
        self._next_id += 1
        worker_id = self._next_id
        control_r, control_w = self._ctx.Pipe(duplex=False)
        channel_r, channel_w = self._ctx.Pipe(duplex=False)
        spool = self._spools.create(worker_id)
        process = start_process(
            self._ctx,
            worker_main,
            (worker_id, control_r, channel_w, self._settings, *spool.handover()),
            name=f"jobtrail-worker-{worker_id}",
            helper_mark=f"{self._settings.home_mark}/server",
            executable=self._launcher,
        )
        control_r.close()
        channel_w.close()
        spool.started()
        pid = process.pid
        assert pid is not None  # set by start()
        self._workers[worker_id] = _Worker(
            worker_id, process, pid, control_w, time.monotonic(), spool=spool
        )
        self._sink.add_channel(worker_id, channel_r)

    def _monitor_loop(self) -> None:
        while True:
            with self._lock:
                if self._exiting:
                    return
                if not self._stopping:  # stop() handles the workers from here
                    self._reap()
                    self._replenish()
                    self._dispatch()
                    self._escalate_cancels()
                sentinels: list[Any] = [
                    w.process.sentinel for w in self._workers.values() if w.died_at is None
                ]
            self._watches.poll()  # outside the lock: it reads /proc
            busy = self._watches.busy()
            ready = wait([self._wake_r, *sentinels], timeout=SAMPLE_EVERY if busy else 0.5)
            if self._wake_r in ready:
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()

    def _reap(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers.values()):
            if worker.died_at is None and not worker.process.is_alive():
                worker.died_at = now
                if not worker.ready and now - worker.started_at < 2.0:
                    self._fast_deaths += 1
                if worker.job_id is not None:
                    # descendants may hold the log pipe open: they die with the worker
                    kill_tree(self._orphans_of(worker))
            if worker.died_at is None:
                continue
            if (
                worker.job_id is not None
                and not worker.drained
                and now - worker.died_at < DRAIN_TIMEOUT
            ):
                continue  # wait for the listener to read everything the worker sent
            if worker.job_id is not None:
                job_id = worker.job_id
                worker.job_id = None
                worker.spool.recover(self._sink, job_id, self._settings, worker.params)
                if worker.cancel is not None:
                    outcome = Outcome.cancelled()
                else:
                    code = _spawn.exitcode(worker.process, launched=self._launcher is not None)
                    outcome = self._watches.died(worker.worker_id, code)
                self._events.job_ended(job_id, outcome)
            worker.control.close()
            worker.spool.close()
            del self._workers[worker.worker_id]

    def _orphans_of(self, worker: _Worker) -> list[psutil.Process]:
        """Descendants of a dead worker: reparented, so found by the mark they inherited."""
        return processes_marked(worker_mark(self._settings.home_mark, worker.worker_id))

    def _replenish(self) -> None:
        alive = sum(1 for w in self._workers.values() if w.died_at is None)
        if alive >= self.size:
            return
        if self._fast_deaths >= 3:
            # workers die at start-up (a broken --jobs-module?): back off instead of spinning
            now = time.monotonic()
            if now < self._respawn_after:
                return
            self._respawn_after = now + min(30.0, 0.5 * 2 ** min(self._fast_deaths, 6))
            log.error("workers keep dying at start-up; retrying (check --jobs-module imports)")
        for _ in range(self.size - alive):
            self._spawn()

    def _dispatch(self) -> None:
        for worker in self._workers.values():
            mark = worker_mark(self._settings.home_mark, worker.worker_id)
            if not self._pending:
                return
            if (
                worker.ready
                and worker.job_id is None
                and worker.died_at is None
                and worker.cancel is None
            ):
                task = self._pending.popleft()
                try:
                    worker.control.send(task)
                except (OSError, ValueError):
                    self._pending.appendleft(task)
                    continue
                worker.job_id, worker.params = task.job_id, task.params
                self._watches.start(worker.worker_id, worker.pid, worker.control, task, mark)

    def _escalate_cancels(self) -> None:
        now = time.monotonic()
        for worker in self._workers.values():
            if worker.cancel is not None and worker.died_at is None:
                worker.cancel.escalate(now)
