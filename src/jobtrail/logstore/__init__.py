"""The only writer of log files: per-job JSONL segments with a batch index, rings, queries.

``JobLogStore`` is what other packages use (the listener or stream ingest appends, the
service reads); ``LogPage``, ``LinePage`` and ``LogStats`` are its answers. The modules
below it are its parts: ``files`` (the on-disk format), ``segments`` (a query's reader),
``writer`` (append, repair, rotate), ``queries`` (filters and scans), ``rings`` (newest
lines in memory), ``watchers`` (wake live readers).
"""

from jobtrail.logstore.queries import LinePage, LogPage, Record
from jobtrail.logstore.store import JobLogStore, LogStats

__all__ = ["JobLogStore", "LinePage", "LogPage", "LogStats", "Record"]
