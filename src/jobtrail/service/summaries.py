"""Each job's whole-log summary: folded by the keeper process, answered by the server.

::

    listener ──append/close──> JobLogStore ──observe──> Summaries._observe (a list append)
                                                             │ own thread, every GATHER
                                                             ▼
        keeper process's stdin <── "a JOB" / "c JOB" / "d JOB" (service/_summary_process.py)
            │ folds the job's new lines from the files, saves <job dir>/summary.json
            ▼
        its stdout "s JOB SEQ" ──> SummaryKeeper(saves=False).saved: where each file got to
    API ──summary(JOB)──> the answering keeper: the saved digest, the lines it lacks folded

The fold (1.2 µs of Python a line) held the server's GIL three times as long as the listener
while jobs flooded, and every request waited for it (``benchmarks/api_latency.py``). Here the
server's share is a line on a pipe per job with new lines, and what an answer folds itself
(the lines written since the keeper's last save, a second's worth at most while the keeper
keeps up). Nothing depends on the process for correctness: if it died or lags, answers fold
more themselves; it is started again (a backoff of 1 s doubling to 30 s) and told every job
it may not have read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict

from jobtrail.logstore import JobLogStore, Summary, SummaryKeeper
from jobtrail.service import playbook
from jobtrail.service._helper_process import Backoff, HelperProcess

KEEPER_MODULE = "jobtrail.service._summary_process"
GATHER = 0.05  # a pass waits this long after a wake, so a burst of batches names a job once
IDLE_CHECK = 1.0  # how often the process's life is checked when nothing happens
STOP_WAIT = 15.0  # the process's time to fold and save what is left when the server stops
RESTART_FIRST, RESTART_MAX = 1.0, 30.0
JOBS_KEPT = 4096  # jobs named to the process, told again to a restarted one

log = logging.getLogger("jobtrail.summary")


class Summaries:
    """The server's side: names the jobs with new lines to the keeper process, answers."""

    def __init__(self, store: JobLogStore) -> None:
        self._root = os.fspath(store.root)
        self.keeper = SummaryKeeper(store, saves=False)  # answers; the process saves
        playbook.add_folds(self.keeper)  # a playbook's hosts and tasks tables
        self._lock = threading.Lock()  # guards what follows; held for a few operations
        self._pending: list[str] = []  # commands not sent yet, in the order they came
        self._named: set[str] = set()  # jobs with an "a" in ``_pending`` (one each)
        self._known: OrderedDict[str, bool] = OrderedDict()  # named jobs -> ended
        self._process: HelperProcess | None = None
        self._backoff = Backoff(RESTART_FIRST, RESTART_MAX)
        self.restarts = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        store.observe(self._observe)

    def summary(self, job_id: str) -> Summary:
        """The job's summary up to its latest line."""
        return self.keeper.summary(job_id)

    @property
    def keeper_pid(self) -> int | None:
        """The keeper process's pid (None while none runs)."""
        process = self._process
        return process.pid if process is not None and process.alive() else None

    def start(self) -> None:
        self._process = self._spawn()
        self._thread = threading.Thread(target=self._run, name="summary-names", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Name what is left, then let the process fold and save it (STOP_WAIT at most)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- the store's hook (the listener's thread: must return at once) -----------------
    def _observe(self, job_id: str, what: str) -> None:
        if what == "append" and job_id in self._named:  # named, the event set: no lock
            return
        if what == "delete":
            self.keeper.note(job_id, "delete")
        with self._lock:
            if what == "append":
                self._named.add(job_id)
            self._pending.append(f"{what[0]} {job_id}\n")
        if not self._wake.is_set():
            self._wake.set()

    def _on_report(self, line: bytes) -> None:
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"s" and parts[2].isdigit():
            self.keeper.saved(parts[1].decode(), int(parts[2]))
        else:
            log.warning("summary keeper process: unreadable report %r", line[:200])

    # -- the naming thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            stopping = self._stopping
            if not stopping and self._wake.wait(IDLE_CHECK) and not self._stopping:
                time.sleep(GATHER)
            self._wake.clear()
            try:
                self._pass()
            except Exception:  # keep naming jobs; the process's state is checked again
                log.exception("summary naming pass failed")
            if stopping:
                process, self._process = self._process, None
                if process is not None:
                    process.close(STOP_WAIT)
                return

    def _pass(self) -> None:
        """Send what came since the last pass to a live process (starting one if it died)."""
        with self._lock:
            lines, self._pending = self._pending, []
            self._named.clear()
            for line in lines:
                verb, job_id = line[0], line[2:-1]
                if verb == "d":
                    self._known.pop(job_id, None)
                    continue
                self._known[job_id] = verb == "c" or self._known.get(job_id, False)
                self._known.move_to_end(job_id)
            while len(self._known) > JOBS_KEPT:  # the jobs named longest ago go first
                self._known.popitem(last=False)
        process = self._process
        if process is None or not process.alive():
            self._restart(process)  # tells the new one every known job
            return
        if lines:
            process.send(lines)  # if it just died, the next pass's restart names them all

    def _restart(self, dead: HelperProcess | None) -> None:
        """A process that died is replaced once its backoff passed, and told every job."""
        if dead is not None:
            self._backoff.died(dead, log, "summary keeper")
            self._process = None
        if self._stopping or not self._backoff.due():
            return
        process = self._process = self._spawn()
        self.restarts += 1
        with self._lock:
            lines = [f"a {job_id}\n" for job_id in self._known]
            lines += [f"c {job_id}\n" for job_id, ended in self._known.items() if ended]
        process.send(lines)

    def _spawn(self) -> HelperProcess:
        return HelperProcess(KEEPER_MODULE, [self._root], self._on_report, log, "summary keeper")
