"""(b) Records per second captured end to end, with 1 and with 4 concurrent `flood` jobs.

One run: submit the floods, then poll until every job is terminal AND its `latest_seq` equals
the records it logged; the time from the first submit to that point is the run's time.
Lost records (expected - written, plus the job's `records_dropped`) are checked and printed.
Each concurrency is repeated 3 times on one server with 4 workers; medians and spread shown.

Targets: nothing lost, every job completed.

``--otlp``: the cost of OpenTelemetry log export instead. Rounds alternate a server without
export and one with ``--otlp-endpoint`` (a receiver in this process that decodes and counts
what it is sent), 4 floods each run, so both see the same machine; medians, the ratio, and
how many records reached the receiver: by the time capture ended, and in all once the export
caught up (the exporter process runs below the jobs' priority, so on a busy machine it
sends most of a flood after it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _server import Server, jobtrail_server
from _stats import Checks, table

WORKERS = 4
POLL = 0.05


def one_run(srv: Server, jobs: int, records: int) -> dict[str, float]:
    t0 = time.perf_counter()
    ids = [srv.submit("flood", records=records) for _ in range(jobs)]
    pending = set(ids)
    finals: dict[str, dict[str, Any]] = {}
    written: dict[str, int] = {}
    deadline = time.monotonic() + 600
    while pending:
        for job_id in sorted(pending):
            job = srv.job(job_id)
            if job["status"] not in ("completed", "failed", "cancelled"):
                continue
            seq = srv.latest_seq(job_id)
            written[job_id] = seq
            finals[job_id] = job
            if seq >= records or job["status"] != "completed":
                pending.discard(job_id)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not done after 600 s: {sorted(pending)}")
        time.sleep(POLL)
    elapsed = time.perf_counter() - t0
    lost = sum(records - written[j] for j in ids)
    dropped = sum(int(finals[j].get("records_dropped") or 0) for j in ids)
    failed = sum(finals[j]["status"] != "completed" for j in ids)
    emit = [
        float(r["emit_seconds"])
        for j in ids
        if isinstance(r := finals[j].get("result"), dict) and "emit_seconds" in r
    ]
    return {
        "seconds": elapsed,
        "rate": jobs * records / elapsed,
        "lost": float(lost),
        "dropped": float(dropped),
        "failed": float(failed),
        "emit_rate": jobs * records / max(emit) if emit else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run for smoke testing")
    parser.add_argument("--records", type=int, default=None, help="records per flood job")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--otlp", action="store_true", help="with vs. without OTLP export")
    args = parser.parse_args(argv)
    records = args.records or (20_000 if args.quick else 200_000)
    if args.otlp:
        return otlp_main(records, args.repeat)
    checks = Checks("throughput")
    print(
        f"throughput: flood jobs of {records:,} records, {WORKERS} workers, {args.repeat} runs each"
    )
    rows: list[list[object]] = []
    with jobtrail_server(workers=WORKERS) as srv:
        srv.wait(srv.submit("flood", records=1000))  # warm the workers up
        for jobs in (1, 4):
            runs = [one_run(srv, jobs, records) for _ in range(args.repeat)]
            rates = [r["rate"] for r in runs]
            spread = (max(rates) - min(rates)) / statistics.median(rates) * 100
            lost = int(sum(r["lost"] for r in runs))
            dropped = int(sum(r["dropped"] for r in runs))
            failed = int(sum(r["failed"] for r in runs))
            rows.append(
                [
                    f"{jobs} job(s)",
                    f"{jobs * records:,}",
                    statistics.median(r["seconds"] for r in runs),
                    statistics.median(rates),
                    min(rates),
                    max(rates),
                    f"{spread:.0f}%",
                    statistics.median(r["emit_rate"] for r in runs),
                    lost,
                    dropped,
                ]
            )
            for i, r in enumerate(runs, 1):
                print(
                    f"  {jobs} job(s) run {i}: {r['seconds']:.2f} s, {r['rate']:,.0f} records/s "
                    f"(emit side {r['emit_rate']:,.0f}/s), lost {int(r['lost'])}",
                    flush=True,
                )
            checks.check(
                lost == 0 and dropped == 0,
                f"{jobs} job(s): lost {lost}, dropped {dropped} (want 0)",
            )
            checks.check(failed == 0, f"{jobs} job(s): {failed} job(s) did not complete (want 0)")
    print(
        table(
            [
                "concurrency",
                "records/run",
                "median s",
                "median rec/s",
                "min rec/s",
                "max rec/s",
                "spread",
                "emit rec/s",
                "lost",
                "dropped",
            ],
            rows,
        )
    )
    print("(records/s: all jobs' records / time from submit until all were written;")
    print(" emit rec/s: the same records / the slowest job's own emitting time)")
    return checks.exit_code()


def otlp_main(records: int, rounds: int, jobs: int = 4) -> int:
    from _otlp import otlp_receiver

    checks = Checks("throughput --otlp")
    total = jobs * records
    print(f"throughput --otlp: {jobs} flood jobs of {records:,} records, {rounds} rounds")
    rates: dict[str, list[float]] = {"no export": [], "OTLP export": []}
    cpu: dict[str, list[float]] = {"no export": [], "OTLP export": []}  # server's, µs/record
    live: list[float] = []  # share received by the time capture ended (and 1 s more)
    whole: list[float] = []  # share received once the export caught up (or stalled)
    catch_up: list[float] = []  # seconds from capture's end until then
    with otlp_receiver() as (url, counter):
        for n in range(rounds):
            for name, extra in (("no export", ()), ("OTLP export", ("--otlp-endpoint", url))):
                with jobtrail_server(workers=WORKERS, extra_args=extra) as srv:
                    srv.wait(srv.submit("flood", records=1000))  # warm the workers up
                    time.sleep(2.0)  # the warm-up's records reach the receiver
                    before, cpu_before = counter.records, _cpu_seconds(srv.proc.pid)
                    run = one_run(srv, jobs, records)
                    ended = time.monotonic()
                    cpu[name].append((_cpu_seconds(srv.proc.pid) - cpu_before) / total * 1e6)
                    time.sleep(1.0)  # the batch processor's last batch
                    if extra:
                        live.append((counter.records - before) / total)
                        got = _caught_up(counter, before + total)
                        catch_up.append(time.monotonic() - ended)
                        whole.append((got - before) / total)
                rates[name].append(run["rate"])
                shown = f", {live[-1]:.1%} received live, {whole[-1]:.1%} in all" if extra else ""
                print(
                    f"  round {n + 1} {name}: {run['rate']:,.0f} records/s, server CPU "
                    f"{cpu[name][-1]:.1f} µs/record{shown}",
                    flush=True,
                )
                checks.check(run["lost"] == 0 and run["dropped"] == 0, f"{name}: lost none")
    base = statistics.median(rates["no export"])
    rows: list[list[object]] = [
        [
            name,
            statistics.median(r),
            min(r),
            max(r),
            f"{statistics.median(r) / base:.2f}",
            f"{statistics.median(cpu[name]):.1f}",
        ]
        for name, r in rates.items()
    ]
    headers = ["server", "median rec/s", "min rec/s", "max rec/s", "ratio", "server µs/rec"]
    print(table(headers, rows))
    print("(server µs/rec: the server process's CPU time over the run, per record captured)")
    print(
        f"records that reached the receiver: median {statistics.median(live):.1%} by the end "
        f"of capture, {statistics.median(whole):.1%} in all, "
        f"{statistics.median(catch_up):.0f} s after capture ended (median)"
    )
    return checks.exit_code()


def _cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (its children not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _caught_up(counter: Any, target: int, stall: float = 10.0, limit: float = 600.0) -> int:
    """The receiver's count once it reached ``target`` or stopped growing for ``stall`` s."""
    deadline = time.monotonic() + limit
    seen, since = counter.records, time.monotonic()
    while counter.records < target and time.monotonic() < deadline:
        time.sleep(0.2)
        if counter.records != seen:
            seen, since = counter.records, time.monotonic()
        elif time.monotonic() - since > stall:
            break
    return int(counter.records)


if __name__ == "__main__":
    sys.exit(main())
