"""A helper process of the server's: a fresh interpreter that reads the store's files on its
own and is told, a line at a time on its stdin, which jobs to look at.

::

    server (HelperProcess) ── stdin: command lines · EOF: stop ──> read_commands (the helper)
    server <── stdout: one report line at a time (report_stream) ── the helper's work
    server <── stderr: the helper's log lines, logged again under the server's logger

Why processes at all: Python work a record (the OTLP conversion, the summary's fold) done in
the server holds the GIL its listener and its requests need (``otel``, ``summaries``). Each
helper starts from a fresh interpreter (``sys.executable -m``), so it holds none of the
server's secrets (``secrecy``), and dies with the server: its stdin closes, and it also
watches its parent's pid, since a process the server forked may hold the pipe open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO


class HelperProcess:
    """A running helper, the thread reading its reports and the one relaying its log."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        on_report: Callable[[bytes], None],
        log: logging.Logger,
        what: str,
    ) -> None:
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self._stdin = self.proc.stdin
        self._log, self._what = log, what
        self._threads = [
            threading.Thread(target=_read_reports, args=(self.proc.stdout, on_report)),
            threading.Thread(target=self._relay_log, args=(self.proc.stderr,)),
        ]
        for thread in self._threads:
            thread.name, thread.daemon = f"{what}-{self.proc.pid}", True
            thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, lines: Sequence[str]) -> bool:
        """Write command lines; False when the process is gone."""
        try:
            self._stdin.write("".join(lines).encode())
            self._stdin.flush()
        except OSError:  # BrokenPipeError: it died (seen by ``alive``)
            return False
        return True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float) -> None:
        """Close its stdin (its stop), give it ``timeout`` to finish its work and exit."""
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._log.warning("%s process %d did not stop in time: killed", self._what, self.pid)
            self.proc.kill()
            self.proc.wait()
        self.join()

    def join(self) -> None:
        """Once it exited: its last reports read, its pipes closed."""
        for thread in self._threads:
            thread.join(5)
        with contextlib.suppress(OSError):
            self._stdin.close()

    def _relay_log(self, stream: IO[bytes]) -> None:
        """The helper's log lines ("LEVEL name: text"), logged here in the server's format."""
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip()
                name, _, rest = line.partition(" ")
                level = logging.getLevelName(name)
                if isinstance(level, int) and rest:
                    self._log.log(level, "%s process: %s", self._what, rest)
                elif line:
                    self._log.warning("%s process: %s", self._what, line)


class Backoff:
    """When to start a helper again after it died: ``first`` seconds, doubling up to ``most``
    for one that keeps dying at once (one that lived longer than ``most`` starts over)."""

    def __init__(self, first: float = 1.0, most: float = 30.0) -> None:
        self.first, self.most = first, most
        self._delay = first
        self._at = 0.0

    def died(self, process: HelperProcess, log: logging.Logger, what: str) -> None:
        """Count ``process`` out (its reports read) and say when the next one may start."""
        process.join()
        lived = time.monotonic() - process.started_at
        delay = self.first if lived > self.most else self._delay
        self._delay = min(delay * 2, self.most)
        self._at = time.monotonic() + delay
        log.warning(
            "%s process %d exited (code %s); starting another in %.0f s",
            what,
            process.pid,
            process.proc.returncode,
            delay,
        )

    def due(self) -> bool:
        return time.monotonic() >= self._at


def _read_reports(stream: IO[bytes], on_report: Callable[[bytes], None]) -> None:
    with stream:
        for line in stream:
            on_report(line)


# -- the helper's side ---------------------------------------------------------------------
def report_stream() -> IO[str]:
    """The reports' own fd (stdout as the server gave it); stdout itself becomes stderr, so
    nothing a library prints can corrupt them. Also sets up logging as ``_relay_log`` reads it."""
    reports = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    return reports


def read_commands(handle: Callable[[str], None]) -> None:
    """Each line on stdin to ``handle``, until the server closes the pipe (its stop) or is
    gone (its pipe may live on in a process it forked: its death is also seen by the parent's
    pid changing)."""
    parent = os.getppid()
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], 1.0)
        if not ready:
            if os.getppid() != parent:
                return
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            handle(line.decode())
