"""Issue 19: what ``--job-user`` and ``--sandbox`` cost a job's start.

For each mode (default, --job-user, --sandbox, both) a real root server (in the tests'
mount namespace where another user reaches this venv: tests/support/sandbox.py) runs
``--jobs`` ``sleep`` jobs one after another; a job's start cost is its ``started_at`` minus
its ``created_at`` (submit to ``Started``, both stamped by the server). Then the start of a
job whose worker must be replaced first (``--respawns`` times: a job that ends its worker,
then one more): what a job waits after a cancel or a limit. Modes alternate within each of
``--rounds``, each round on a fresh server. Prints medians and p95 in ms.

``--backend redis``: distributed mode, where every job's process is made afresh (a fork of
the RQ work-horse that execs a new interpreter): a real redis-server with a password, one
``jobtrail worker --concurrency 1`` per mode (default, --job-user, --job-user --sandbox; run
where USER reaches this venv, as tests/test_isolation_redis.py does) and an API server in
this process; the same submit-to-Started of ``--jobs`` sequential ``sleep`` jobs (no
respawns: a horse is forked per job anyway).

    python benchmarks/isolation_start.py --jobs 20 --respawns 5 --rounds 3   (root; bwrap)
    python benchmarks/isolation_start.py --backend redis --jobs 20 --rounds 3   (root)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from support.sandbox import as_root_reachable, job_user, serve_as_root  # noqa: E402

MODES = ("default", "job-user", "sandbox", "both")
REDIS_MODES = ("default", "job-user", "both")  # jobtrail worker --sandbox needs --job-user
PASSWORD = "pw-bench-3c9e1f"


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


def redis_start_costs(mode: str, jobs: int, folder: Path) -> list[float]:
    """Submit-to-Started of ``jobs`` sleep jobs on one ``jobtrail worker`` in ``mode``, in ms."""
    from dataclasses import replace

    from support.live import live_server, server_config
    from support.redis_server import WORKER_COMMAND, Workers, redis_server

    (folder / mode).mkdir(parents=True)
    with redis_server(folder / mode / "redis", password=PASSWORD) as rs:
        workers = Workers(rs.url, count=0)
        try:
            command = [sys.executable, "-m", *WORKER_COMMAND, "--backend", rs.url]
            command += ["--concurrency", "1", "--jobs-module", "jobs_fixture", *flags(mode)]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
            env.pop("JOBTRAIL_BACKEND", None)
            workers.procs.append(
                subprocess.Popen([*as_root_reachable(), *command], env=env, cwd=TESTS)
            )
            workers.wait_ready(1)
            config = replace(server_config(folder / mode / "home"), backend=rs.url)
            with live_server(config) as live:
                live.wait(live.submit("sleep", seconds=0)["job_id"])  # the worker has run one
                costs = []
                for _ in range(jobs):
                    costs.append(_start_ms(live.wait(live.submit("sleep", seconds=0)["job_id"])))
                return costs
        finally:
            workers.stop()


def _start_ms(job: dict[str, Any]) -> float:
    created = dt.datetime.fromisoformat(job["created_at"])
    return (dt.datetime.fromisoformat(job["started_at"]) - created).total_seconds() * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--respawns", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=("local", "redis"), default="local")
    args = parser.parse_args()
    if args.backend == "redis":
        redis_main(args.jobs, args.rounds)
        return
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


def redis_main(jobs: int, rounds: int) -> None:
    costs: dict[str, list[float]] = {mode: [] for mode in REDIS_MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for mode in REDIS_MODES:
                costs[mode] += redis_start_costs(mode, jobs, Path(tmp) / str(round_))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("distributed mode, submit to Started")
    base = statistics.median(costs["default"])
    for mode, found in costs.items():
        median = statistics.median(found)
        p95 = statistics.quantiles(found, n=20)[-1]
        print(f"  {mode:9} median {median:7.1f} ms  p95 {p95:7.1f} ms  ({median - base:+.1f})")


if __name__ == "__main__":
    main()
