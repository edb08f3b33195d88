"""The hook other per-job tables use to ride on the summary keeper's fold (a playbook's
hosts and tasks): a ``RecordFold`` registered with ``SummaryKeeper.add_fold`` is fed every
record of every job once, in seq order, saved and restored with the job's digest, and its
``result()`` is in ``Summary.folds``.
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
