"""The newest lines of each job, in memory, so ``recent`` (the job page, ``show``) reads no file.

One ring of ``size`` lines per job, for the ``jobs`` most recently used jobs (least recently
used evicted). A ring only ever starts at a log's first batch: a job whose ring was evicted,
or whose log predates this server, gets its ring rebuilt from disk by the store.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque


class RingBuffers:
    """Thread-safe; the lock is held only for a few dict and deque operations."""

    def __init__(self, size: int, jobs: int) -> None:
        self.size = size
        self._jobs = jobs
        self._lock = threading.Lock()
        self._rings: OrderedDict[str, deque[bytes]] = OrderedDict()

    def append(self, job_id: str, payload: bytes, first_seq: int) -> None:
        """Add a batch's lines; a job without a ring gets one only if this is its first batch."""
        size = self.size
        lines = payload.rsplit(b"\n", size + 1)  # only the last ring_size lines are split off
        if not lines[-1]:
            lines.pop()
        with self._lock:
            ring = self._rings.get(job_id)
            if ring is None:
                if first_seq != 1:  # evicted or restarted: the store rebuilds it from disk
                    return
                ring = self._rings[job_id] = deque(maxlen=size)
                self._evict()
            else:
                self._rings.move_to_end(job_id)
            ring.extend(lines[-size:])

    def lines(self, job_id: str) -> list[bytes] | None:
        """The job's ring, oldest first, or None if it has none."""
        with self._lock:
            ring = self._rings.get(job_id)
            if ring is None:
                return None
            self._rings.move_to_end(job_id)
            return list(ring)

    def install(self, job_id: str, lines: list[bytes]) -> None:
        """Give the job a ring of ``lines`` (read from disk by the caller)."""
        with self._lock:
            self._rings[job_id] = deque(lines, maxlen=self.size)
            self._evict()

    def discard(self, job_id: str) -> None:
        with self._lock:
            self._rings.pop(job_id, None)

    def _evict(self) -> None:
        while len(self._rings) > self._jobs:
            self._rings.popitem(last=False)
