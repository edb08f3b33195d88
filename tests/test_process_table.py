"""processes.ProcessTable, the pool's one /proc read a poll: it finds the same tree as
psutil's ``children`` (``tree_of``), counts the same resident bytes, and the pool's watches
share one read however many jobs run (before it, one scan of /proc per job: 8-9 ms of
GIL-holding CPU a poll with 4 jobs, against 1.3-1.7 ms now)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing import Pipe

import psutil
import pytest

from jobtrail.backends.local._watches import PoolWatches
from jobtrail.limits import tree_rss
from jobtrail.messages import Task
from jobtrail.processes import ProcessTable, tree_of

pytestmark = pytest.mark.timeout(60)

# a job's process with a child that has a child of its own: three generations
TREE = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', "
    '\'import subprocess, time; subprocess.Popen(["sleep", "600"]); time.sleep(600)\'])\n'
    "time.sleep(600)\n"
)


def execd(pid: int) -> bool:
    """The leaf runs sleep (not still the copy of Python it forked from)."""
    try:
        return psutil.Process(pid).name() == "sleep"
    except psutil.Error:
        return False


def wait_for_tree(pid: int, size: int) -> list[int]:
    deadline = time.monotonic() + 30
    while len(tree := ProcessTable.read().tree(pid)) < size or not execd(tree[-2]):
        assert time.monotonic() < deadline, f"the tree of {pid} never had {size} processes"
        time.sleep(0.05)
    return tree


def kill(procs: list[psutil.Process]) -> None:
    """SIGKILL, without waiting for those that are not ours to reap (PID 1 reaps them)."""
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def trees() -> Iterator[list[int]]:
    """Two three-process trees, their roots' pids."""
    roots = [subprocess.Popen([sys.executable, "-c", TREE]) for _ in range(2)]
    try:
        for root in roots:
            wait_for_tree(root.pid, 3)
        yield [root.pid for root in roots]
    finally:
        for root in roots:
            kill(tree_of(root.pid))
            root.wait()


def test_the_table_finds_psutils_tree_children_first(trees: list[int]) -> None:
    table = ProcessTable.read()
    for pid in trees:
        tree = table.tree(pid)
        assert tree[-1] == pid, "the root comes last: its children are signalled first"
        assert sorted(tree) == sorted(p.pid for p in tree_of(pid))
        child, grandchild = tree[0], tree[1]
        assert psutil.Process(grandchild).ppid() == child, "a parent before its children"
    assert table.tree(2**22 + 1) == [], "a pid that is gone has no tree"


def test_resident_bytes_are_psutils(trees: list[int]) -> None:
    """statm's count, as psutil's memory_info (stat's rss field is an estimate)."""
    for pid in trees:  # sleeping processes: their memory stays put
        seen: set[int] = set()
        assert tree_rss(pid, seen) == sum(p.memory_info().rss for p in tree_of(pid))
        assert seen == {p.pid for p in tree_of(pid)}
    assert ProcessTable.rss(2**22 + 1) == 0


def test_an_orphan_leaves_the_tree() -> None:
    """A process whose parent died is not its grandparent's descendant (as psutil says)."""
    root = subprocess.Popen([sys.executable, "-c", TREE])
    tree = [psutil.Process(root.pid)]
    try:
        child, grandchild, _ = wait_for_tree(root.pid, 3)
        tree = [psutil.Process(grandchild), *tree_of(root.pid)]
        psutil.Process(child).kill()  # a zombie until the root reaps it: its child is moved
        deadline = time.monotonic() + 30
        while grandchild in ProcessTable.read().tree(root.pid):
            assert time.monotonic() < deadline, "the orphan stayed in the tree"
            time.sleep(0.05)
        assert grandchild not in {p.pid for p in tree_of(root.pid)}
    finally:
        kill([*tree, *tree_of(root.pid)])
        root.wait()


def test_the_pools_watches_share_one_read(
    trees: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[ProcessTable] = []
    real = ProcessTable.read

    def counted() -> ProcessTable:
        reads.append(real())
        return reads[-1]

    monkeypatch.setattr(ProcessTable, "read", staticmethod(counted))
    watches = PoolWatches()
    ends = [Pipe() for _ in trees]
    for worker_id, pid in enumerate(trees):
        task = Task(f"job-{worker_id}", "sleep", {}, 4096, 600.0)
        watches.start(worker_id, pid, ends[worker_id][0], task, f"test/w/{worker_id}")
    watches.poll()
    assert len(reads) == 1, "one /proc read for every running job's tree"
    for worker_id, (watch, _) in watches._watches.items():
        assert watch.peak_bytes > 0
        assert watch._pids == set(reads[0].tree(trees[worker_id]))
    for a, b in ends:
        a.close()
        b.close()
