"""How the suite runs in parallel (``pytest -n N --dist loadfile --no-loadscope-reorder``,
as tox runs it), a pytest plugin: ``tests/conftest.py`` imports its hooks.

* Each test module runs in one pytest-xdist worker, so that its module-scoped servers start
  once; the slowest modules are handed out first, and the slowest of all is split
  (``pytest_xdist_make_scheduler``).
* A test over its timeout fails alone, as without xdist, not the whole run
  (``alarm_held``).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The slowest modules, slowest first (the sum of their tests' durations in one run with -n 4,
# under load: test_cli 1675 s, test_web 169, test_ansible_data 156, test_ansible 147,
# test_distributed 101, test_deploy 85, test_schema 82; the rest 60 s or less), so that none
# of them starts last and runs alone. A module split in N runs as N parts of consecutive
# tests, each with its own module-scoped servers: only where one module would otherwise run
# long after all the others ended.
SLOW_FIRST = (
    "test_cli", "test_web", "test_ansible_data", "test_ansible", "test_distributed",
    "test_deploy", "test_schema",
)  # fmt: skip
SPLIT = {"test_cli": 6}
# Modules that must not run at the same time as each other: run by one worker, one by one.
# test_limits' kernel-OOM test kills a job in a cgroup below this session's, where a job of
# test_last_words that SIGKILLs itself at that moment may read the kernel's record as its
# own (limits.kernel_oom_kill: a record below the cgroup a job started in counts)
TOGETHER: tuple[tuple[str, ...], ...] = (("test_last_words", "test_limits"),)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist: the slowest modules first (a stable sort: each module's tests keep their
    order). The controller hands out work in this order (``--no-loadscope-reorder``)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(SLOW_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: pytest -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with SPLIT and TOGETHER: a worker is handed a whole module (or
    part, or set of modules) at a time, so module-scoped servers start once per worker.
    (``--dist loadgroup``'s ``xdist_group`` marks are lost under pytest 9: xdist 3.8 renames
    ``item._nodeid``, which pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    together = {module: "+".join(group) for group in TOGETHER for module in group}
    unit: dict[str, str] = {}  # test id -> its work unit

    class ModuleParts(LoadScopeScheduling):  # type: ignore[misc]
        def schedule(self) -> None:
            collection = next(iter(self.registered_collections.values()))
            modules: dict[str, list[str]] = {}
            for nodeid in collection:
                modules.setdefault(nodeid.split("::", 1)[0], []).append(nodeid)
            for module, nodeids in modules.items():
                stem = Path(module).stem
                parts = SPLIT.get(stem, 1)
                name = together.get(stem, module)
                for i, nodeid in enumerate(nodeids):
                    unit[nodeid] = name if parts == 1 else f"{name}#{i * parts // len(nodeids)}"
            super().schedule()

        def _split_scope(self, nodeid: str) -> str:
            return unit.get(nodeid) or nodeid.split("::", 1)[0]

    return ModuleParts(config, log)


@contextlib.contextmanager
def alarm_held() -> Iterator[None]:
    """pytest-timeout's SIGALRM held back while this block runs (its handler swapped for one
    that takes note: blocking the signal would not do, another thread would take it); one
    that came meanwhile fires again 50 ms after, in the test's own code (or never, had the
    test ended: pytest-timeout then disarms it)."""
    came: list[int] = []
    handler = signal.signal(signal.SIGALRM, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, handler)
        if came:
            signal.setitimer(signal.ITIMER_REAL, 0.05)


# Under xdist a worker sends each of these to the controller from within the hook, while
# pytest-timeout's alarm is armed: a timeout that lands in that send breaks the worker's
# channel, and the whole run ends in an INTERNALERROR (seen under load), not in one failure.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_logstart() -> Iterator[None]:
    with alarm_held():
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_logreport() -> Iterator[None]:
    with alarm_held():
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_logfinish() -> Iterator[None]:
    with alarm_held():
        return (yield)
