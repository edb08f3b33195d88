"""tox's coverage step (tests/support/coverage_data.py) on data files as killed processes
leave them: the readable ones are combined, the torn ones discarded with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from coverage.data import CoverageData

pytestmark = pytest.mark.timeout(60)

SCRIPT = Path(__file__).parent / "support" / "coverage_data.py"
PAGE = 4096  # SQLite's default page size


def write_data(path: Path, suffix: str, lines: dict[str, list[int]]) -> Path:
    data = CoverageData(str(path), suffix=suffix)
    data.add_lines(lines)
    data.write()
    return Path(data.data_filename())


def combine(directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COVERAGE_FILE": str(directory / ".coverage")}
    return subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=directory, env=env, capture_output=True, text=True
    )


def test_torn_data_files_are_discarded_with_one_line_and_the_rest_combined(
    tmp_path: Path,
) -> None:
    base = tmp_path / ".coverage"
    many = {f"/src/m{i}.py": list(range(1, 400)) for i in range(40)}
    first = write_data(base, "vm.pid1.Xfirstx", many)
    second = write_data(base, "vm.pid2.Xsecondx", {"/src/other.py": [3, 5]})
    # killed before its schema was written: the message of the issue, "isn't a coverage data file"
    empty = tmp_path / ".coverage.vm.pid3.Xemptyx"
    empty.touch()
    # killed while writing its tables: the schema reads, a page of lines does not; this one
    # made `coverage combine` itself fail
    torn = tmp_path / ".coverage.vm.pid4.Xtornx"
    image = bytearray(first.read_bytes())
    image[6 * PAGE : 7 * PAGE] = b"\xff" * PAGE
    torn.write_bytes(bytes(image))
    probe = CoverageData(str(torn), read_only=True)
    probe.read()  # what coverage's combine checks before it takes a file's data

    done = combine(tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "coverage: discarded 2 of 4 data files, left unreadable by processes the tests killed"
        " while coverage saved their data"
    ]
    assert "CoverageWarning" not in done.stderr and "isn't a coverage data file" not in done.stderr
    assert not any(p.exists() for p in (first, second, empty, torn))
    combined = CoverageData(str(base))
    combined.read()
    assert combined.lines("/src/m7.py") == list(range(1, 400))
    assert combined.lines("/src/other.py") == [3, 5]


def test_readable_data_files_combine_without_a_word(tmp_path: Path) -> None:
    write_data(tmp_path / ".coverage", "vm.pid1.Xonex", {"/src/a.py": [1]})
    done = combine(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    combined = CoverageData(str(tmp_path / ".coverage"))
    combined.read()
    assert combined.lines("/src/a.py") == [1]
