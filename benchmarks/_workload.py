"""The one workload every capture variant runs, plus small /proc helpers for measuring it.

``run_workload`` is imported both by the local variants (``_variants.py``, in processes this
benchmark forks) and by the ``capture_bench`` job type (``bench_jobs.py``, in jobtrail's
workers), so every variant executes the same Python calls:

* ``records`` ordinary ``log.info(fmt, i, job_id, pad)`` calls, the job id among the args;
* a quarter of them from a second thread running at the same time as the main thread;
* every ``ERRORS_EVERY``-th one is ``log.exception(...)`` inside an ``except`` of an error
  raised two frames down, so it carries a traceback.

Loguru formats ``{}`` placeholders where the standard library formats ``%s``: its variant
passes ``LOGURU_FMT``; everything else is identical.
"""

from __future__ import annotations

import os
import threading
from typing import Any

STD_FMT = "record %d of job %s: %s"
LOGURU_FMT = "record {} of job {}: {}"
ERRORS_EVERY = 500  # 100 tracebacks in 50,000 records
HELPER_SHARE = 4  # 1 record in 4 comes from the helper thread
PAYLOAD = "x" * 40


def _fail(i: int) -> None:
    _fail_deeper(i)


def _fail_deeper(i: int) -> None:
    raise ValueError(f"bench failure {i}")


def run_workload(log: Any, job_id: str, records: int, fmt: str = STD_FMT) -> None:
    """Emit ``records`` records through ``log`` (a logging.Logger or a loguru logger)."""
    helper_count = records // HELPER_SHARE
    main_count = records - helper_count

    def emit(start: int, count: int) -> None:
        info, exception, pad = log.info, log.exception, PAYLOAD
        for i in range(start, start + count):
            if i % ERRORS_EVERY == 0:
                try:
                    _fail(i)
                except ValueError:
                    exception(fmt, i, job_id, pad)
            else:
                info(fmt, i, job_id, pad)

    helper = threading.Thread(target=emit, args=(main_count + 1, helper_count), name="bench-helper")
    helper.start()
    emit(1, main_count)
    helper.join()


# -- /proc helpers (Linux) ---------------------------------------------------------------


def reset_peak_rss(pid: int | str = "self") -> None:
    """Reset VmHWM (peak RSS) of a process to its current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_kb(pid: int | str = "self") -> tuple[int, int]:
    """(current RSS, peak RSS since the last reset) in KiB; (0, 0) if unknown."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of every thread of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
