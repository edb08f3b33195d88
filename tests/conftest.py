"""The shared fixtures: servers started for a test or a module (``support.live``), stopped
after it. Helpers that are not fixtures live in ``support`` and are imported from there.

How the suite runs in parallel (pytest-xdist) is ``support.parallel``, whose hooks are
imported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.live import Live, live_server, server_config
from support.parallel import (  # noqa: F401  (hooks: pytest finds them by name)
    pytest_collection_modifyitems,
    pytest_runtest_logfinish,
    pytest_runtest_logreport,
    pytest_runtest_logstart,
    pytest_xdist_make_scheduler,
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server shared by a test module (worker start-up is the slow part)."""
    with live_server(server_config(tmp_path_factory.mktemp("home"))) as running:
        yield running


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Live]:
    """A server of its own, for tests that break things."""
    with live_server(server_config(tmp_path / "home")) as running:
        yield running


@pytest.fixture(autouse=True, scope="session")
def _start_method_banner() -> None:
    os.environ.setdefault("JOBTRAIL_START_METHOD", "forkserver")
