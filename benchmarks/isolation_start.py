"""Issue 19: what ``--job-user`` and ``--sandbox`` cost a job's start.

For each mode (default, --job-user, --sandbox, both) a real root server (in the tests'
mount namespace where another user reaches this venv: tests/support/sandbox.py) runs
``--jobs`` ``sleep`` jobs one after another; a job's start cost is its ``started_at`` minus
its ``created_at`` (submit to ``Started``, both stamped by the server). Then the start of a
job whose worker must be replaced first (``--respawns`` times: a job that ends its worker,
then one more): what a job waits after a cancel or a limit. Modes alternate within each of
``--rounds``, each round on a fresh server. Prints medians and p95 in ms.

    python benchmarks/isolation_start.py --jobs 20 --respawns 5 --rounds 3   (root; bwrap)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from support.sandbox import job_user, serve_as_root  # noqa: E402

MODES = ("default", "job-user", "sandbox", "both")


def flags(mode: str) -> list[str]:
    user = ["--job-user", job_user()]
    return {
        "default": [],
        "job-user": user,
        "sandbox": ["--sandbox"],
        "both": [*user, "--sandbox"],
    }[mode]


def start_costs(mode: str, jobs: int, respawns: int, folder: Path) -> tuple[list[float], ...]:
    """Submit-to-Started of ``jobs`` sleep jobs run one at a time, and of ``respawns`` that
    wait for a new worker, in ms."""
    options = [
        "--workers",
        "1",
        "--worker-nice",
        "0",
        "--jobs-module",
        "jobs_fixture",
        *flags(mode),
    ]
    (folder / mode).mkdir(parents=True)
    warm, cold = [], []
    with serve_as_root(folder / mode / "home", *options, cwd=TESTS) as server:
        server.run("sleep", seconds=0)  # the worker is up and has run a job
        for _ in range(jobs):
            warm.append(_start_ms(server.run("sleep", seconds=0)))
        for _ in range(respawns):
            server.run("crash", kind="exit", lines=0)  # its worker exits: it is replaced
            cold.append(_start_ms(server.run("sleep", seconds=0)))
    return warm, cold


def _start_ms(job: dict[str, Any]) -> float:
    created = dt.datetime.fromisoformat(job["created_at"])
    return (dt.datetime.fromisoformat(job["started_at"]) - created).total_seconds() * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--respawns", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warm: dict[str, list[float]] = {mode: [] for mode in MODES}
    cold: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for mode in MODES:
                found = start_costs(mode, args.jobs, args.respawns, Path(tmp) / str(round_))
                warm[mode] += found[0]
                cold[mode] += found[1]
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for title, results in (("worker ready", warm), ("worker replaced first", cold)):
        print(title)
        base = statistics.median(results["default"])
        for mode, costs in results.items():
            median = statistics.median(costs)
            p95 = statistics.quantiles(costs, n=20)[-1]
            print(f"  {mode:9} median {median:7.1f} ms  p95 {p95:7.1f} ms  ({median - base:+.1f})")


if __name__ == "__main__":
    main()
