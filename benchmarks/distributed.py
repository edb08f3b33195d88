"""Distributed mode against local mode, in the same run: records/s, GET p99, Redis's cost.

For 1, 2 and 4 workers, first with `jobtrail serve --workers N` (local mode), then with
`jobtrail serve --backend redis://…` and N `jobtrail worker --concurrency 1` processes (each
standing for a host; all on this machine): N concurrent `flood` jobs of R records each;
records/s = records written / (first submit → every job terminal with its whole log); while
they run, this process GETs a finished job's `/api/jobs/{id}` in a loop (p99). Redis's own
CPU time per record comes from `INFO cpu`; the wall-clock cost per record is
1/rate(redis, 1 worker) - 1/rate(local, 1 worker). Freshness: a `stamped` job (records
2 ms apart, emit time in the message) polled through GET /api/jobs/{id}; each record's
latency is the first response that shows it minus its emit time (worker batching, XADD,
XREAD, file append and the API all included).

Target: freshness p99 ≤ 250 ms in distributed mode; nothing lost in either mode.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from _server import BENCH_DIR, JOBTRAIL, REPO, Server, free_port, jobtrail_server
from _stats import Checks, summary_ms, table
from freshness import measure

FRESH_P99_MS = 250.0
BENCH_MODULE = ("--jobs-module", "bench_jobs")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    directory = Path(tempfile.mkdtemp(prefix="jobtrail-bench-redis-"))
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(directory)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def worker_procs(url: str, count: int) -> Iterator[None]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen(
            [str(JOBTRAIL), "worker", "--backend", url, "--concurrency", "1", *BENCH_MODULE],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(5)


def redis_cpu(url: str) -> float:
    info = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def flood_run(srv: Server, jobs: int, records: int) -> tuple[float, int, int, list[float]]:
    """(records/s, records written, records expected, GET latencies s) for `jobs` floods."""
    probe = srv.submit("flood", records=200)
    srv.wait(probe)
    path = f"/api/jobs/{probe}"
    started = time.perf_counter()
    ids = [srv.submit("flood", records=records) for _ in range(jobs)]
    done = threading.Event()
    written = 0

    def finish() -> None:
        nonlocal written
        for job_id in ids:
            job = srv.wait(job_id, poll=0.05)
            if job["status"] != "completed":
                raise RuntimeError(f"flood {job['status']}: {job.get('error')}")
            written += srv.latest_seq(job_id)
        done.set()

    waiter = threading.Thread(target=finish)
    waiter.start()
    gets: list[float] = []
    with srv.http.__class__(base_url=srv.url, timeout=60.0) as http:
        while not done.is_set():
            t0 = time.perf_counter()
            http.get(path).raise_for_status()
            gets.append(time.perf_counter() - t0)
    waiter.join()
    elapsed = time.perf_counter() - started
    return written / elapsed, written, jobs * records, gets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (< 60 s), smoke only")
    parser.add_argument("--records", type=int, default=0, help="records per flood job")
    args = parser.parse_args(argv)
    records = args.records or (5_000 if args.quick else 100_000)
    stamped = (200, 0.002) if args.quick else (2000, 0.002)
    counts = (1, 2, 4)
    checks = Checks("distributed")
    rows = []
    rates: dict[tuple[str, int], float] = {}
    fresh: dict[str, dict[str, float]] = {}
    redis_us: dict[int, float] = {}
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        for mode in ("local", "redis"):
            for n in counts:
                client.flushall()
                extra: tuple[str, ...] = ("--backend", url) if mode == "redis" else ()
                workers = worker_procs(url, n) if mode == "redis" else contextlib.nullcontext()
                with workers, jobtrail_server(workers=n, worker_nice=0, extra_args=extra) as srv:
                    cpu0 = redis_cpu(url)
                    rate, written, expected, gets = flood_run(srv, n, records)
                    if mode == "redis":
                        redis_us[n] = (redis_cpu(url) - cpu0) / max(written, 1) * 1e6
                    checks.check(written >= expected, f"{mode} x{n}: nothing lost")
                    rates[(mode, n)] = rate
                    get = summary_ms(gets)
                    rows.append([mode, n, rate, written, get["median"], get["p99"]])
                    if n == 1:
                        _, every, _, _ = measure(srv, *stamped)
                        fresh[mode] = summary_ms(every)
    print(f"floods: N jobs x {records:,} records on N workers; GET of a finished job meanwhile")
    print(
        table(
            ["mode", "workers", "records/s", "written", "GET median ms", "GET p99 ms"],
            rows,
        )
    )
    cost = (1 / rates[("redis", 1)] - 1 / rates[("local", 1)]) * 1e6
    print(f"\nwall-clock cost Redis adds per record (1 worker): {cost:,.2f} µs")
    print(
        "Redis CPU per record: "
        + ", ".join(f"{n} worker(s) {us:.2f} µs" for n, us in sorted(redis_us.items()))
    )
    print("\nfreshness, every record of a stamped job (emit → first GET that shows it):")
    print(
        table(
            ["mode", "n", "median ms", "p95 ms", "p99 ms", "max ms"],
            [[m, s["n"], s["median"], s["p95"], s["p99"], s["max"]] for m, s in fresh.items()],
        )
    )
    checks.check(
        fresh["redis"]["p99"] <= FRESH_P99_MS,
        f"distributed freshness p99 {fresh['redis']['p99']:.1f} ms <= {FRESH_P99_MS:g} ms",
    )
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
