"""What runs inside RQ's work-horse (a fresh fork per job): jobtrail's capture, then the job.

The horse installs the same capture as a local worker (``RecordBatcher`` + root-logger
handler + fd 1/2 pipes) and runs the job through ``executor.runner._run_one``, so start,
outcome, tracebacks, leftover children and the end-of-job barrier behave exactly as in the
local pool. Only ``send`` differs: every message is one ``XADD`` to the job's stream, called
from the batcher's flusher thread (one per batch, never per record).
"""

from __future__ import annotations

import json
import os
import signal
import socket
from typing import Any

import redis

from jobtrail.backends.redis import keys as b
from jobtrail.processes import WORKER_MARK_ENV
from jobtrail.worker import capture
from jobtrail.worker import runtime as runner
from jobtrail.worker.redact import Redactor

HOST = socket.gethostname()
# Set by the `jobtrail worker` process before it starts working; the horse inherits it.
WORKER: dict[str, str] = {"url": "", "mark": "", "name": ""}


def encode(message: tuple[Any, ...]) -> dict[str, bytes | str | int | float]:
    """A capture message as stream fields; ``decode`` in ``ingest`` is its inverse."""
    kind = message[0]
    if kind == "batch":
        _, _, first_seq, count, mask, payload = message
        return {"k": "b", "f": first_seq, "c": count, "m": mask, "p": payload}
    if kind == "progress":
        return {"k": "p", "pct": float(message[2]), "s": json.dumps(message[3])}
    if kind == "start":
        return {"k": "s", "pid": int(message[2]), "host": HOST, "w": WORKER["name"]}
    if kind == "end":
        return {"k": "e", "o": json.dumps(message[2], default=repr)}
    raise ValueError(f"unknown capture message {kind!r}")


class StreamSender:
    """The batcher's ``send``: XADD to ``jobtrail:log:<job_id>``, retried while Redis restarts.

    It runs in the flusher thread (and for start/end in the job's main thread), so a slow or
    restarting Redis makes records wait in the batcher, whose back-pressure then applies.
    """

    def __init__(self, conn: redis.Redis, job_id: str) -> None:
        self._conn = conn
        self._key = b.log_key(job_id)
        self.sent = 0

    def __call__(self, message: tuple[Any, ...]) -> None:
        fields = encode(message)
        b.retrying(
            lambda: self._conn.xadd(
                self._key,
                fields,  # type: ignore[arg-type]
                maxlen=b.STREAM_MAXLEN,
                approximate=True,
            ),
            b.SEND_RETRY_SECONDS,
            "log stream",
        )
        self.sent += 1


def run_job(job_id: str, job_type: str, params: dict[str, Any], options: dict[str, Any]) -> str:
    """The RQ job function: returns the jobtrail status (the outcome travels on the stream)."""
    runner._die_with_parent()  # the RQ worker died (host lost): stop, do not run for nobody
    os.environ[WORKER_MARK_ENV] = f"{WORKER['mark']}/{job_id}"
    os.environ.pop(runner.TOKEN_ENV, None)
    nice = int(options.get("nice", 0))
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    conn = b.connect(WORKER["url"])
    send = StreamSender(conn, job_id)
    if conn.exists(b.cancel_key(job_id)):  # cancelled between dequeue and here
        send(("end", job_id, {"status": "cancelled", "error": "cancelled before it started"}))
        return "cancelled"
    redactor = Redactor(
        tuple(options.get("redact_patterns", ())), defaults=bool(options.get("redact", True))
    )
    batcher = capture.RecordBatcher(send, redact=redactor)
    runner._batcher = batcher  # progress() works in the horse as in a local worker
    capture.install(batcher, int(options.get("level", 10)), clear_inherited=True)
    streams = capture.StreamCapture(batcher)
    streams.start()
    signal.signal(signal.SIGTERM, runner._on_sigterm)  # cancel: JobCancelled in the job
    signal.signal(runner.STOP_SIGNAL, runner._on_sigterm)  # `jobtrail worker` is stopping
    stopped_by = f"jobtrail worker on {HOST}"
    cancelled = runner._run_one(batcher, streams, job_id, job_type, params, stopped_by)
    batcher.close()
    return "cancelled" if cancelled else "ended"
