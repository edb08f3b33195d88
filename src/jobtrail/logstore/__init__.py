"""The only writer of log files: per-job JSONL segments with a batch index, rings, queries.

``JobLogStore`` is what other packages use (the listener or stream ingest appends, the
service reads); ``LogPage``, ``LinePage`` and ``LogStats`` are its answers. The modules
below it are its parts: ``files`` (the on-disk format), ``segments`` (a query's reader),
``writer`` (append, repair, rotate), ``queries`` (filters and scans), ``rings`` (newest
lines in memory), ``watchers`` (wake live readers), ``search`` (text and regex search:
``search_query`` builds what ``JobLogStore.search`` takes; ``SearchPage`` is its answer),
``summary`` (``SummaryKeeper``: each job's whole-log ``Summary``, kept as lines are written,
and ``folds``, the ``RecordFold`` hook for other per-job tables).
"""

from jobtrail.logstore.digest import Summary
from jobtrail.logstore.folds import FoldFactory, RecordFold
from jobtrail.logstore.queries import FieldMatch, LinePage, LogPage, Record
from jobtrail.logstore.search import SearchMatch, SearchPage, search_query
from jobtrail.logstore.store import JobLogStore, LogStats
from jobtrail.logstore.summary import SummaryKeeper

__all__ = [
    "FieldMatch",
    "FoldFactory",
    "JobLogStore",
    "LinePage",
    "LogPage",
    "LogStats",
    "Record",
    "RecordFold",
    "SearchMatch",
    "SearchPage",
    "Summary",
    "SummaryKeeper",
    "search_query",
]
