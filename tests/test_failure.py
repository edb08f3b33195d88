"""A failed Python job says why: its exception, the chain of causes down to the root, and the
innermost frame of the job's own code, in ``failure`` and in the one-line ``error``.

The jobs are ``root_cause`` of tests/jobs_fixture.py (and tests/jobpkg), run by a real server
in both modes; ``describe`` itself is checked on chains a job could not easily make (a cycle,
a very long one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobtrail.worker.failure import ARROW, MAX_CAUSES, describe, exception_chain, is_job_code
from jobtrail.worker.redact import Redactor
from support.live import Live
from support.live import server_config as make_config
from support.modes import MODES, serve_in_mode

pytestmark = pytest.mark.timeout(180)

FIXTURE = Path(__file__).with_name("jobs_fixture.py")
URL = "postgres://db.internal:5432/inv"
REFUSED = f"could not connect to {URL}: connection refused"
SECRET = "hunter2-very-secret"


def line_of(marker: str, path: Path = FIXTURE) -> int:
    """The line of the fixture that carries ``# root_cause: <marker>`` (or ends the file's
    raise, for jobpkg): the frame a failure must name."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.rstrip().endswith(marker):
            return number
    raise AssertionError(f"no line ending with {marker!r} in {path}")


@pytest.fixture(scope="module", params=MODES)
def both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("home")
    with serve_in_mode(request.param, make_config(home), tmp_path_factory, worker_count=1) as live:
        yield live


def failed(live: Live, **params: Any) -> dict[str, Any]:
    job = live.submit("root_cause", **params)
    done = live.wait(job["job_id"])
    assert done["status"] == "failed", done
    return done


def test_raise_from_gives_the_chain_down_to_the_root_and_the_frame_in_job_code(
    both: Live,
) -> None:
    done = failed(both, how="from")
    frame = {
        "file": "jobs_fixture.py",
        "line": line_of("# root_cause: raise"),
        "function": "_connect",
    }
    assert done["failure"] == {
        "kind": "exception",
        "type": "RuntimeError",
        "message": "inventory unavailable",
        "causes": [{"type": "ConnectionError", "message": REFUSED}],
        "frame": frame,
    }
    assert done["error"] == (
        f"RuntimeError: inventory unavailable{ARROW}ConnectionError: {REFUSED} "
        f"(jobs_fixture.py:{frame['line']} in _connect)"
    )
    # the traceback text stays in the log's record, under the one-line error
    last = [r for r in both.all_records(done["job_id"]) if r["level"] == "ERROR"][-1]
    text = last["message"] + last.get("exc_text", "")
    assert last["message"].startswith(f"job failed: {done['error']}")
    assert "Traceback (most recent call last)" in text
    assert "The above exception was the direct cause of the following exception" in text
    listed = both.http.get("/api/jobs", params={"type": "root_cause"}).json()["jobs"]
    assert {j["job_id"]: j["failure"] for j in listed}[done["job_id"]] == done["failure"]


def test_an_implicit_context_is_a_cause_and_from_none_is_not(both: Live) -> None:
    done = failed(both, how="context")
    assert done["failure"]["causes"] == [{"type": "ConnectionError", "message": REFUSED}]
    assert done["failure"]["message"] == "inventory unavailable for nobody"
    assert done["failure"]["frame"]["function"] == "_connect"

    alone = failed(both, how="suppressed")
    line = line_of("# root_cause: suppressed")
    assert alone["failure"]["causes"] == []
    assert alone["failure"]["frame"] == {
        "file": "jobs_fixture.py",
        "line": line,
        "function": "root_cause",
    }
    assert (
        alone["error"]
        == f"RuntimeError: inventory unavailable (jobs_fixture.py:{line} in root_cause)"
    )


@pytest.mark.parametrize(
    ("how", "root"),
    [("stdlib", "JSONDecodeError"), ("library", "ValueError")],
)
def test_the_frame_skips_the_stdlib_and_installed_packages(both: Live, how: str, root: str) -> None:
    done = failed(both, how=how)
    assert done["failure"]["type"] == root
    assert done["failure"]["frame"] == {
        "file": "jobs_fixture.py",
        "line": line_of(f"# root_cause: {how}"),
        "function": "root_cause",
    }


def test_code_in_a_package_module_is_shown_by_its_import_path(both: Live) -> None:
    done = failed(both, how="package")
    inventory = FIXTURE.parent / "jobpkg" / "inventory.py"
    line = line_of("# the frame test_failure expects", inventory)
    assert done["failure"]["frame"] == {
        "file": "jobpkg/inventory.py",
        "line": line,
        "function": "_query",
    }
    assert done["error"] == (
        f"LookupError: no inventory table at {URL} (jobpkg/inventory.py:{line} in _query)"
    )


def test_secrets_are_redacted_in_the_error_and_every_message(both: Live) -> None:
    done = failed(both, how="context", password=SECRET)
    assert done["params"]["password"] == "********"
    failure = done["failure"]
    assert SECRET not in done["error"] and SECRET not in str(failure)
    assert failure["message"] == "inventory unavailable for ********"
    assert failure["causes"][0]["message"] == (
        "could not connect to postgres://bob:********@db.internal:5432/inv: connection refused"
    )
    assert done["error"].count("********") == 2
    assert not [r for r in both.all_records(done["job_id"]) if SECRET in str(r)]


# -- describe() on chains a job does not usually make ---------------------------------------------
def _raise_chain(length: int) -> BaseException:
    try:
        raise OSError("link 0")
    except OSError as first:
        current: BaseException = first
    for n in range(1, length):
        try:
            raise ValueError(f"link {n}") from current
        except ValueError as exc:
            current = exc
    return current


def test_a_cycle_ends_the_chain_once_each() -> None:
    a, b = KeyError("a"), TypeError("b")
    a.__context__, b.__context__ = b, a
    assert exception_chain(a) == [a, b]
    error, failure = describe(a, Redactor())
    assert error == "KeyError: 'a' ← TypeError: b" and failure["frame"] is None
    assert failure["causes"] == [{"type": "TypeError", "message": "b"}]


def test_a_long_chain_is_bounded_but_keeps_its_root() -> None:
    outer = _raise_chain(50)
    error, failure = describe(outer, Redactor())
    causes = failure["causes"]
    assert len(causes) == MAX_CAUSES and failure["causes_cut"] == 49 - MAX_CAUSES
    assert causes[0]["message"] == "link 48" and causes[-1] == {
        "type": "OSError",
        "message": "link 0",
    }
    assert error.startswith(
        "ValueError: link 49 ← ValueError: link 48 ← … 47 more ← OSError: link 0 ("
    )
    assert "test_failure.py:" in error and error.endswith("in _raise_chain)")


def test_messages_are_cut_and_one_line_in_the_error_but_whole_in_the_digest() -> None:
    try:
        raise RuntimeError("first line\nsecond line " + "x" * 2000)
    except RuntimeError as exc:
        error, failure = describe(exc, Redactor())
    assert "\n" not in error and "first line second line xxx" in error and "…" in error
    assert (
        failure["message"].startswith("first line\nsecond line") and len(failure["message"]) == 1000
    )


def test_job_code_is_not_the_stdlib_site_packages_jobtrail_or_generated() -> None:
    import json

    import httpx

    import jobtrail.worker.runtime

    assert is_job_code(__file__) and is_job_code(str(FIXTURE))
    for module in (json, httpx, jobtrail.worker.runtime):
        assert module.__file__ and not is_job_code(module.__file__), module
    assert not is_job_code("<string>") and not is_job_code("<frozen runpy>")
