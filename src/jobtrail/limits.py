"""A job's memory limit and timeout, and ``TreeWatch``: the one thing that watches a running
job's process tree, in the local pool's monitor and in ``jobtrail worker``'s watcher thread.

::

    POST /api/jobs {memory_mb, timeout_s} ─┐
    @job(..., memory_mb=, timeout_s=)     ─┼─ resolve(): the first that is set ─► Limits
    serve --job-memory-mb / --job-timeout ─┘     (stored in the job's extra; Task / RQ args)

    TreeWatch, every SAMPLE_EVERY: the sum of the tree's RSS (peak kept), the deadline
      over ─► tell(error) (the job's process reads it: its log says why) ─► LIMIT_SIGNAL to
              the job's process, SIGTERM to its children ─► SIGKILL after the grace

Why sampling RSS: cgroup v2 is not there on every host (this one has v1, unprivileged
users have none), and ``RLIMIT_AS`` is per process and counts virtual memory, which Python,
its thread stacks and mmap'd libraries reserve far beyond what they use: a 300 MB limit
would fail jobs that use 80. The sum of the tree's RSS is what a person means by "the job
used 312 MB"; its precision is the sampling window (a job can allocate past the limit for
up to SAMPLE_EVERY before it is seen), pages shared by forked processes count once per
process, and a descendant that left the tree (it daemonised) is not counted.

A job whose process the kernel's OOM killer ended (a SIGKILL nobody here sent) says so when
a kill was counted since it started, host-wide (``/proc/vmstat``) or in the memory cgroup
its process was last seen in (``oom_kill`` of v1's ``memory.oom_control``, v2's
``memory.events``). Then the kernel's log (``/dev/kmsg``, readable by root) names the pid it
killed and why: this pid, and its cgroup at its limit or the machine out of memory; a
readable log without such a record means the kill was another process's (a record of a
pid never sampled counts when its cgroup is below the one the job started in: a cgroup the
job made, or another job of the same server did at the same moment). Where the log
cannot be read (not root) the counters say it: a cgroup's counts only that cgroup's
kills, /proc/vmstat the machine's, where another process's OOM kill at the same moment
would be taken for this one's.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from jobtrail.messages import Outcome
from jobtrail.models import JobStatus
from jobtrail.processes import CANCEL_GRACE, ProcessTable, TreeStop, death_reason

SAMPLE_EVERY = 0.2  # seconds between two looks at a tree: the memory limit's precision
# Sent to the job's own process when it is over a limit: its handler reads why (``tell``)
# and the job fails saying so; SIGTERM stays the cancel, SIGUSR1 the shutdown.
LIMIT_SIGNAL = signal.SIGUSR2
MB = 1024 * 1024
VMSTAT = "/proc/vmstat"
CGROUP_FS = "/sys/fs/cgroup"
KMSG = "/dev/kmsg"
KMSG_SLACK = 5.0  # seconds: the kernel log's clock and CLOCK_MONOTONIC may differ a little
OOM_KILLED = "killed by the kernel's out-of-memory killer"


@dataclass(frozen=True)
class Limits:
    """What a job may use; None: no limit."""

    memory_mb: int | None = None
    timeout_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"memory_mb": self.memory_mb, "timeout_s": self.timeout_s}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Limits:
        """From a job's extra or an RQ job's options (absent keys: no limit)."""
        memory, timeout = data.get("memory_mb"), data.get("timeout_s")
        return cls(
            None if memory is None else int(memory), None if timeout is None else float(timeout)
        )

    def or_else(self, default: Limits) -> Limits:
        """Each limit this one leaves unset taken from ``default``."""
        return Limits(
            default.memory_mb if self.memory_mb is None else self.memory_mb,
            default.timeout_s if self.timeout_s is None else self.timeout_s,
        )


def server_limits(memory_mb: int, timeout_s: float) -> Limits:
    """A server's (or worker's) defaults from its flags, where 0 means none."""
    return Limits(memory_mb or None, timeout_s or None)


def resolve(submitted: Limits, job_type: Limits, server: Limits) -> Limits:
    """Per limit: the submission's, else the job type's, else the server's."""
    return submitted.or_else(job_type).or_else(server)


def over_memory(used_mb: float, limit_mb: int) -> str:
    """Used rounded up: a job killed at 100.3 MB of a 100 MB limit must not read "used 100"."""
    return f"out of memory: the job used {math.ceil(used_mb)} MB, over its {limit_mb} MB limit"


def timed_out(timeout_s: float) -> str:
    return f"timed out after {timeout_s:g} s"


def oom_kills() -> int | None:
    """The kernel's count of out-of-memory kills since boot (``oom_kill`` in /proc/vmstat,
    Linux 4.13+; memory-cgroup kills count too); None where it cannot be read."""
    return _oom_kill_line(VMSTAT)


def _oom_kill_line(path: str) -> int | None:
    """The number on the ``oom_kill`` line of a kernel counter file, None without one."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def memory_cgroup(pid: int) -> str | None:
    """The memory cgroup ``pid`` is in (its path below the hierarchy's root), when that is
    not the root; None for the root or where it cannot be read."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    unified = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path if path != "/" else None  # v1: the memory hierarchy's
        if controllers == "":
            unified = path
    mounted_v1 = os.path.isdir(os.path.join(CGROUP_FS, "memory"))
    return unified if unified not in (None, "/") and not mounted_v1 else None


def cgroup_oom_kills(path: str) -> int | None:
    """``oom_kill`` of memory cgroup ``path``: v1 counts that cgroup's kills only (measured
    here: a child cgroup's kill leaves its parent's count alone), v2 those below it too."""
    for name in (f"memory{path}/memory.oom_control", f"{path.lstrip('/')}/memory.events"):
        kills = _oom_kill_line(os.path.join(CGROUP_FS, name))
        if kills is not None:
            return kills
    return None


def kernel_oom_kill(pids: Collection[int], since: float, below: str | None = None) -> str | None:
    """Why the kernel's log says its OOM killer killed one of ``pids`` after ``since``
    (monotonic seconds, about the log's clock) or, failing that, a process in a cgroup
    strictly ``below`` the job's (one it made: a child it had no sample of yet): "pid N:
    its memory cgroup X was at its limit" or "pid N: the machine was out of memory"; ""
    when the log has no such record; None when it cannot be read."""
    try:
        fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    found: dict[bytes, bytes] | None = None
    inside: dict[bytes, bytes] | None = None
    want = {str(pid).encode() for pid in pids}
    prefix = below.rstrip("/").encode() + b"/" if below else None
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break  # the end of the log
            except OSError:
                continue  # overwritten while read (EPIPE): go on with the next
            head, _, text = record.partition(b";")
            if not record or not text.startswith(b"oom-kill:"):
                if not record:
                    break
                continue
            fields = dict(f.split(b"=", 1) for f in text[9:].strip().split(b",") if b"=" in f)
            meta = head.split(b",")
            if len(meta) < 3 or int(meta[2]) / 1e6 < since:
                continue
            if fields.get(b"pid") in want:
                found = fields
            elif prefix is not None and fields.get(b"task_memcg", b"").startswith(prefix):
                inside = fields
    finally:
        os.close(fd)
    found = found or inside
    if found is None:
        return ""
    pid = found[b"pid"].decode()
    if found.get(b"constraint") == b"CONSTRAINT_MEMCG":
        memcg = found.get(b"oom_memcg", b"?").decode(errors="replace")
        return f"pid {pid}: its memory cgroup {memcg} was at its limit"
    return f"pid {pid}: the machine was out of memory"


def tree_rss(pid: int, seen: set[int] | None = None, table: ProcessTable | None = None) -> int:
    """Bytes resident in ``pid`` and its descendants now (0 if it is gone); their pids are
    added to ``seen``. ``table``: a /proc read shared with other trees (else one now)."""
    table = table if table is not None else ProcessTable.read()
    tree = table.tree(pid)
    if seen is not None:
        seen.update(tree)
    return sum(table.rss(member) for member in tree)


class TreeWatch:
    """One running job's tree: its peak memory, its limits enforced.

    The owner calls ``sample`` (reads /proc: keep it outside locks) and ``check`` every
    SAMPLE_EVERY, and asks ``ended`` or ``died`` for the job's outcome. ``tell`` delivers the
    error to the job's process before it is signalled (the pool's control pipe, a Redis key
    for a horse), so the job's own log says why it stopped.
    """

    def __init__(
        self,
        job_id: str,
        pid: int,
        limits: Limits,
        *,
        mark: str | None = None,
        grace: float = CANCEL_GRACE,
    ) -> None:
        self.job_id = job_id
        self.pid = pid
        self.limits = limits
        self.error: str | None = None  # set once a limit stopped the job
        self.peak_bytes = 0
        self._last_bytes = 0
        self._mark = mark
        self._grace = grace
        self._stop: TreeStop | None = None
        self._started = time.monotonic()  # the timeout counts from here
        self._oom_kills = oom_kills()
        self._cgroup: tuple[str, int] | None = None  # the job's memory cgroup, its kills
        self._pids = {pid}  # every pid seen in the tree: the one the OOM killer chose
        self._home_cgroup = memory_cgroup(pid)  # where it started
        self._follow_cgroup()

    @property
    def peak_rss_mb(self) -> float | None:
        return round(self.peak_bytes / MB, 1) if self.peak_bytes else None

    def sample(self, table: ProcessTable | None = None) -> None:
        """Measure the tree now, from ``table`` if given (the pool's one /proc read a poll
        for all its jobs), else from a read of its own."""
        self._last_bytes = tree_rss(self.pid, self._pids, table)
        self.peak_bytes = max(self.peak_bytes, self._last_bytes)
        self._follow_cgroup()

    def _follow_cgroup(self) -> None:
        """The job's process may move itself into a cgroup of its own: count kills there."""
        path = memory_cgroup(self.pid)
        if path is not None and (self._cgroup is None or self._cgroup[0] != path):
            kills = cgroup_oom_kills(path)
            if kills is not None:
                self._cgroup = (path, kills)

    def _oom_killed(self) -> str | None:
        """What says the kernel's OOM killer killed the job's process (see the module's
        notes), None if nothing does."""
        in_cgroup = host = False
        if self._cgroup is not None:
            path, before = self._cgroup
            now = cgroup_oom_kills(path)
            in_cgroup = now is not None and now > before
        if self._oom_kills is not None:
            now = oom_kills()
            host = now is not None and now > self._oom_kills
        if not (in_cgroup or host):
            return None
        logged = kernel_oom_kill(self._pids, self._started - KMSG_SLACK, self._home_cgroup)
        if logged is not None:  # the log is readable: it decides (the kill was another's)
            return logged or None
        return f"memory cgroup {self._cgroup[0]}" if in_cgroup and self._cgroup else "oom_kill rose"

    def saw(self, resident_bytes: int) -> None:
        """A peak measured another way (the kernel's high-water mark of a reaped process)."""
        self.peak_bytes = max(self.peak_bytes, resident_bytes)

    def check(self, now: float, tell: Callable[[str], None]) -> None:
        """Stop the tree if the last sample or the clock is over a limit; escalate a stop
        begun earlier to SIGKILL once its grace passed."""
        if self._stop is not None:
            self._stop.escalate(now)
            return
        memory, timeout = self.limits.memory_mb, self.limits.timeout_s
        if memory is not None and self._last_bytes > memory * MB:
            self.error = over_memory(self._last_bytes / MB, memory)
        elif timeout is not None and now - self._started >= timeout:
            self.error = timed_out(timeout)
        else:
            return
        try:
            tell(self.error)
        except (OSError, ValueError):
            pass  # the job's log cannot say why; its error still does
        self._stop = TreeStop(self.pid, self._mark, self._grace, root_signal=LIMIT_SIGNAL)
        self._stop.terminate()

    def ended(self, outcome: Outcome) -> Outcome:
        """The outcome the job's process reported, with its peak; a limit's error if one
        stopped it (a cancel asked for first stays a cancel)."""
        if not self.peak_bytes:  # it ended before the first sample: its process now
            self.sample()
        if self.error is not None and outcome.status is not JobStatus.CANCELLED:
            outcome = replace(outcome, status=JobStatus.FAILED, error=self.error)
        return replace(outcome, peak_rss_mb=self.peak_rss_mb)

    def died(self, exitcode: int | None) -> Outcome:
        """The outcome of a job whose process died without reporting one: the limit that
        stopped it, or the kernel's OOM killer when a kill was counted (in the job's memory
        cgroup, else host-wide) while a SIGKILL nobody here sent ended the job, or how the
        process ended."""
        if self.error is not None:
            return Outcome(JobStatus.FAILED, self.error, peak_rss_mb=self.peak_rss_mb)
        cause = death_reason(exitcode)
        if exitcode == -signal.SIGKILL and (where := self._oom_killed()) is not None:
            cause = f"{OOM_KILLED} (SIGKILL; {where})"
        return replace(Outcome.died(cause), peak_rss_mb=self.peak_rss_mb)
