"""The pool's running jobs under watch: one ``limits.TreeWatch`` per busy worker, sampled
by the pool's monitor thread every ``SAMPLE_EVERY``, all from one read of /proc
(``processes.ProcessTable``): the thread holds the server's GIL while it parses.

Sampling reads /proc, so it runs outside the pool's lock and under this one only to pick
the watches and to act: a job whose end was recorded (``ended`` took its watch) is never
stopped afterwards, and one stopped just before its end fails with the limit's error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from jobtrail.limits import SAMPLE_EVERY, Limits, TreeWatch
from jobtrail.messages import Outcome, StopNote, Task
from jobtrail.processes import ProcessTable, death_reason


class PoolWatches:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, tuple[TreeWatch, Connection]] = {}
        self._next_sample = 0.0

    def start(self, worker_id: int, pid: int, control: Connection, task: Task, mark: str) -> None:
        """Watch the job ``task`` that the worker ``pid`` was just given."""
        limits = Limits(task.memory_mb, task.timeout_s)
        with self._lock:
            self._watches[worker_id] = (TreeWatch(task.job_id, pid, limits, mark=mark), control)

    def busy(self) -> bool:
        with self._lock:
            return bool(self._watches)

    def stopping(self, worker_id: int) -> bool:
        """A limit is stopping this worker's job (a cancel must not signal it again)."""
        with self._lock:
            found = self._watches.get(worker_id)
        return found is not None and found[0].error is not None

    def ended(self, worker_id: int, outcome: Outcome) -> Outcome:
        """The job's reported outcome with its peak memory (and its limit's error)."""
        with self._lock:
            found = self._watches.pop(worker_id, None)
        return outcome if found is None else found[0].ended(outcome)

    def died(self, worker_id: int, exitcode: int | None) -> Outcome:
        """The outcome of a job whose worker died: a limit, the OOM killer, or how."""
        with self._lock:
            found = self._watches.pop(worker_id, None)
        return found[0].died(exitcode) if found else Outcome.died(death_reason(exitcode))

    def poll(self) -> None:
        """Sample every watched tree (at most every SAMPLE_EVERY) and stop those over a
        limit, each told why down its control pipe first."""
        now = time.monotonic()
        if now < self._next_sample:
            return
        self._next_sample = now + SAMPLE_EVERY
        with self._lock:
            watched = dict(self._watches)
        table = ProcessTable.read() if watched else None  # one /proc pass for every tree
        for watch, _ in watched.values():
            watch.sample(table)
        with self._lock:
            for worker_id, (watch, control) in watched.items():
                current = self._watches.get(worker_id)
                if current is not None and current[0] is watch:
                    watch.check(now, _teller(control))


def _teller(control: Connection) -> Callable[[str], None]:
    """Tell a worker's job why it is about to be stopped (it reads its control pipe)."""

    def tell(error: str) -> None:
        control.send(StopNote(error))

    return tell
