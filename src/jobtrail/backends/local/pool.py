"""A pool of long-lived worker processes, one job at a time each, that survives its workers.

``concurrent.futures.ProcessPoolExecutor`` marks the whole pool broken when one worker
dies, failing unrelated jobs; here a dead worker fails only its own job and is replaced.

::

    submit ─► pending deque ─► monitor thread ─► worker's control pipe ─► worker_main
                                    ▲  sentinels: a worker died
    listener thread ─► handle_message / worker_drained (the worker's log pipe hit EOF)

A job whose worker died is finalised only once the listener has drained that worker's log
pipe, so every record the worker sent before it died is written first.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import types
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import psutil

from jobtrail.processes import (
    WORKER_MARK_ENV,
    death_reason,
    kill_tree,
    processes_marked,
    worker_mark,
)
from jobtrail.worker.runtime import STOP_SIGNAL, WorkerSettings, worker_main

__all__ = ["WorkerPool", "death_reason", "kill_tree", "processes_marked"]
log = logging.getLogger("jobtrail.pool")

SERVER_STOPPED = "the server stopped while the job was running"
DRAIN_TIMEOUT = 5.0  # after a worker died, how long its descendants may keep its log pipe open
CANCEL_GRACE = 3.0  # SIGTERM first (the job's finally blocks run), SIGKILL after this
STOP_GRACE = 3.0  # on stop, how long a running job may take to stop before its tree is killed


class PoolEvents(Protocol):
    """What the pool tells the server about jobs."""

    def job_started(self, job_id: str, pid: int) -> None: ...
    def job_progress(self, job_id: str, pct: float, step: str | None) -> None: ...
    def job_ended(self, job_id: str, outcome: dict[str, Any]) -> None: ...


class LogSink(Protocol):
    """Where worker pipes go: the listener reads them and hands control messages back."""

    def add_channel(self, worker_id: int, conn: Connection) -> None: ...


@dataclass
class _Worker:
    worker_id: int
    process: BaseProcess
    control: Connection
    started_at: float
    job_id: str | None = None
    ready: bool = False
    cancelling: bool = False
    cancel_deadline: float = 0.0
    died_at: float | None = None
    drained: bool = False


@contextlib.contextmanager
def _without_main_module() -> Iterator[None]:
    """Hide the server's ``__main__`` from spawn and forkserver children.

    They would import it again (running a script's top level twice, or failing outright for
    ``python -`` and REPLs); workers need only the job modules. Job types therefore live in
    importable modules (``--jobs-module``), never in ``__main__``.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@contextlib.contextmanager
def _marked_environment(mark: str) -> Iterator[None]:
    """Start helper processes (forkserver, resource tracker) with the home's mark, so a
    restarted server finds and stops them too if this one is killed.

    Only the C environment, which those processes inherit, is changed (``os.putenv``):
    ``os.environ`` itself stays untouched, because another thread may be iterating it
    (``urllib.request.getproxies`` does, for every httpx client) and would fail with a
    KeyError when a key vanishes under it."""
    before = os.environ.get(WORKER_MARK_ENV)
    os.putenv(WORKER_MARK_ENV, mark)
    try:
        yield
    finally:
        if before is None:
            os.unsetenv(WORKER_MARK_ENV)
        else:
            os.putenv(WORKER_MARK_ENV, before)


class WorkerPool:
    def __init__(
        self,
        size: int,
        context: BaseContext,
        settings: WorkerSettings,
        sink: LogSink,
        events: PoolEvents,
    ) -> None:
        self.size = size
        self._ctx = context
        self._settings = settings
        self._sink = sink
        self._events = events
        self._lock = threading.RLock()
        self._workers: dict[int, _Worker] = {}
        self._pending: deque[tuple[str, str, dict[str, Any]]] = deque()
        self._next_id = 0
        self._stopping = False
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._respawn_after = 0.0
        self._fast_deaths = 0
        self._monitor = threading.Thread(
            target=self._monitor_loop, name="jobtrail-pool", daemon=True
        )

    # -- public ---------------------------------------------------------------------------
    def start(self) -> None:
        self._monitor.start()
        self._wake()

    def submit(self, job_id: str, job_type: str, params: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append((job_id, job_type, params))
        self._wake()

    def cancel(self, job_id: str) -> str | None:
        """'pending' or 'running' for a job this pool holds, None otherwise."""
        with self._lock:
            for i, (pending_id, _, _) in enumerate(self._pending):
                if pending_id == job_id:
                    del self._pending[i]
                    return "pending"
            worker = self._worker_running(job_id)
            if worker is None:
                return None
            if worker.cancelling:  # already stopping: a second SIGTERM would cut its cleanup
                return "running"
            worker.cancelling = True
            worker.cancel_deadline = time.monotonic() + CANCEL_GRACE
            pid = worker.process.pid
        if pid is not None:
            self._signal_tree(pid, signal.SIGTERM)
        self._wake()
        return "running"

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def running_pids(self) -> dict[str, int]:
        with self._lock:
            return {
                w.job_id: w.process.pid
                for w in self._workers.values()
                if w.job_id and w.process.pid is not None
            }

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
        self._monitor.join(timeout)
        for worker in workers:
            try:
                worker.control.send(None)
            except (OSError, ValueError):
                pass
        busy = [w for w in workers if w.job_id is not None]
        for worker in busy:  # the job logs why it stops, runs its finally blocks, reports
            if worker.process.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(worker.process.pid, STOP_SIGNAL)
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
            if worker.process.pid is not None and worker.process.is_alive():
                try:
                    root = psutil.Process(worker.process.pid)
                    tree += [*root.children(recursive=True), root]
                except psutil.Error:
                    continue
        kill_tree(list({p.pid: p for p in tree}.values()), grace=1.0)
        for worker in workers:
            worker.process.join(1.0)
            worker.control.close()
        return interrupted

    # -- called by the listener thread ------------------------------------------------------
    def handle_message(self, worker_id: int, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "progress":
            self._events.job_progress(message[1], message[2], message[3])
        elif kind == "start":
            self._events.job_started(message[1], message[2])
        elif kind == "end":
            self._job_end_message(worker_id, message[1], message[2])
        elif kind == "ready":
            with self._lock:
                worker = self._workers.get(worker_id)
                if worker is not None:
                    worker.ready = True
                    self._fast_deaths = 0
            self._wake()

    def worker_drained(self, worker_id: int) -> None:
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is not None:
                worker.drained = True
        self._wake()

    # -- internals --------------------------------------------------------------------------
    def _job_end_message(self, worker_id: int, job_id: str, outcome: dict[str, Any]) -> None:
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is None or worker.job_id != job_id:
                return
            if worker.cancelling:
                outcome = {**outcome, "status": "cancelled", "error": "cancelled on request"}
            elif self._stopping and outcome.get("status") == "cancelled":
                # the SIGTERM came from stop(), not from a person: say what happened
                outcome = {**outcome, "status": "failed", "error": SERVER_STOPPED}
            if outcome.get("status") == "cancelled":
                worker.ready = False  # it exits after a cancel: give it no new job
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
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()  # a forked child would otherwise write the server's buffer again
            except (OSError, ValueError):
                pass
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(worker_id, control_r, channel_w, self._settings),
            name=f"jobtrail-worker-{worker_id}",
            daemon=False,  # jobs may start multiprocessing children; stop() ends workers
        )
        with (
            _without_main_module(),
            _marked_environment(f"{self._settings.home_mark}/server"),
            warnings.catch_warnings(),
        ):
            # Python 3.12+ warns that fork() from a multi-threaded process may deadlock the
            # child: that is why forkserver is the default; who picks fork has chosen it.
            warnings.filterwarnings(
                "ignore", "This process .* is multi-threaded", DeprecationWarning
            )
            process.start()
        control_r.close()
        channel_w.close()
        self._workers[worker_id] = _Worker(worker_id, process, control_w, time.monotonic())
        self._sink.add_channel(worker_id, channel_r)

    def _monitor_loop(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                self._reap()
                self._replenish()
                self._dispatch()
                self._escalate_cancels()
                sentinels: list[Any] = [
                    w.process.sentinel for w in self._workers.values() if w.died_at is None
                ]
            ready = wait([self._wake_r, *sentinels], timeout=0.5)
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
                if worker.cancelling:
                    outcome = {"status": "cancelled", "error": "cancelled on request"}
                else:
                    reason = death_reason(worker.process.exitcode)
                    outcome = {"status": "failed", "error": f"job process died: {reason}"}
                self._events.job_ended(job_id, outcome)
            worker.control.close()
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
            if not self._pending:
                return
            if (
                worker.ready
                and worker.job_id is None
                and worker.died_at is None
                and not worker.cancelling
            ):
                job_id, job_type, params = self._pending.popleft()
                try:
                    worker.control.send((job_id, job_type, params))
                except (OSError, ValueError):
                    self._pending.appendleft((job_id, job_type, params))
                    continue
                worker.job_id = job_id

    def _escalate_cancels(self) -> None:
        now = time.monotonic()
        for worker in self._workers.values():
            if worker.cancelling and worker.died_at is None and now >= worker.cancel_deadline:
                pid = worker.process.pid
                if pid is not None:
                    self._signal_tree(pid, signal.SIGKILL)
                worker.cancel_deadline = now + CANCEL_GRACE

    @staticmethod
    def _signal_tree(pid: int, sig: int) -> None:
        """Children first, then the worker, so the worker's barrier sees them gone."""
        try:
            root = psutil.Process(pid)
            procs = [*root.children(recursive=True), root]
        except psutil.Error:
            return
        for proc in procs:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass
