"""A test whose system requirement is missing fails, saying how to install it.

A skipped test reads as a pass in a summary line: the browser and Redis tests once skipped
on a fresh machine and the suite still looked green. ``tests/run.sh`` installs everything
they need; ``JOBTRAIL_TESTS_ALLOW_SKIP=1`` turns these failures back into skips for a
machine that cannot have it.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

ALLOW_SKIP = "JOBTRAIL_TESTS_ALLOW_SKIP"


def missing(what: str, install: str) -> NoReturn:
    """Fail the test: ``what`` is not there, ``install`` says how to get it (``tests/run.sh``
    installs every package the tests need). Skip instead if ``ALLOW_SKIP=1``."""
    if os.environ.get(ALLOW_SKIP) == "1":
        pytest.skip(f"{what} ({ALLOW_SKIP}=1): {install}")
    pytest.fail(f"{what}: {install} (or set {ALLOW_SKIP}=1 to skip such tests)", pytrace=False)
