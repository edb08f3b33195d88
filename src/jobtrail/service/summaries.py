"""Each job's whole-log summary, folded as its log is written, answered by the server.

::

    listener ──append/close/delete──> JobLogStore ──observe──> SummaryKeeper (a set add)
                                                                   │ its own thread
                                                                   ▼
                   store.read_lines(after=summarised_to_seq) ──> fold ──> <job dir>/summary.json
    API ──summary(JOB)──> the keeper: what it has not reached yet folded first, then a snapshot

The fold runs in a thread of the server's (``logstore/summary.py``). It ran in a process of
its own for a while: that took its GIL time off the server's requests, but a process apart
fell behind the listener under the parallel suite's load, far enough for rotation to delete
lines it had not read (``tests/test_summary.py``'s rotation test, both modes), which a
thread sharing the listener's process does not. Holding back rotation until the fold has
read a segment would let it leave the server again.
"""

from __future__ import annotations

from jobtrail.logstore import JobLogStore, Summary, SummaryKeeper
from jobtrail.service import playbook


class Summaries:
    """The server's summaries: the keeper, fed every append, ending and deletion."""

    def __init__(self, store: JobLogStore) -> None:
        self.keeper = SummaryKeeper(store)  # observes the store's appends itself
        playbook.add_folds(self.keeper)  # a playbook's hosts and tasks tables

    def summary(self, job_id: str) -> Summary:
        """The job's summary up to its latest line."""
        return self.keeper.summary(job_id)

    def start(self) -> None:
        self.keeper.start()

    def stop(self) -> None:
        """Fold and save what is pending (the server stops)."""
        self.keeper.stop()
