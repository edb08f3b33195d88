"""HTTP clients in processes of their own, for ``api_latency.py --mode clients``.

Each client is a spawned process holding one kept-alive ``http.client`` connection (no
client library's own costs, and no GIL shared with the benchmark or another client). It
waits for the start event, sends ``warmup`` rounds, then ``rounds`` rounds of one request to
each path in turn, so every path is timed under the same conditions as the others, and sends
back its timings (seconds) per path.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

START_TIMEOUT = 60.0


def _own_session() -> None:
    """Lead a session of its own, as a client started from its own shell or machine would.

    Where the kernel shares the CPU between sessions first (autogroup), clients started by
    one benchmark process share that session's one share: under 4 flooding jobs (each in a
    session of its own, ``worker.runtime.below_the_server``) the 4 clients then waited up to
    17 ms for a CPU themselves (``perf sched latency``), which the latency they time took in
    as the server's. Its own session gives each client the share a separate program gets.
    """
    try:
        os.setsid()
    except OSError:  # already a group leader: stays where it is
        pass


def _client(
    port: int, paths: list[str], rounds: int, warmup: int, go: Event, out: Connection
) -> None:
    _own_session()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    timings: dict[str, list[float]] = {path: [] for path in paths}
    try:
        conn.connect()
        out.send("ready")
        if not go.wait(START_TIMEOUT):
            raise TimeoutError("no start signal")
        for i in range(warmup + rounds):
            for path in paths:
                t0 = time.perf_counter()
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - t0
                if response.status != 200:
                    raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
                if i >= warmup:
                    timings[path].append(elapsed)
        out.send(timings)
    except Exception as exc:  # reported to the benchmark, which raises it
        out.send(exc)
    finally:
        conn.close()
        out.close()


def run_clients(
    port: int, paths: Sequence[str], clients: int, rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Timings per path of ``clients`` processes started together, pooled."""
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs, pipes = [], []
    try:
        for _ in range(clients):
            ours, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_client, args=(port, list(paths), rounds, warmup, go, theirs), daemon=True
            )
            proc.start()
            theirs.close()
            procs.append(proc)
            pipes.append(ours)
        for pipe in pipes:
            if not pipe.poll(START_TIMEOUT):
                raise TimeoutError("a client process did not start")
            ready = pipe.recv()
            if isinstance(ready, Exception):
                raise ready
        go.set()
        pooled: dict[str, list[float]] = {path: [] for path in paths}
        for pipe in pipes:
            got = pipe.recv()
            if isinstance(got, Exception):
                raise got
            for path, values in got.items():
                pooled[path] += values
        return pooled
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in pipes:
            pipe.close()
