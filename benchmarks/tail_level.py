"""(d) GET /api/jobs/{id}/logs?tail=100[&level=ERROR] on logs of ~1 MB, ~10 MB, and a rotated
log (5 segments of 10 MB kept), written by `flood` jobs with 1 ERROR per 1000 records.

The server runs with `--log-max-bytes 10485760` (the default, given explicitly). Bytes per
record are measured first, so the sizes hold whatever the line format. Each query is timed
over sequential requests from one keep-alive client (default format: text), after one JSON
request that checks the answer (only ERRORs, as many as expected).

Targets: p99 < 20 ms for every size and query; roughly independent of size: the median
cost per returned record on the largest log <= 3x that on the smallest (a ~1 MiB log holds
only ~5 ERRORs at one in 1,000, so `tail=100&level=ERROR` answers with 5, not 100).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _server import Server, jobtrail_server
from _stats import Checks, pct, table

MIB = 1024 * 1024
ERRORS_EVERY = 1000
P99_LIMIT_MS = 20.0
SIZE_RATIO_LIMIT = 3.0
SEGMENTS = 5  # the server's default number of kept segments


def make_log(srv: Server, records: int) -> str:
    job_id = srv.submit("flood", records=records, errors_every=ERRORS_EVERY)
    job = srv.wait(job_id, timeout=900)
    if job["status"] != "completed" or srv.latest_seq(job_id) != records:
        raise RuntimeError(
            f"flood of {records} records: {job['status']}, latest {srv.latest_seq(job_id)}"
        )
    return job_id


def timed(srv: Server, path: str, params: dict[str, str | int], n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = srv.http.get(path, params=params)
        out.append(time.perf_counter() - t0)
        response.raise_for_status()
    return out


HEADERS = [
    "log",
    "on disk/segs",
    "records",
    "query",
    "returned",
    "median ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "median µs/returned",
]


def measure(segment: int, n: int, checks: Checks) -> list[list[object]]:
    """Build the three logs on a fresh server and time both queries on each; returns the
    table rows and records every target in ``checks``."""
    with jobtrail_server(workers=2, log_max_bytes=segment) as srv:
        calib = make_log(srv, 20_000)
        per_record = srv.log_dir_bytes(calib)[0] / 20_000
        sizes = [
            (f"~{segment / 10 / MIB:.2g} MiB", int(segment / 10 / per_record)),
            (f"~{segment / MIB:g} MiB", int(segment * 0.95 / per_record)),  # just one segment
            (
                f"rotated {SEGMENTS}x{segment / MIB:g} MiB",
                int(segment * (SEGMENTS + 0.9) / per_record),
            ),
        ]
        print(
            f"tail_level: {per_record:.0f} bytes/record, 1 ERROR per {ERRORS_EVERY} records, "
            f"--log-max-bytes {segment}, {n} requests per row"
        )
        rows: list[list[object]] = []
        # per returned record: a small log holds fewer ERRORs than tail=100 asks for, so it
        # answers with less; what must not grow with the file is the cost of each answer
        per_answer: dict[str, list[float]] = {"level=ERROR": [], "no level": []}
        for label, records in sizes:
            job_id = make_log(srv, records)
            on_disk, files = srv.log_dir_bytes(job_id)
            path = f"/api/jobs/{job_id}/logs"
            page = srv.logs(job_id, tail=100, level="ERROR", format="json")
            first_kept = page["truncated_before"]
            errors_kept = records // ERRORS_EVERY - (first_kept - 1) // ERRORS_EVERY
            want = min(100, errors_kept)
            levels = {r["level"] for r in page["logs"]}
            checks.check(
                len(page["logs"]) == want and levels <= {"ERROR"},
                f"{label}: level=ERROR gave {len(page['logs'])} ERROR records, expected {want}",
            )
            plain = srv.logs(job_id, tail=100, format="json")
            checks.check(
                len(plain["logs"]) == 100 and plain["logs"][-1]["seq"] == records,
                f"{label}: tail=100 gave the last 100 records",
            )
            for query, params, returned in (
                ("level=ERROR", {"tail": 100, "level": "ERROR"}, want),
                ("no level", {"tail": 100}, 100),
            ):
                timed(srv, path, params, max(5, n // 20))  # warm-up (page cache, code paths)
                ms = [t * 1000 for t in timed(srv, path, params, n)]
                med, p99 = statistics.median(ms), pct(ms, 99)
                per_answer[query].append(med * 1000 / max(1, returned))
                rows.append(
                    [
                        label,
                        f"{on_disk / MIB:.1f} MiB/{files}",
                        f"{records:,}",
                        query,
                        returned,
                        med,
                        pct(ms, 95),
                        p99,
                        max(ms),
                        per_answer[query][-1],
                    ]
                )
                checks.check(
                    p99 < P99_LIMIT_MS, f"{label} {query}: p99 {p99:.2f} ms < {P99_LIMIT_MS:g} ms"
                )
            if first_kept > 1:
                print(f"  {label}: rotation kept seq {first_kept:,}..{records:,}")
        for query, costs in per_answer.items():
            ratio = costs[-1] / costs[0]
            checks.check(
                ratio <= SIZE_RATIO_LIMIT,
                f"{query}: cost per returned record, largest/smallest log {ratio:.2f}x "
                f"<= {SIZE_RATIO_LIMIT:g}x",
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small run: 1 MiB segments, small logs"
    )
    parser.add_argument("--requests", type=int, default=None, help="requests per size and query")
    args = parser.parse_args(argv)
    segment = (1 if args.quick else 10) * MIB
    n = args.requests or (100 if args.quick else 300)
    checks = Checks("tail_level")
    rows = measure(segment, n, checks)
    print(table(HEADERS, rows))
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
