"""Combine a coverage run's data files, discarding those that killed processes left unreadable.

Run by tox's ``cov`` environments between ``coverage run`` and ``coverage report``, as
``python tests/support/coverage_data.py``.

The tests kill servers, workers and job processes on purpose. One killed while coverage
was saving its data (on exit, or in coverage's SIGTERM handler) leaves a file that is not,
or only partly, a coverage database. ``coverage combine`` warns about such a file and keeps
it, so the implicit combine of ``coverage report`` warns again; a file whose schema reads
but whose tables are cut short stops the combine outright. Reading every file in full
first, as the combine will, tells the torn ones apart; the data of every other process is
kept.
"""

from __future__ import annotations

import glob
import os
import sys

import coverage
from coverage.data import CoverageData


def readable(path: str) -> bool:
    """Whether the combine can read all of ``path``: its schema, measured files and lines."""
    try:
        data = CoverageData(path, read_only=True)
        data.read()
        CoverageData(no_disk=True).update(data)
    except Exception:  # coverage's DataError or sqlite3's errors: whatever a torn file raises
        return False
    return True


def main() -> int:
    cov = coverage.Coverage()  # the project's [tool.coverage] settings and COVERAGE_FILE
    base = os.path.abspath(cov.config.data_file)
    # the names `coverage combine` picks up; SQLite's journals are not data files
    parallel = [p for p in glob.glob(glob.escape(base) + ".*") if not p.endswith("-journal")]
    torn = [path for path in parallel if not readable(path)]
    for path in torn:
        for leftover in (path, path + "-journal"):
            if os.path.exists(leftover):
                os.remove(leftover)
    cov.combine(strict=True)
    cov.save()
    if torn:
        print(
            f"coverage: discarded {len(torn)} of {len(parallel)} data files, left unreadable by"
            " processes the tests killed while coverage saved their data"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
