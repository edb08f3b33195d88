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

Other per-job tables (a playbook's hosts and tasks) ride on the same fold: a ``RecordFold``
registered with ``SummaryKeeper.add_fold`` is fed every record of every job once, in seq
order, saved and restored with the digest, and its ``result()`` is in ``Summary.folds``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from jobtrail.logstore.queries import Record


class RecordFold(Protocol):
    """A per-job accumulator fed every record of one job's log once, oldest first.

    ``needle`` keeps it cheap: only lines whose stored bytes hold it are decoded and given to
    ``add`` (``b'"logger":"ansible"'``, say); ``b""`` means every line. ``to_json`` is what
    is saved with the summary (at most every second and at the job's end) and handed back
    to the factory after a restart; ``result`` is what the API shows (JSON values).
    """

    needle: bytes

    def add(self, record: Record) -> None: ...
    def to_json(self) -> Any: ...
    def result(self) -> Any: ...


# Builds a job's fold from what its ``to_json`` saved (None for a job not seen before).
# Registered by name: ``keeper.add_fold("hosts", factory)`` before ``keeper.start()``; the
# summary's ``hosts`` is the ``result()`` of the fold named "hosts" (None: not a playbook).
FoldFactory = Callable[[Any], RecordFold]
