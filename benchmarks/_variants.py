"""The logging stacks jobtrail's capture is compared with, run in processes forked from here.

Every variant runs ``_workload.run_workload`` in N processes started with ``fork``. The clock
starts when all N (and this process) have passed a ``multiprocessing.Barrier`` and stops once
the last record is in its file and every file is flushed and closed:

* ``stdlib-queue``: ``QueueHandler`` -> ``multiprocessing.Queue`` -> ``QueueListener`` (a
  thread here) routing each record to its job's ``FileHandler``;
* ``loguru-enqueue``: ``logger.add(sink, enqueue=True)``; the sink (in loguru's writer
  thread here) writes each message to its job's file;
* ``concurrent-log-handler``: every process writes one shared file through
  ``ConcurrentRotatingFileHandler`` (a file lock around each record);
* ``filehandler``: each process writes its own file with ``logging.FileHandler``, no IPC.

Each line starts with ``R|`` and carries the job id as a field, so records are counted per
job (traceback lines do not start with ``R|``).
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from _workload import LOGURU_FMT, STD_FMT, reset_peak_rss, rss_kb, run_workload

LINE_FMT = "R|%(asctime)s|%(levelname)s|%(name)s|%(threadName)s|%(job_id)s|%(message)s"
LOGURU_LINE_FMT = (
    "R|{time:YYYY-MM-DD HH:mm:ss.SSS}|{level}|{name}|{thread.name}|{extra[job_id]}|{message}"
)
CTX = multiprocessing.get_context("fork")


@dataclass
class WorkerStats:
    index: int
    cpu: float  # seconds, all threads of the process, from the barrier to files closed
    rss_start_kb: int
    rss_peak_kb: int


@dataclass
class LocalRun:
    seconds: float
    counts: dict[str, int]  # job id -> records found in the files
    workers: list[WorkerStats]
    listener_cpu: float  # this process, from the barrier until the files are closed
    listener_rss_start_kb: int
    listener_rss_peak_kb: int
    files: list[Path] = field(default_factory=list)


class _JobTag(logging.Filter):
    """Stamps the process's job id on every record (like a context variable would)."""

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = self.job_id
        return True


def _reset_root() -> logging.Logger:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG)
    return root


def _formatter(job_id: str | None = None) -> logging.Formatter:
    fmt = LINE_FMT if job_id is None else LINE_FMT.replace("%(job_id)s", job_id)
    return logging.Formatter(fmt)


def count_lines(path: Path) -> int:
    """Records in a per-job file: lines starting with ``R|``."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"R|"):
                n += 1
    return n


def count_by_job(path: Path) -> dict[str, int]:
    """Records per job id in a shared file."""
    out: dict[str, int] = {}
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"R|"):
                job = line.split(b"|", 6)[5].decode()
                out[job] = out.get(job, 0) + 1
    return out


# -- variants: parent side (listener) and child side (emitter) ---------------------------


class Variant:
    """One logging stack. ``start`` runs here before the fork, ``child`` in each worker
    (returns the logger the workload uses), ``child_done`` flushes the worker's side,
    ``finish`` runs here after every worker exited and closes every file."""

    name = ""
    fmt = STD_FMT
    has_listener = False

    def __init__(self, outdir: Path, job_ids: list[str]) -> None:
        self.outdir = outdir
        self.job_ids = job_ids

    def start(self) -> None:
        pass

    def start_listener(self) -> None:
        """Split from ``start`` so the stall test can fork workers before a listener runs."""

    def child(self, job_id: str) -> Any:
        raise NotImplementedError

    def child_done(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.close()

    def finish(self) -> None:
        pass

    def counts(self) -> dict[str, int]:
        return {j: count_lines(self.outdir / f"{j}.log") for j in self.job_ids}

    def files(self) -> list[Path]:
        return [self.outdir / f"{j}.log" for j in self.job_ids]


class _Router(logging.Handler):
    """The listener's handler: each record to its job's FileHandler."""

    def __init__(self, outdir: Path, job_ids: list[str]) -> None:
        super().__init__()
        self.files: dict[str, logging.FileHandler] = {}
        for job_id in job_ids:
            handler = logging.FileHandler(outdir / f"{job_id}.log", delay=True)
            handler.setFormatter(_formatter())
            self.files[job_id] = handler

    def emit(self, record: logging.LogRecord) -> None:
        self.files[record.job_id].handle(record)

    def close(self) -> None:
        for handler in self.files.values():
            handler.close()
        super().close()


class StdlibQueue(Variant):
    name = "stdlib-queue"
    has_listener = True

    def start(self) -> None:
        self.queue: multiprocessing.Queue[Any] = CTX.Queue()
        self.router = _Router(self.outdir, self.job_ids)
        self.listener = logging.handlers.QueueListener(self.queue, self.router)

    def start_listener(self) -> None:
        self.listener.start()

    def child(self, job_id: str) -> Any:
        root = _reset_root()
        handler = logging.handlers.QueueHandler(self.queue)
        handler.addFilter(_JobTag(job_id))
        root.addHandler(handler)
        return logging.getLogger("bench")

    def child_done(self) -> None:
        self.queue.close()
        self.queue.join_thread()  # the feeder thread has pushed every record into the pipe

    def finish(self) -> None:
        self.listener.stop()
        self.router.close()


class _LoguruSink:
    """Runs in loguru's writer thread here: each message to its job's file."""

    def __init__(self, outdir: Path, job_ids: list[str]) -> None:
        self.files = {j: open(outdir / f"{j}.log", "w", encoding="utf-8") for j in job_ids}  # noqa: SIM115

    def write(self, message: Any) -> None:
        self.files[message.record["extra"]["job_id"]].write(message)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class LoguruEnqueue(Variant):
    name = "loguru-enqueue"
    fmt = LOGURU_FMT
    has_listener = True

    def start(self) -> None:
        from loguru import logger

        logger.remove()
        self.sink = _LoguruSink(self.outdir, self.job_ids)
        self.handler_id = logger.add(
            self.sink.write, format=LOGURU_LINE_FMT, enqueue=True, level="DEBUG"
        )
        self.logger = logger

    def child(self, job_id: str) -> Any:
        _reset_root()
        return self.logger.bind(job_id=job_id)

    def child_done(self) -> None:
        pass  # loguru's put() writes into the pipe synchronously; nothing is buffered here

    def finish(self) -> None:
        self.logger.remove(self.handler_id)  # drains the queue, joins the writer thread
        self.sink.close()


class ConcurrentLogHandler(Variant):
    name = "concurrent-log-handler"

    def start(self) -> None:
        self.path = self.outdir / "shared.log"

    def child(self, job_id: str) -> Any:
        from concurrent_log_handler import ConcurrentRotatingFileHandler

        root = _reset_root()
        handler = ConcurrentRotatingFileHandler(str(self.path), "a", maxBytes=0, backupCount=0)
        handler.setFormatter(_formatter(job_id))
        root.addHandler(handler)
        return logging.getLogger("bench")

    def counts(self) -> dict[str, int]:
        found = count_by_job(self.path) if self.path.exists() else {}
        return {j: found.get(j, 0) for j in self.job_ids}

    def files(self) -> list[Path]:
        return [self.path]


class InProcessFile(Variant):
    name = "filehandler"

    def child(self, job_id: str) -> Any:
        root = _reset_root()
        handler = logging.FileHandler(self.outdir / f"{job_id}.log")
        handler.setFormatter(_formatter(job_id))
        root.addHandler(handler)
        return logging.getLogger("bench")


VARIANTS: dict[str, type[Variant]] = {
    v.name: v for v in (StdlibQueue, LoguruEnqueue, ConcurrentLogHandler, InProcessFile)
}


# -- running -------------------------------------------------------------------------------


def _child_main(
    variant: Variant,
    index: int,
    records: int,
    barrier: Barrier,
    results: Any,
) -> None:
    job_id = variant.job_ids[index]
    log = variant.child(job_id)
    barrier.wait()
    reset_peak_rss()
    rss0, _ = rss_kb()
    cpu0 = time.process_time()
    run_workload(log, job_id, records, variant.fmt)
    variant.child_done()
    cpu = time.process_time() - cpu0
    _, hwm = rss_kb()
    results.put(WorkerStats(index, cpu, rss0, hwm))


def run_local(
    name: str,
    processes: int,
    records: int,
    outdir: Path,
    *,
    stall: float = 0.0,
    on_stall: Callable[[list[int]], dict[str, Any]] | None = None,
) -> tuple[LocalRun, dict[str, Any]]:
    """One run of variant ``name`` in ``outdir`` (emptied afterwards). With ``stall`` the
    listener starts only after ``on_stall(worker pids)`` returned (it samples RSS)."""
    outdir.mkdir(parents=True, exist_ok=True)
    job_ids = [f"bench-{i}" for i in range(processes)]
    variant = VARIANTS[name](outdir, job_ids)
    variant.start()
    if not stall:
        variant.start_listener()
    barrier = CTX.Barrier(processes + 1)
    results = CTX.SimpleQueue()
    procs = [
        CTX.Process(
            target=_child_main,
            args=(variant, i, records, barrier, results),
            name=f"bench-{name}-{i}",
        )
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    reset_peak_rss()
    rss0, _ = rss_kb()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stall_info: dict[str, Any] = {}
    if stall:
        pids = [p.pid for p in procs if p.pid is not None]
        stall_info = on_stall(pids) if on_stall else {}
        variant.start_listener()
    stats: list[WorkerStats] = []
    # Collect before joining: a child blocked writing its result into a full pipe would
    # otherwise never exit.
    while len(stats) < processes:
        stats.append(results.get())
    for proc in procs:
        proc.join()
    variant.finish()
    seconds = time.perf_counter() - t0
    listener_cpu = time.process_time() - cpu0
    _, hwm = rss_kb()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"{name}: worker exit codes {bad}")
    run = LocalRun(
        seconds=seconds,
        counts=variant.counts(),
        workers=sorted(stats, key=lambda s: s.index),
        listener_cpu=listener_cpu if variant.has_listener else 0.0,
        listener_rss_start_kb=rss0,
        listener_rss_peak_kb=hwm,
        files=variant.files(),
    )
    for path in outdir.iterdir():  # outdir is this run's own: the logs and any lock files
        path.unlink()
    return run, stall_info


def sample_rss(pids: list[int], seconds: float, every: float = 0.05) -> dict[str, Any]:
    """Peak RSS (KiB) of each pid over ``seconds``, sampled from /proc."""
    peak = dict.fromkeys(pids, 0)
    start = {pid: rss_kb(pid)[0] for pid in pids}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pid in pids:
            peak[pid] = max(peak[pid], rss_kb(pid)[0])
        time.sleep(every)
    return {"start_kb": start, "peak_kb": peak}


if __name__ == "__main__":  # a smoke test: python benchmarks/_variants.py
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for variant_name in VARIANTS:
            result, _ = run_local(variant_name, 2, 5000, Path(tmp))
            print(variant_name, f"{2 * 5000 / result.seconds:,.0f}/s", result.counts)
