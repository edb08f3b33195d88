"""Where an emitting thread's time goes: CPU per ``logger.info`` call, one thread, in process.

``python benchmarks/_breakdown.py MODE`` prints the best of 3 rounds of ``RECORDS`` calls of
``log.info("record %d of job %s: %s", ...)`` (``process_time``, µs per record) with:

* ``null``: a handler that does nothing (the cost of the logging module itself);
* ``filehandler``: ``logging.FileHandler`` with the benchmark's line format;
* ``jobtrail``: jobtrail's ``BatchQueueHandler`` + ``RecordBatcher`` as a worker installs
  them (default redaction), batches handed to a no-op ``send``;
* ``jobtrail-no-redact``: the same with ``Redactor(defaults=False)`` (``--no-redact``);
* ``redact-call``: only ``Redactor()(message)`` (default patterns) per record.

Each mode runs in its own interpreter (``compare_capture.py`` starts one per mode).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

RECORDS = 30_000
MODES = ("null", "filehandler", "jobtrail", "jobtrail-no-redact", "redact-call")


class _Null(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        pass


def measure(mode: str) -> float:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    pad = "x" * 40
    if mode == "redact-call":
        from jobtrail.worker.redact import Redactor

        redact = Redactor()
        best = float("inf")
        for _ in range(3):
            c0 = time.process_time()
            for i in range(RECORDS):
                redact(f"record {i} of job bench-0: {pad}")
            best = min(best, time.process_time() - c0)
        return best / RECORDS * 1e6
    if mode == "null":
        root.addHandler(_Null())
    elif mode == "filehandler":
        from _variants import LINE_FMT

        tmp = tempfile.mkdtemp(prefix="jobtrail-breakdown-")
        handler = logging.FileHandler(Path(tmp) / "bench.log")
        handler.setFormatter(logging.Formatter(LINE_FMT.replace("%(job_id)s", "bench-0")))
        root.addHandler(handler)
    elif mode in ("jobtrail", "jobtrail-no-redact"):
        from jobtrail.worker.batcher import RecordBatcher
        from jobtrail.worker.handler import install
        from jobtrail.worker.redact import Redactor

        batcher = RecordBatcher(lambda message: None, redact=Redactor(defaults=mode == "jobtrail"))
        install(batcher)
        batcher.begin_job("bench-000000000000")
    else:
        raise SystemExit(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    log = logging.getLogger("bench")
    best = float("inf")
    for _ in range(3):
        c0 = time.process_time()
        for i in range(RECORDS):
            log.info("record %d of job %s: %s", i, "bench-0", pad)
        best = min(best, time.process_time() - c0)
    return best / RECORDS * 1e6


if __name__ == "__main__":
    print(f"{measure(sys.argv[1]):.3f}")
