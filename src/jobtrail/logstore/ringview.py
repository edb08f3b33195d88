"""What the hot routes make of a job's ring, kept until the ring changes.

``GET /api/jobs/{id}`` cuts each ring line to its head and a plain logs tail decodes each
one (and formats it, for the text format); for a job that ended (or logs slowly) the ring
is the same from one poll to the next, so that work is done once per change of the ring
instead of once per request. A view is valid while the ring has the same length and the
same last line (the very bytes object: every append brings new ones).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from jobtrail.logstore import raw
from jobtrail.logstore.queries import LogPage, Record, RecordFilter
from jobtrail.records import text_line

VIEWS_KEPT = 256  # jobs whose view is kept (least recently used go)


@dataclass
class RingView:
    """One ring's lines, with their heads and records worked out on first use."""

    lines: list[bytes]
    _heads: list[bytes] | None = field(default=None, repr=False)
    _pairs: list[tuple[bytes, Record]] | None = field(default=None, repr=False)
    _texts: list[str] | None = field(default=None, repr=False)

    def heads(self) -> list[bytes]:
        """``raw.head`` of each line, newest first (lines without one left out)."""
        if self._heads is None:
            self._heads = [shown for line in reversed(self.lines) if (shown := raw.head(line))]
        return self._heads

    def pairs(self) -> list[tuple[bytes, Record]]:
        """(line as served, record) of each line ``read`` would serve, oldest first. The
        records are shared between requests: callers only read them."""
        if self._pairs is None:
            flt = RecordFilter()  # as ``read`` tests each stored line
            self._pairs = [pair for pair in map(flt.pair, self.lines) if pair is not None]
        return self._pairs

    def texts(self) -> list[str]:
        """``text_line`` of each of ``pairs``' records (the logs' text format)."""
        if self._texts is None:
            self._texts = [text_line(record) for _, record in self.pairs()]
        return self._texts

    def tail(self, tail: int, latest: int, full: bool) -> LogPage | None:
        """The newest ``tail`` records as ``read`` pages them, rotation having removed
        nothing; None if a ``full`` ring holds fewer (the older ones are on disk only)."""
        found = self.pairs()[-tail:]
        if len(found) < tail and full:
            return None
        if not found:
            return LogPage([], None, None, latest, 1, False)
        last: int = found[-1][1]["seq"]
        records, lines = [record for _, record in found], [line for line, _ in found]
        return LogPage(
            records, found[0][1]["seq"], last, max(latest, last), 1, False, lines,
            self.texts()[-tail:],
        )  # fmt: skip


def _same(kept: list[bytes], lines: list[bytes]) -> bool:
    return len(kept) == len(lines) and (not lines or kept[-1] is lines[-1])


class RingViews:
    """Thread-safe; the lock is held for a few dict operations, never while a view is built."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: OrderedDict[str, RingView] = OrderedDict()

    def get(self, job_id: str, lines: list[bytes]) -> RingView:
        """The view of ``lines`` (the job's ring as just read), kept or made anew."""
        with self._lock:
            view = self._views.get(job_id)
            if view is not None:
                self._views.move_to_end(job_id)
        if view is None or not _same(view.lines, lines):
            view = RingView(lines)
            with self._lock:
                self._views[job_id] = view
                while len(self._views) > VIEWS_KEPT:
                    self._views.popitem(last=False)
        return view

    def discard(self, job_id: str) -> None:
        with self._lock:
            self._views.pop(job_id, None)
