"""(e) Followers: many clients following one job's log stream (GET /api/jobs/{id}/logs/stream).

A `stamped` job logs records each carrying `time.time()` at emit, while 1, 10 and 100
followers (asyncio + httpx.AsyncClient in this process, one connection each) read its
Server-Sent Events from seq 0. Checked: every follower receives every record once, in order,
and then the end event. Measured: follower lag (time a follower parsed a record - its emit
time; records emitted after every follower was connected), the server process's CPU (% of
one core, over the run) and peak RSS (psutil on its pid; workers not included), and
GET /api/jobs/{id} latency sampled every 20 ms from a separate process meanwhile.

Targets: lag p99 < 250 ms with 100 followers; GET /api/jobs/{id} p99 < 100 ms meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from _server import Server, jobtrail_server
from _stats import Checks, summary_ms, table

LAG_P99_LIMIT_MS = 250.0
GET_P99_LIMIT_MS = 100.0
WORKERS = 2
STAMP = re.compile(rb'"message":"stamp ([0-9.]+) ')


@dataclass
class Follower:
    lags: list[float] = field(default_factory=list)
    received: int = 0
    in_order: bool = True
    ended: bool = False
    connected: float = 0.0


async def follow(client: httpx.AsyncClient, job_id: str, out: Follower, t_ready: list[float]):
    last = 0
    buf = b""
    async with client.stream("GET", f"/api/jobs/{job_id}/logs/stream", params={"after": 0}) as r:
        r.raise_for_status()
        async for chunk in r.aiter_raw():
            now = time.time()
            if not out.connected:
                out.connected = now
            buf += chunk
            *events, buf = buf.split(b"\n\n")
            for event in events:
                if event.startswith(b"event: record"):
                    _, id_line, data_line = event.split(b"\n", 2)
                    seq = int(id_line[4:])
                    if seq != last + 1:
                        out.in_order = False
                    last = seq
                    out.received += 1
                    stamp = STAMP.search(data_line)
                    if stamp is not None and t_ready and float(stamp.group(1)) >= t_ready[0]:
                        out.lags.append(now - float(stamp.group(1)))
                elif event.startswith(b"event: end"):
                    out.ended = True
                    return


def probe(url: str, path: str, seconds: float, results: Any) -> None:
    """GET `path` every 20 ms for `seconds` (a separate process: no GIL shared with followers)."""
    samples = []
    with httpx.Client(base_url=url, timeout=30) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            http.get(path).raise_for_status()
            samples.append(time.perf_counter() - t0)
            time.sleep(0.02)
    results.put(samples)


class Sampler(threading.Thread):
    """Peak RSS of the server process, every 100 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self.peak = max(self.peak, self.proc.memory_info().rss)


async def run_followers(srv: Server, n: int, records: int, interval: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    server_proc = psutil.Process(srv.proc.pid)
    limits = httpx.Limits(max_connections=n + 5, max_keepalive_connections=n + 5)
    timeout = httpx.Timeout(60.0)
    async with httpx.AsyncClient(base_url=srv.url, limits=limits, timeout=timeout) as client:
        # Both workers idle-busy for a moment, so every follower is connected to the pending
        # job before it logs its first record (stamped with 2 records 1.5 s apart: a sleep).
        blockers = [srv.submit("stamped", records=2, interval=1.5) for _ in range(WORKERS)]
        job_id = srv.submit("stamped", records=records, interval=interval)
        followers = [Follower() for _ in range(n)]
        t_ready: list[float] = []
        sampler = Sampler(srv.proc.pid)
        sampler.start()
        cpu0 = server_proc.cpu_times()
        wall0 = time.monotonic()
        results = ctx.Queue()
        expected = records * interval + 4.0
        prober = ctx.Process(
            target=probe, args=(srv.url, f"/api/jobs/{job_id}", max(1.0, expected), results)
        )
        prober.start()
        tasks = [asyncio.create_task(follow(client, job_id, f, t_ready)) for f in followers]
        while not all(f.connected for f in followers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        t_ready.append(time.time())
        if srv.job(job_id)["status"] != "pending":
            print(f"  warning: the job started before all {n} followers were connected")
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=records * interval * 5 + 120)
        wall = time.monotonic() - wall0
        cpu1 = server_proc.cpu_times()
        sampler.stop.set()
        gets = results.get(timeout=120)
        prober.join(30)
        for blocker in blockers:
            srv.wait(blocker)
    cpu = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / wall * 100
    job = srv.job(job_id)
    return {
        "job": job,
        "followers": followers,
        "lags": [lag for f in followers for lag in f.lags],
        "cpu": cpu,
        "rss": sampler.peak / 2**20,
        "gets": gets,
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (< 60 s)")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument(
        "--interval",
        type=float,
        default=0.001,
        help="seconds between records (0: as fast as the job can log)",
    )
    parser.add_argument("--followers", default="1,10,100", help="comma-separated counts")
    args = parser.parse_args(argv)
    records = args.records or (2000 if args.quick else 8000)
    counts = [int(c) for c in args.followers.split(",")]
    rate = "full speed" if args.interval == 0 else f"1 per {args.interval * 1000:g} ms"
    print(
        f"followers: `stamped` job, {records} records ({rate}); followers read its stream "
        f"from seq 0; {WORKERS} workers"
    )
    checks = Checks("followers")
    rows: list[list[object]] = []
    with jobtrail_server(workers=WORKERS) as srv:
        srv.wait(srv.submit("stamped", records=10, interval=0.001))  # warm-up
        for n in counts:
            res = asyncio.run(run_followers(srv, n, records, args.interval))
            followers: list[Follower] = res["followers"]
            complete = all(f.received == records and f.in_order and f.ended for f in followers)
            lag = summary_ms(res["lags"]) if res["lags"] else {"median": 0, "p99": 0, "max": 0}
            get = summary_ms(res["gets"])
            rows.append(
                [
                    n,
                    "yes" if complete else "NO",
                    lag["median"],
                    lag["p99"],
                    lag["max"],
                    res["cpu"],
                    res["rss"],
                    get["median"],
                    get["p99"],
                    res["wall"],
                ]
            )
            checks.check(
                complete,
                f"{n} follower(s): every follower got all {records} records in order, then end",
            )
            checks.check(res["job"]["status"] == "completed", f"{n} follower(s): job completed")
            checks.check(
                len(res["lags"]) >= records * n // 2,
                f"{n} follower(s): {len(res['lags'])} lag samples (records after all connected)",
            )
            if n >= 100:
                checks.check(
                    lag["p99"] < LAG_P99_LIMIT_MS,
                    f"{n} followers: lag p99 {lag['p99']:.1f} ms < {LAG_P99_LIMIT_MS:g} ms",
                )
            checks.check(
                get["p99"] < GET_P99_LIMIT_MS,
                f"{n} follower(s): GET /api/jobs/{{id}} p99 {get['p99']:.1f} ms "
                f"< {GET_P99_LIMIT_MS:g} ms",
            )
    print(
        table(
            [
                "followers",
                "all, in order",
                "lag p50 ms",
                "lag p99 ms",
                "lag max ms",
                "server CPU %",
                "server RSS MiB",
                "GET p50 ms",
                "GET p99 ms",
                "run s",
            ],
            rows,
        )
    )
    print("(lag = time a follower parsed a record - its emit time, records emitted after all")
    print(" followers connected; CPU = the server process over the run, % of one core;")
    print(" the followers run in this process and share the machine's cores with the server)")
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
