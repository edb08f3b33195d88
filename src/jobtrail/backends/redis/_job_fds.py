"""What the RQ worker opens for each job before RQ forks its horse, and keeps after.

The job's process inherits them through the horse (``horse.JOB_FDS``, ``horse.JOB_PIPES``)
and never opens anything by path; this worker keeps its own ends, which outlive the job's
process and the horse:

* the spool (``worker/spool.py``), created in this worker's private folder and unlinked at
  once: after a death its unsent lines are read through the fd;
* fd 1's and fd 2's pipes (``streams.create_pipes``): the job's readers read them; after a
  death what they never turned into lines is still there (``streams.stream_tail``);
* the notes pipe: a limit's reason, written before LIMIT_SIGNAL, read by the job's process.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import redis

from jobtrail.backends.redis import horse
from jobtrail.secrets import secret_values
from jobtrail.worker import spool, streams
from jobtrail.worker.redact import Redactor


class JobFds:
    """One job's spool and pipes, this worker's side; ``close`` after the horse is reaped."""

    def __init__(self, folder: str, params: dict[str, Any], options: dict[str, Any]) -> None:
        path = os.path.join(folder, "job.spool")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.spool = spool.create_fd(path)
        os.unlink(path)  # reached through the fd only
        notes_r, self._notes = os.pipe()
        pipes, self._read_ends, write_ends = streams.create_pipes()
        self._theirs = [notes_r, *write_ends]  # closed here once the horse has them
        horse.JOB_FDS.update(spool=self.spool, notes=notes_r, notes_w=self._notes)
        horse.JOB_PIPES["pipes"] = pipes
        # the job's secrets masked in what is recovered, as its batcher masks them
        self._redact = Redactor(
            tuple(options.get("redact_patterns", ())), defaults=bool(options.get("redact", True))
        )
        self._redact.set_secrets(secret_values(params))

    def forked(self) -> None:
        """The horse has its copies: the write ends are the job's (this worker never writes
        there), the notes' read end too."""
        _close_all(self._theirs)
        self._theirs = []

    def tell(self, error: str) -> None:
        """A limit's reason, before the signal (a small write: the pipe's one note)."""
        os.write(self._notes, error.encode() + b"\n")

    def send_last_words(self, conn: redis.Redis, job_id: str) -> int:
        return horse.send_last_words(conn, job_id, self.spool, self._read_ends, self._redact)

    def close(self) -> None:
        _close_all([self.spool, self._notes, *self._read_ends, *self._theirs])
        horse.JOB_FDS.update(spool=-1, notes=-1, notes_w=-1)
        horse.JOB_PIPES["pipes"] = None


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
