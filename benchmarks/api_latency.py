"""(a) Latency of GET /api/jobs/{id}: idle, and while 4 `flood` jobs log at full speed.

The job asked for is a finished one with 200 records (so `recent_logs` is full: 50 records).
Requests are sequential from one keep-alive httpx client in this process. Run once with the
default `--worker-nice 10` and once with `--worker-nice 0`.

Targets: p99 < 100 ms (aim < 10 ms), idle and loaded; p99 loaded <= 3x p99 idle.
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx
from _server import jobtrail_server
from _stats import Checks, summary_ms, table

P99_LIMIT_MS = 100.0
P99_AIM_MS = 10.0
RATIO_LIMIT = 3.0
FLOODS = 4
ENDLESS = 10**9  # records: the floods run until cancelled


def sample(http: httpx.Client, path: str, n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = http.get(path)
        elapsed = time.perf_counter() - t0
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
        out.append(elapsed)
    return out


def run(nice: int, samples: int, warmup: int) -> dict[str, object]:
    with jobtrail_server(workers=FLOODS, worker_nice=nice) as srv:
        job_id = srv.submit("flood", records=200)
        done = srv.wait(job_id)
        assert done["status"] == "completed", done
        assert len(done["recent_logs"]) >= 50, len(done["recent_logs"])
        path = f"/api/jobs/{job_id}"
        sample(srv.http, path, warmup)
        idle = sample(srv.http, path, samples)

        floods = [srv.submit("flood", records=ENDLESS) for _ in range(FLOODS)]
        try:
            for f in floods:
                srv.wait_running(f)
            time.sleep(0.5)  # let the pipes and the listener reach a steady state
            seq0 = sum(srv.latest_seq(f) for f in floods)
            t0 = time.perf_counter()
            sample(srv.http, path, warmup)
            loaded = sample(srv.http, path, samples)
            span = time.perf_counter() - t0
            seq1 = sum(srv.latest_seq(f) for f in floods)
            still = sum(srv.job(f)["status"] == "running" for f in floods)
        finally:
            srv.cancel_all(floods)
    return {
        "idle": summary_ms(idle),
        "loaded": summary_ms(loaded),
        "captured_per_s": (seq1 - seq0) / span,
        "floods_running": still,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run for smoke testing")
    parser.add_argument("--samples", type=int, default=None)
    args = parser.parse_args(argv)
    samples = args.samples or (200 if args.quick else 1000)
    warmup = 20 if args.quick else 100
    checks = Checks("api_latency")
    print(
        f"api_latency: GET /api/jobs/{{id}}, {samples} sequential requests a phase, "
        f"{FLOODS} workers"
    )
    rows: list[list[object]] = []
    results: dict[int, dict[str, object]] = {}
    for nice in (10, 0):
        res = results[nice] = run(nice, samples, warmup)
        for phase in ("idle", "loaded"):
            s = res[phase]
            assert isinstance(s, dict)
            rows.append(
                [f"nice {nice}", phase, int(s["n"]), s["median"], s["p95"], s["p99"], s["max"]]
            )
    print(table(["workers", "phase", "n", "median ms", "p95 ms", "p99 ms", "max ms"], rows))
    for nice, res in results.items():
        idle, loaded = res["idle"], res["loaded"]
        assert isinstance(idle, dict) and isinstance(loaded, dict)
        ratio = loaded["p99"] / idle["p99"]
        print(
            f"nice {nice}: p99 loaded/idle = {ratio:.2f}x; floods captured "
            f"{res['captured_per_s']:,.0f} records/s while sampled; "
            f"{res['floods_running']}/{FLOODS} floods still running at the end"
        )
        if res["floods_running"] != FLOODS:
            print(f"  warning: a flood ended before sampling did (nice {nice})")
        checks.check(
            idle["p99"] < P99_LIMIT_MS,
            f"nice {nice} idle p99 {idle['p99']:.2f} ms < {P99_LIMIT_MS:g} ms",
        )
        checks.check(
            loaded["p99"] < P99_LIMIT_MS,
            f"nice {nice} loaded p99 {loaded['p99']:.2f} ms < {P99_LIMIT_MS:g} ms",
        )
        checks.check(
            ratio <= RATIO_LIMIT, f"nice {nice} p99 loaded/idle {ratio:.2f}x <= {RATIO_LIMIT:g}x"
        )
        for phase, s in (("idle", idle), ("loaded", loaded)):
            if s["p99"] >= P99_AIM_MS:
                print(
                    f"  note: nice {nice} {phase} p99 {s['p99']:.2f} ms "
                    f"is above the {P99_AIM_MS:g} ms aim"
                )
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
