"""``support.parallel``, how tox runs the suite in parallel, on small suites of its own: a
worker is handed whole modules (and parts of a split one), and a timeout that comes while a
report is being sent fails its test, not the run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
PLUGINS = ("-p", "pytest_timeout", "-p", "no:cacheprovider")

SUPPORT = str(Path(__file__).parent)  # where support.parallel is
SLOW_REPORT = """
import time, pytest

class SlowReports:
    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report):
        if report.when == "setup" and "test_a" in report.nodeid:
            time.sleep(2)  # as a worker whose send to the controller is held up

def pytest_configure(config):
    config.pluginmanager.register(SlowReports())
"""
TIMED = """
import time, pytest

@pytest.mark.timeout(1)
def test_a():
    time.sleep(0.1)

def test_b():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", SUPPORT)
    # only the plugins these runs need (-p below): the others' imports would take most of them
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester


def test_a_timeout_while_a_report_is_sent_fails_that_test_only(suite: pytest.Pytester) -> None:
    suite.makeconftest(SLOW_REPORT)
    suite.makepyfile(test_timed=TIMED)
    held = suite.runpytest_subprocess(*PLUGINS, "-p", "support.parallel")
    held.assert_outcomes(failed=1, passed=1)
    assert "Timeout (>1.0s)" in held.stdout.str() and "INTERNALERROR" not in held.stdout.str()
    # without it, what xdist's workers did under load: the run ends there
    bare = suite.runpytest_subprocess(*PLUGINS)
    assert "INTERNALERROR" in bare.stdout.str() + bare.stderr.str()


def test_modules_run_whole_in_one_worker_and_the_split_one_in_parts(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        test_cli="\n".join(f"def test_{i}(): pass" for i in range(12)),  # SPLIT in 6
        test_other="\n".join(f"def test_{i}(): pass" for i in range(12)),
    )
    args = [*PLUGINS, "-p", "xdist.plugin", "-p", "support.parallel", "-v"]
    done = suite.runpytest_subprocess(*args, "-n", "3", "--dist", "loadfile")
    done.assert_outcomes(passed=24)
    ran = re.findall(r"\[(gw\d)\] .*PASSED (test_\w+)\.py::test_(\d+)", done.stdout.str())
    workers: dict[str, set[str]] = {}
    for worker, module, index in ran:
        workers.setdefault(module, set()).add(worker)
        if module == "test_cli":  # two consecutive tests a part, each part in one worker
            pair = {w for w, m, i in ran if m == module and int(i) // 2 == int(index) // 2}
            assert len(pair) == 1, ran
    assert len(workers["test_other"]) == 1, ran
    assert len(workers["test_cli"]) > 1, ran
