"""Finding and stopping a job's processes, and naming how one ended.

Every worker sets ``WORKER_MARK_ENV`` in its environment and its descendants inherit it, so
a job's whole tree can be found even after a process was reparented (its worker died, or
it daemonised), and a restarted server can find what a killed one left behind.
"""

from __future__ import annotations

import os
import signal

import psutil

WORKER_MARK_ENV = "JOBTRAIL_WORKER"


def worker_mark(home_mark: str, worker_id: int | None = None) -> str:
    """Environment mark of one worker (and its descendants), or of all workers of a home."""
    return f"{home_mark}/w" if worker_id is None else f"{home_mark}/w/{worker_id}"


def death_reason(exitcode: int | None) -> str:
    """How a process ended, in the words a person wants to read in `error`."""
    if exitcode is None:
        return "the worker process vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if name == "SIGKILL":
            return "killed by SIGKILL (the kernel's out-of-memory killer also sends SIGKILL)"
        return f"killed by {name}"
    return f"the worker process exited with code {exitcode}"


def processes_marked(mark: str, *, skip_own_children: bool = False) -> list[psutil.Process]:
    """Processes whose environment carries ``mark`` (a home's, or one worker's under it).

    Descendants inherit the mark, so they are found even after they were reparented.
    """
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if skip_own_children and proc.ppid() == me:
                continue
        except psutil.Error:
            continue
        try:
            value = proc.environ().get(WORKER_MARK_ENV, "")
            if value == mark or value.startswith(mark + "/"):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def kill_tree(procs: list[psutil.Process], grace: float = 0.0) -> None:
    """SIGTERM (if grace) then SIGKILL; children first so none is reparented and missed."""
    if grace > 0:
        for proc in procs:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, procs = psutil.wait_procs(procs, timeout=grace)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5.0)
