"""What the pool keeps of each worker so that a hard death loses none of the job's words.

The pool creates a worker's spool (``worker/spool.py``, in ``HOME/spool``) and its fd 1 and
fd 2 pipes (``worker/streams.py``) before the worker starts and hands them over open; it
keeps an fd on the spool and the pipes' read ends. If the worker dies during a job, once
its log pipe is drained and its orphans killed, ``recover`` writes after what the pipe
delivered: the lines the spool still held, then the tail of fd 1 and 2 (what the readers
had taken but not turned into lines, and what was still in the pipes).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jobtrail.secrets import secret_values
from jobtrail.worker import spool
from jobtrail.worker.redact import Redactor
from jobtrail.worker.runtime import WorkerSettings
from jobtrail.worker.streams import Record, StreamPipes, create_pipes, stream_tail

log = logging.getLogger("jobtrail.pool")


class Recovering(Protocol):
    def recover(self, job_id: str, lines: list[tuple[int, bytes]], tail: list[Record]) -> int: ...


class WorkerSpools:
    """The workers' spools: files in a private folder of the home (0700; files 0600)."""

    def __init__(self, folder: Path | None) -> None:
        if folder is not None:
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
            for leftover in folder.glob("worker-*.spool"):  # a previous server's
                remove_spool(str(leftover))
        self._folder = folder

    def create(self, worker_id: int) -> WorkerSpool:
        """Worker ``worker_id``'s spool (none without a folder) and pipes."""
        path = fd = None
        if self._folder is not None:
            path = self._folder / f"worker-{worker_id}.spool"
            remove_spool(str(path))
            fd = spool.create_fd(path)
        pipes, reads, writes = create_pipes()
        return WorkerSpool(str(path) if path else None, fd, reads, pipes, list(writes))


@dataclass
class WorkerSpool:
    """One worker's spool and pipes as the pool holds them (``handover`` what the worker
    gets: duplicates under spawn and forkserver, the same fds under fork)."""

    path: str | None = None
    fd: int | None = None  # open on the spool
    read_ends: tuple[int, ...] = ()  # fd 1's and 2's pipes
    pipes: StreamPipes | None = None
    write_ends: list[int] = field(default_factory=list)  # closed once the worker started

    def handover(self) -> tuple[spool.HandedFd | None, StreamPipes | None]:
        return (spool.HandedFd(self.fd) if self.fd is not None else None), self.pipes

    def started(self) -> None:
        """The worker has its copies: the pipes' write ends are its (and its children's)."""
        _close_all(self.write_ends)
        self.write_ends = []

    def recover(
        self, sink: Recovering, job_id: str, settings: WorkerSettings, params: dict[str, Any]
    ) -> None:
        """Write the dead worker's last words that its log pipe never delivered."""
        try:
            lines = spool.read_unsent(self.fd, job_id) if self.fd is not None else []
            redact = Redactor(settings.redact_patterns, defaults=settings.redact_defaults)
            redact.set_secrets(secret_values(params))
            tail = stream_tail(self.fd, self.read_ends, redact)
            recovered = sink.recover(job_id, lines, tail)
        except Exception:  # the job's end must be recorded whatever the spool holds
            log.exception("reading the last words of job %s failed", job_id)
            return
        if recovered:
            log.info("job %s: %d line(s) recovered after its worker died", job_id, recovered)

    def close(self) -> None:
        _close_all([*self.write_ends, *self.read_ends, *([self.fd] if self.fd is not None else [])])
        self.fd, self.read_ends, self.write_ends = None, (), []
        remove_spool(self.path)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def remove_spool(path: str | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)
