"""Running jobtrail needs no development tool: the README's first command installs
``.[ansible]`` only and runs ``jobtrail demo``, and the test command installs the rest.

The tools of the ``dev`` extra are installed here, so a module that imported one would
still pass every other test; these make them unimportable first, in every process.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

# installed as sitecustomize, so the server's worker processes (forkserver, spawn) get it too
BLOCKER = """\
import importlib.abc, os, sys

BLOCKED = frozenset(os.environ["JOBTRAIL_TEST_BLOCKED"].split(","))


class DevToolsAbsent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} belongs to the dev extra, not installed here")
        return None


sys.meta_path.insert(0, DevToolsAbsent())
"""

IMPORT_EVERY_MODULE = """\
import importlib, pkgutil, jobtrail
for module in pkgutil.walk_packages(jobtrail.__path__, "jobtrail."):
    importlib.import_module(module.name)
"""


def distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def dev_only_modules() -> list[str]:
    """The top-level modules of the dev extra's distributions that nothing else provides.

    A distribution the dev extra shares with a feature's extra (``mcp``, ``metrics``, ``otel``)
    is that feature's dependency, installed with it, so it is not blocked."""
    requirements = importlib.metadata.requires("jobtrail") or []
    dev = {distribution(r) for r in requirements if re.search(r"extra\s*==\s*.dev.", r)}
    other = {
        distribution(r)
        for r in requirements
        if re.search(r"extra\s*==", r) and not re.search(r"extra\s*==\s*.dev.", r)
    }
    dev -= other
    assert {"pytest", "tox", "mypy", "playwright", "schemathesis"} <= dev
    return sorted(
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if all(distribution(d) in dev for d in dists)
    )


def beyond_quick_start_modules() -> list[str]:
    """The top-level modules that only extras other than ``ansible`` bring (dev, mcp,
    metrics, otel, distributed): what the README's first command does not install."""
    requirements = importlib.metadata.requires("jobtrail") or []
    needed = {
        distribution(r)
        for r in requirements
        if "extra" not in r or re.search(r"extra\s*==\s*.ansible.", r)
    }
    extras = {distribution(r) for r in requirements if "extra" in r} - needed
    assert {"pytest", "mcp", "rq"} <= extras
    return sorted(
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if all(distribution(d) in extras for d in dists)
    )


def blocking(tmp_path: Path, blocked: list[str]) -> dict[str, str]:
    """The environment of a process in which the ``blocked`` modules cannot be imported."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "JOBTRAIL_TEST_BLOCKED": ",".join(blocked),
        "TMPDIR": str(tmp_path),
    }


@pytest.fixture
def without_dev_tools(tmp_path: Path) -> dict[str, str]:
    """A process in which the dev extra's own modules cannot be imported."""
    blocked = dev_only_modules()
    assert "pytest" in blocked and "playwright" in blocked
    return blocking(tmp_path, blocked)


@pytest.fixture
def as_quick_start(tmp_path: Path) -> dict[str, str]:
    """A process with only what the README's first command installs (``.[ansible]``)."""
    blocked = beyond_quick_start_modules()
    assert "pytest" in blocked and "mcp" in blocked and "rq" in blocked
    return blocking(tmp_path, blocked)


def test_the_blocker_blocks(without_dev_tools: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import pytest"],
        env=without_dev_tools,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "pytest belongs to the dev extra" in done.stderr


def test_every_module_imports_without_the_dev_extra(without_dev_tools: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_MODULE],
        env=without_dev_tools,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_demo_runs_with_only_the_quick_starts_extras(as_quick_start: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", "demo"],
        env=as_quick_start,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert re.search(r"demo-[0-9a-f]{12}  completed  100%", done.stdout), done.stdout
