"""What runs inside RQ's work-horse (a fresh fork per job): jobtrail's runtime, then the job.

The horse sets itself up with the same ``JobRuntime`` as a pool worker (capture, signals,
mark, nice) and runs the job through it, so start, outcome, leftover children and the
end-of-job barrier behave exactly as in the local pool. Only ``send`` differs: every
message is one ``XADD`` to the job's stream (``messages.to_fields``), called from the
batcher's flusher thread (one per batch, never per record). Each line is also spooled
(``worker/spool.py``) into a file the RQ worker created before forking the horse; if the
horse dies, the RQ worker sends what the stream does not have yet (``send_unsent``) before
the job's end.
"""

from __future__ import annotations

import socket
from typing import Any

import redis

from jobtrail.backends.redis import keys as b
from jobtrail.messages import (
    CANCELLED_BEFORE_START,
    Batch,
    End,
    JobMessage,
    Outcome,
    Task,
    from_fields,
    to_fields,
)
from jobtrail.worker.redact import Redactor
from jobtrail.worker.runtime import JobRuntime
from jobtrail.worker.spool import Spool, read_unsent, unsent_batches

HOST = socket.gethostname()
# Set by the `jobtrail worker` process before it starts working; the horse inherits it.
WORKER: dict[str, str] = {"url": "", "mark": "", "name": ""}
# Set by the RQ worker before it forks the horse of a job: the spool it created for it.
SPOOL: dict[str, str] = {"path": ""}


class StreamSender:
    """The batcher's ``send``: XADD to ``jobtrail:log:<job_id>``, retried while Redis restarts.

    It runs in the flusher thread (and for start/end in the job's main thread), so a slow or
    restarting Redis makes records wait in the batcher, whose back-pressure then applies.
    """

    def __init__(self, conn: redis.Redis, job_id: str) -> None:
        self._conn = conn
        self._key = b.log_key(job_id)
        self.sent = 0

    def __call__(self, message: JobMessage) -> None:
        fields = to_fields(message)
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
    conn = b.connect(WORKER["url"])
    send = StreamSender(conn, job_id)
    if conn.exists(b.cancel_key(job_id)):  # cancelled between dequeue and here
        send(End(job_id, Outcome.cancelled(CANCELLED_BEFORE_START)))
        return "cancelled"
    runtime = JobRuntime(
        send,
        mark=f"{WORKER['mark']}/{job_id}",
        nice=int(options.get("nice", 0)),
        level=int(options.get("level", 10)),
        redactor=Redactor(
            tuple(options.get("redact_patterns", ())), defaults=bool(options.get("redact", True))
        ),
        stopped_by=f"jobtrail worker on {HOST}",
        host=HOST,
        worker=WORKER["name"] or None,
        spool=Spool(SPOOL["path"]) if SPOOL["path"] else None,
        stop_note=lambda: _stop_note(conn, job_id),
    )
    stopped = runtime.run(Task(job_id, job_type, params))
    runtime.close()
    return "cancelled" if stopped else "ended"


def _stop_note(conn: redis.Redis, job_id: str) -> str | None:
    """Why the RQ worker is stopping this job (it wrote it before LIMIT_SIGNAL)."""
    try:
        note = conn.get(b.limit_key(job_id))
    except redis.RedisError:
        return None
    return note.decode() if isinstance(note, bytes) else None


def send_unsent(conn: redis.Redis, job_id: str, spool_path: str) -> int:
    """After the horse died: XADD the lines of its spool that the job's stream lacks, in
    order (by seq: the horse may have died after an XADD, before it released the lines)."""
    lines = read_unsent(spool_path, job_id)
    if not lines:
        return 0
    send = StreamSender(conn, job_id)
    sent = 0
    for first_seq, chunk in unsent_batches(lines, _stream_last_seq(conn, job_id)):
        # level mask 0: the store indexes the batch as holding every level
        send(Batch(job_id, first_seq, len(chunk), 0, b"".join(chunk)))
        sent += len(chunk)
    return sent


def _stream_last_seq(conn: redis.Redis, job_id: str) -> int:
    """The seq of the last line the job's stream holds (0 for none): its newest batch's."""
    key = b.log_key(job_id)
    newest = "+"

    def older() -> Any:
        return conn.xrevrange(key, max=newest, count=64)

    while True:
        entries = b.retrying(older, b.SEND_RETRY_SECONDS, "log stream")
        for entry_id, fields in entries:
            message = from_fields(job_id, fields)
            if isinstance(message, Batch):
                return message.first_seq + message.line_count - 1
            newest = "(" + entry_id.decode()
        if len(entries) < 64:
            return 0
