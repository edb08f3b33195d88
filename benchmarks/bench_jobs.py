"""Job types the benchmarks run; the benchmark servers import this module as `bench_jobs`
(benchmarks/ is put on their PYTHONPATH by `_server.py`)."""

from __future__ import annotations

import logging
import os
import threading
import time

from jobtrail import job

log = logging.getLogger("bench")


@job("flood")
def flood(
    records: int, errors_every: int = 0, threads: int = 1, payload: int = 60
) -> dict[str, float]:
    """Logs `records` records as fast as it can (split over `threads` threads); every
    `errors_every`-th record is an ERROR. Returns how long the emitting itself took."""
    pad = "x" * payload
    threads = max(1, threads)
    share, extra = divmod(records, threads)

    def emit(start: int, count: int) -> None:
        info, error = log.info, log.error
        for i in range(start, start + count):
            if errors_every and i % errors_every == 0:
                error("record %d %s", i, pad)
            else:
                info("record %d %s", i, pad)

    began = time.perf_counter()
    if threads == 1:
        emit(1, records)
    else:
        workers = []
        start = 1
        for t in range(threads):
            count = share + (1 if t < extra else 0)
            workers.append(threading.Thread(target=emit, args=(start, count), name=f"flood-{t}"))
            start += count
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return {"records": records, "emit_seconds": time.perf_counter() - began}


@job("stamped")
def stamped(records: int, interval: float) -> int:
    """Logs `records` records `interval` seconds apart, each carrying `time.time()` at emit:
    ``stamp <epoch seconds> <n>``. Paced against a schedule, so sleeps do not drift."""
    began = time.monotonic()
    for i in range(1, records + 1):
        log.info("stamp %.6f %d", time.time(), i)
        delay = began + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return records


@job("spin")
def spin(seconds: float) -> int:
    """Burns CPU for `seconds` without logging (a control for `flood`: CPU load alone)."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return n


@job("capture_bench")
def capture_bench(records: int, sync_dir: str, index: int, timeout: float = 120.0) -> int:
    """compare_capture.py's workload (``_workload.run_workload``) behind a start barrier.

    Writes ``<sync_dir>/ready-<index>`` holding this worker's pid, waits until
    ``<sync_dir>/go`` exists, then logs ``records`` records exactly as the other variants do.
    The benchmark measures CPU and RSS of this process from outside (it knows the pid).
    """
    from _workload import run_workload

    tmp = os.path.join(sync_dir, f".ready-{index}")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.rename(tmp, os.path.join(sync_dir, f"ready-{index}"))
    go = os.path.join(sync_dir, "go")
    deadline = time.monotonic() + timeout
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no go signal in {sync_dir} after {timeout:g}s")
        time.sleep(0.0005)
    job_tag = os.path.basename(sync_dir) + f"-{index}"
    run_workload(log, job_tag, records)
    return records
