"""What the tests of ``--worker-cpu idle`` check a job's cpu cgroup against."""

from __future__ import annotations

import os
from pathlib import Path

from jobtrail import cpu_group


def assert_in_idle_group(found: str) -> None:
    """``found`` (a job's path in the cpu hierarchy) is the idle group the servers the tests
    start make: they start in this process's cgroup, so ``prepare`` here finds the same."""
    idle_group, why = cpu_group.prepare()
    assert idle_group is not None, why
    assert idle_group.endswith(found) and os.path.basename(found) == cpu_group.NAME, found
    assert Path(idle_group, "cpu.idle").read_text().strip() == "1"
