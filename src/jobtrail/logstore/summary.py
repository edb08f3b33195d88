"""A summary of each job's whole log, kept up to date as records are written.

::

    listener ──append──> JobLogStore ──observe("append")──> SummaryKeeper.poke (a set add)
                                                                 │ own thread, never the
                                                                 ▼ listener's or the loop's
                             store.read_lines(after=summarised_to_seq) ──> LogDigest.fold
                                                                 │   + every RecordFold
                             <job dir>/summary.json  <── ≤ 1/s and at the job's end (atomic)
    API ──JobService.summary──> SummaryKeeper.summary: catch up the rest, then a snapshot

Because the digest is folded as lines arrive, it covers lines rotation deleted later (the
first error of a job that logged 1 GB is still known); because it is saved next to the log
and continued from ``summarised_to_seq``, a restarted server picks it up where it stopped.
If the keeper ever falls so far behind that rotation deleted lines it had not read, it
counts them in ``gap`` instead of pretending it saw them.

Other per-job tables (a playbook's hosts and tasks) ride on the same fold: see ``folds``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobtrail.logstore.digest import LogDigest, Summary
from jobtrail.logstore.files import O_READ, open_dir, write_all
from jobtrail.logstore.folds import FoldFactory
from jobtrail.logstore.shapes import ShapeCache

if TYPE_CHECKING:  # the store imports nothing of this module; the keeper is given one
    from jobtrail.logstore.store import JobLogStore


O_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
SUMMARY_FILE = "summary.json"
SAVE_EVERY = 1.0  # seconds between saves of a job's digest while it logs (and at its end)
READ_LINES = 1024  # lines per read: fits in cache (larger runs cost more per line), and
# each C-level pass over a run holds the GIL for well under a millisecond
# A pass waits this long after a wake so that a burst's batches fold as one run: each pass
# reopens the files and bisects the index, which costs as much as folding a few hundred
# lines (measured: the server's CPU per record while 4 floods log drops by about a quarter)
GATHER = 0.1
# The keeper's thread sleeps this long after each run it folds (a request's fold does not):
# a pass over 4 flooding jobs is 10-20 ms of CPU, and folded back to back it takes the GIL
# from the event loop every switch interval (1 ms); asleep, it lets a waiting request have
# the GIL at once. At 1,024 lines a run it still folds over 500,000 lines a second.
PACE = 0.001
MEMORY_JOBS = 64  # digests held in memory (least recently used go; reloaded from file)
TOP_SHAPES = 20  # shapes the summary shows
KEEP_SHAPES = 200  # shapes each job's table keeps exact (see shapes.ShapeTable)

log = logging.getLogger("jobtrail.summary")


@dataclass
class _Entry:
    """One job's digest in memory; ``lock`` serialises the keeper and API readers."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    digest: LogDigest | None = None  # loaded on first use
    truncated_before: int = 1
    unsaved: bool = False
    saved_at: float = 0.0


class SummaryKeeper:
    """Keeps every job's ``LogDigest`` up to date from the store's files, in its own thread.

    The store calls ``_observe`` for every append (a set add and an event: it runs in the
    listener's thread), so the listener never waits for a fold; the keeper reads what is
    new with ``read_lines`` and folds it. ``summary`` folds whatever the keeper has not
    reached yet first, so an answer covers every line written before it was asked for.
    """

    def __init__(self, store: JobLogStore) -> None:
        self._store = store
        self._factories: dict[str, FoldFactory] = {}
        self._shapes = ShapeCache()
        self._lock = threading.Lock()  # guards the dicts and sets below; held briefly
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._dirty: set[str] = set()
        self._ended: set[str] = set()
        self._deleted: OrderedDict[str, None] = OrderedDict()  # newest MEMORY_JOBS deletions
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        store.observe(self._observe)

    def add_fold(self, name: str, factory: FoldFactory) -> None:
        """Feed every job's records to a fold built by ``factory`` (call before ``start``);
        its ``result()`` is ``Summary.folds[name]``."""
        self._factories[name] = factory

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="summary-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Fold and save everything still pending (the server stops); idempotent."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._pass(final=True)

    # -- the store's hook (the listener's thread: must return at once) -----------------
    def _observe(self, job_id: str, what: str) -> None:
        if what == "append" and job_id in self._dirty:  # queued, the event set: no lock
            return
        if what == "delete":
            self._forget(job_id)
            return
        with self._lock:
            self._dirty.add(job_id)
            self._deleted.pop(job_id, None)
            if what == "close":
                self._ended.add(job_id)
        if not self._wake.is_set():
            self._wake.set()

    def _forget(self, job_id: str) -> None:
        """Retention deletes the job's files: drop its digest and never save it again."""
        with self._lock:
            entry = self._entries.pop(job_id, None)
            self._dirty.discard(job_id)
            self._ended.discard(job_id)
            self._deleted[job_id] = None
            while len(self._deleted) > MEMORY_JOBS:  # a save can race only the latest
                self._deleted.popitem(last=False)
        if entry is not None:
            with entry.lock:  # a save in progress finishes before the files go
                entry.digest, entry.unsaved = None, False

    # -- the keeper's thread ----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            if self._wake.wait(SAVE_EVERY) and not self._stopping:
                time.sleep(GATHER)
            self._wake.clear()
            try:
                self._pass(final=False)
            except Exception:  # keep summarising other jobs; this one is retried
                log.exception("summary keeper pass failed")

    def _pass(self, final: bool) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            ended, self._ended = self._ended, set()
            unsaved = [job_id for job_id, e in self._entries.items() if e.unsaved]
        now = time.monotonic()
        for job_id in sorted(dirty | set(unsaved)):
            entry = self._entry(job_id)
            with entry.lock:
                if job_id in dirty:
                    self._catch_up(job_id, entry, pace=not final)
                if entry.unsaved and (
                    final or job_id in ended or now - entry.saved_at >= SAVE_EVERY
                ):
                    self._save(job_id, entry)

    # -- digests ----------------------------------------------------------------------------
    def summary(self, job_id: str, top: int = TOP_SHAPES) -> Summary:
        """The job's summary up to its latest line (folding what the keeper has not yet)."""
        entry = self._entry(job_id)
        with entry.lock:
            digest = self._catch_up(job_id, entry)
            dropped = self._store.stats(job_id).dropped
            return digest.summary(top, entry.truncated_before, dropped)

    def _entry(self, job_id: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None:
                entry = self._entries[job_id] = _Entry()
            self._entries.move_to_end(job_id)
            if len(self._entries) > MEMORY_JOBS:
                for old in [k for k, e in self._entries.items() if not e.unsaved]:
                    if len(self._entries) <= MEMORY_JOBS:
                        break
                    if old != job_id and not self._entries[old].lock.locked():
                        del self._entries[old]
        return entry

    def _catch_up(self, job_id: str, entry: _Entry, pace: bool = False) -> LogDigest:
        """Fold the lines written since the digest's ``summarised_to_seq`` (entry locked);
        ``pace``: sleep ``PACE`` after each run (the keeper's own thread only)."""
        digest = entry.digest
        if digest is None:
            digest = entry.digest = self._load(job_id)
        while True:
            page = self._store.read_lines(job_id, after=digest.summarised_to_seq, limit=READ_LINES)
            entry.truncated_before = page.truncated_before
            if not page.lines:
                return digest
            digest.fold(page.seqs, page.lines, self._shapes)
            entry.unsaved = True
            if pace:
                time.sleep(PACE)
            if not page.more:
                return digest

    def _new(self, saved: dict[str, Any] | None) -> LogDigest:
        states = saved.get("folds", {}) if saved else {}
        folds = {name: make(states.get(name)) for name, make in self._factories.items()}
        return LogDigest(folds, KEEP_SHAPES)

    def _load(self, job_id: str) -> LogDigest:
        """The digest saved in the job's directory, or a new one to fold the log into."""
        try:
            dir_fd = open_dir(str(self._store.log_path(job_id)))
        except (FileNotFoundError, ValueError):
            return self._new(None)
        try:
            fd = os.open(SUMMARY_FILE, O_READ, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as file:
                saved = json.loads(file.read())
            digest = self._new(saved)
            digest.restore(saved)
            return digest
        except FileNotFoundError:
            return self._new(None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("summary of %s unreadable (%s): rebuilding it from the log", job_id, exc)
            return self._new(None)
        finally:
            os.close(dir_fd)

    def _save(self, job_id: str, entry: _Entry) -> None:
        """Write the digest atomically (temp file, rename; 0600) into the job's directory."""
        with self._lock:
            if job_id in self._deleted:
                return
        if entry.digest is None:
            return
        data = entry.digest.to_json()
        entry.unsaved, entry.saved_at = False, time.monotonic()
        try:
            dir_fd = open_dir(str(self._store.log_path(job_id)))
        except (FileNotFoundError, ValueError):
            return  # no log directory (yet, or any more): nothing to save next to
        temp = SUMMARY_FILE + ".tmp"
        try:
            fd = os.open(temp, O_WRITE, 0o600, dir_fd=dir_fd)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(temp, SUMMARY_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:  # a full disk: keep it in memory and try again later
            entry.unsaved = True
            log.warning("cannot save the summary of %s: %s", job_id, exc)
        finally:
            os.close(dir_fd)
