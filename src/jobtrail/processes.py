"""Finding and stopping a job's processes, and naming how one ended: the one place for both
backends (the local pool and ``jobtrail worker``'s RQ workers).

Every process that runs jobs sets ``WORKER_MARK_ENV`` in its environment and its
descendants inherit it, so a job's whole tree can be found even after a process was
reparented (its worker died, or it daemonised), and a restarted server can find what a
killed one left behind.

A cancel stops a tree in two steps (``TreeStop``): SIGTERM first, children before their
parent, so the job's ``finally`` blocks run; SIGKILL after ``CANCEL_GRACE`` if it is still
there, again every grace until its owner sees it gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import psutil

WORKER_MARK_ENV = "JOBTRAIL_WORKER"
CANCEL_GRACE = 3.0  # SIGTERM first (the job's finally blocks run), SIGKILL after this


def worker_mark(home_mark: str, worker_id: int | None = None) -> str:
    """Environment mark of one worker (and its descendants), or of all workers of a home."""
    return f"{home_mark}/w" if worker_id is None else f"{home_mark}/w/{worker_id}"


def mark_this_process(mark: str) -> None:
    """Carry ``mark`` in this process's environment, and so in every descendant's."""
    os.environ[WORKER_MARK_ENV] = mark


def die_with_parent() -> None:
    """Linux: the kernel kills this process if its parent dies, instead of leaving it to
    run a job for nobody."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


AUTOGROUP = "/proc/self/autogroup"


def below_the_server(nice: int) -> None:
    """Run this job process at ``nice``, and make that count against the server too.

    Where the kernel shares the CPU between sessions first (``autogroup``, on by default in
    Debian's and Ubuntu's kernels), a process's nice only weighs it against its own session:
    a job in the server's session takes from the server's share, nice or not (4 flooding
    jobs held the API's p99 at 50-60 ms, ``benchmarks/api_latency.py``). So a process that
    is to run below the server leaves the session for one of its own (a session leader:
    Ctrl-C on the server's terminal never reached jobs anyway) and gives that session's
    group the same nice. Nothing more is changed if the process cannot start
    a session (it leads a group).
    """
    if nice <= 0:
        return
    try:
        os.nice(nice)
    except OSError:
        pass
    try:
        os.setsid()
    except OSError:  # a process group leader already (pid 1 of a namespace, bwrap's child)
        return
    try:
        with open(AUTOGROUP, "w") as group:
            group.write(str(nice))
    except OSError:  # no autogroup in this kernel, or it is off: nice alone is enough
        pass


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


def tree_of(pid: int) -> list[psutil.Process]:
    """``pid``'s descendants, then ``pid`` itself (empty if it is gone): children first, so
    none is reparented, and missed, before it is signalled."""
    try:
        root = psutil.Process(pid)
        return [*root.children(recursive=True), root]
    except psutil.Error:
        return []


PROC = "/proc"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ProcessTable:
    """Every process's parent and start from one pass over /proc: the pool
    samples all its running jobs' trees from one table a poll, where psutil's ``children``
    reads every process's stat file once per tree (6-9 ms of GIL-holding CPU a poll for 4
    jobs here). A pid is only this table's child of its parent if it started no earlier, as
    psutil checks, so a reused pid is not taken for a descendant."""

    def __init__(self, stats: dict[int, tuple[int, int]]) -> None:
        self._stats = stats  # pid: (ppid, start in clock ticks since boot)
        self._children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            self._children.setdefault(ppid, []).append(pid)

    @classmethod
    def read(cls) -> ProcessTable:
        stats: dict[int, tuple[int, int]] = {}
        for name in os.listdir(PROC):
            if not name.isdigit():
                continue
            data = _read(f"{PROC}/{name}/stat")
            if data is None:
                continue  # it ended while we looked
            # after the command's closing parenthesis (the command may hold one): field 3
            fields = data[data.rfind(b")") + 2 :].split()
            try:
                stats[int(name)] = (int(fields[1]), int(fields[19]))
            except (IndexError, ValueError):
                continue
        return cls(stats)

    def tree(self, pid: int) -> list[int]:
        """``pid``'s descendants, then ``pid`` (empty if it is gone), as ``tree_of``."""
        if pid not in self._stats:
            return []
        found: dict[int, None] = {pid: None}  # in order; a set against a reused pid's loop
        parents = [pid]
        while parents:
            parent = parents.pop()
            started = self._stats[parent][1]
            for child in self._children.get(parent, ()):
                if child not in found and self._stats[child][1] >= started:
                    found[child] = None
                    parents.append(child)
        del found[pid]
        return [*found, pid]

    @staticmethod
    def rss(pid: int) -> int:
        """Bytes resident in ``pid`` now (0 if it is gone): statm's count, as psutil's; stat's
        ``rss`` is a per-CPU estimate on this kernel (6.18: 28 pages off for a ``sleep``)."""
        data = _read(f"{PROC}/{pid}/statm")
        try:
            return int(data.split()[1]) * PAGE_SIZE if data is not None else 0
        except (IndexError, ValueError):
            return 0


def _read(path: str) -> bytes | None:
    """A small /proc file's bytes, None if it is gone: os.open and os.read cost two thirds
    of open() and a file object (8 against 13 us a file here)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def signal_tree(pid: int, sig: int, mark: str | None = None, root_sig: int | None = None) -> None:
    """Send ``sig`` to ``pid``'s tree, children first; with ``mark``, first to the processes
    that carry it and are no longer in the tree (reparented: their parent died or they
    daemonised). ``root_sig``, if given, goes to ``pid`` itself instead of ``sig``."""
    procs = tree_of(pid)
    if mark is not None:
        seen = {p.pid for p in procs}
        procs = [*(p for p in processes_marked(mark) if p.pid not in seen), *procs]
    for proc in procs:
        try:
            proc.send_signal(sig if root_sig is None or proc.pid != pid else root_sig)
        except psutil.Error:
            pass


class TreeStop:
    """A cancel in progress: SIGTERM now (``terminate``), SIGKILL each grace after
    (``escalate``, called from the owner's loop until the process is gone). ``root_signal``
    replaces SIGTERM for the job's own process (a limit's stop says why with its own)."""

    def __init__(
        self,
        pid: int,
        mark: str | None = None,
        grace: float = CANCEL_GRACE,
        root_signal: int = signal.SIGTERM,
    ) -> None:
        self.pid = pid
        self.mark = mark
        self.grace = grace
        self.root_signal = root_signal
        self.deadline = time.monotonic() + grace

    def terminate(self) -> None:
        signal_tree(self.pid, signal.SIGTERM, self.mark, root_sig=self.root_signal)

    def escalate(self, now: float) -> None:
        if now >= self.deadline:
            signal_tree(self.pid, signal.SIGKILL, self.mark)
            self.deadline = now + self.grace


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
