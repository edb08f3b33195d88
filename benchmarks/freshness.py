"""(c) Freshness: how long from a job's `logger.info` until GET /api/jobs/{id} shows it.

A `stamped` job logs records 1 ms apart, each carrying `time.time()` at emit. This process
polls GET /api/jobs/{id} in a tight loop (sequential, one keep-alive client); whenever a new
`recent_logs[0]` (newest record) appears, latency = time.time() at the response minus the
emit time in its message. Run on an otherwise idle server, then while 3 `flood` jobs log at
full speed (4 workers, default --worker-nice 10).

Target: p99 <= 100 ms in both runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _server import Server, jobtrail_server
from _stats import Checks, summary_ms, table

P99_LIMIT_MS = 100.0
WORKERS = 4
FLOODS = 3
ENDLESS = 10**9


def measure(
    srv: Server, records: int, interval: float
) -> tuple[list[float], list[float], list[float], int]:
    """(newest-record latencies s, every-record latencies s, request durations s, last seq
    seen) for one `stamped` job."""
    job_id = srv.submit("stamped", records=records, interval=interval)
    path = f"/api/jobs/{job_id}"
    last_seq = 0
    latencies: list[float] = []
    every: list[float] = []
    requests: list[float] = []
    deadline = time.monotonic() + 120 + records * interval * 5
    while True:
        t0 = time.perf_counter()
        response = srv.http.get(path)
        now = time.time()
        requests.append(time.perf_counter() - t0)
        response.raise_for_status()
        job = response.json()
        recent = job["recent_logs"]
        if recent and recent[0]["seq"] > last_seq:
            fresh = [r for r in recent if r["seq"] > last_seq]  # newest first
            ages = [now - float(r["message"].split(" ")[1]) for r in fresh]
            latencies.append(ages[0])
            # Older new records are only all there if none fell out of the 50-record window.
            if fresh[-1]["seq"] == last_seq + 1:
                every.extend(ages)
            last_seq = recent[0]["seq"]
        if job["status"] in ("completed", "failed", "cancelled"):
            if job["status"] != "completed":
                raise RuntimeError(f"stamped job {job['status']}: {job.get('error')}")
            if last_seq >= records:
                return latencies, every, requests, last_seq
        if time.monotonic() > deadline:
            raise TimeoutError(f"stamped job not done; last seq seen {last_seq}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run for smoke testing")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--interval", type=float, default=0.001, help="seconds between records")
    args = parser.parse_args(argv)
    records = args.records or (500 if args.quick else 2000)
    checks = Checks("freshness")
    print(
        f"freshness: `stamped` job, {records} records {args.interval * 1000:g} ms apart, "
        f"polled through GET /api/jobs/{{id}}; {WORKERS} workers"
    )
    rows: list[list[object]] = []
    with jobtrail_server(workers=WORKERS) as srv:
        srv.wait(srv.submit("stamped", records=10, interval=0.001))  # warm-up
        for label in ("idle", f"{FLOODS} floods"):
            floods = (
                [srv.submit("flood", records=ENDLESS) for _ in range(FLOODS)]
                if label != "idle"
                else []
            )
            try:
                for f in floods:
                    srv.wait_running(f)
                latencies, every, requests, seen = measure(srv, records, args.interval)
                running = sum(srv.job(f)["status"] == "running" for f in floods)
            finally:
                srv.cancel_all(floods)
            s, e = summary_ms(latencies), summary_ms(every)
            polls = [len(requests), statistics.median(requests) * 1000, max(requests) * 1000]
            rows.append(
                [label, "newest", int(s["n"]), s["median"], s["p95"], s["p99"], s["max"], *polls]
            )
            rows.append(
                [label, "every", int(e["n"]), e["median"], e["p95"], e["p99"], e["max"], "", "", ""]
            )
            if floods and running != len(floods):
                print(
                    f"  warning: {len(floods) - running} flood(s) ended before the measurement did"
                )
            checks.check(
                s["p99"] <= P99_LIMIT_MS,
                f"{label}: newest-record p99 {s['p99']:.1f} ms <= {P99_LIMIT_MS:g} ms",
            )
            checks.check(
                e["p99"] <= P99_LIMIT_MS,
                f"{label}: every-record p99 {e['p99']:.1f} ms <= {P99_LIMIT_MS:g} ms",
            )
            checks.check(seen == records, f"{label}: newest seq seen {seen} == {records} records")
    print(
        table(
            [
                "load",
                "records",
                "n",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "polls",
                "poll med ms",
                "poll max ms",
            ],
            rows,
        )
    )
    print("(latency = time of the response that first shows a record - its emit time;")
    print(" newest: recent_logs[0] of each poll that shows a new newest record;")
    print(" every: every record, the first time a poll shows it - includes the worker's batching)")
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
