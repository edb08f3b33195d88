"""The idle CPU cgroup job processes run in, so that a request never waits for a job.

Why a cgroup and not a nice: a process that wakes (the API's event loop, on a request)
waits while CPU-bound processes finish their slice, however nice they are: the kernel
preempts on a tick (HZ 250 here, 4 ms) unless the waker is of a higher class. Four flooding
jobs at nice 10 in sessions of their own held the API's p99 at 8-11 ms against 3 ms idle
(``benchmarks/api_latency.py --mode clients``). A group marked ``cpu.idle`` (Linux 5.15+) is
preempted at once by any task that is not idle, as ``SCHED_IDLE`` is: the p99 fell to
5.6-7.1 ms.

What it costs the jobs: they still get every CPU nothing else wants, but against other busy
work of the host they get almost nothing (a weight of 3 against 1024; nice 10 is 110). So it
is asked for (``serve --worker-cpu idle``), not the default: under the parallel test suite's
load the demo's playbook job, idle, did not finish in 90 s.

One group, ``jobtrail-jobs``, below the cgroup of the process that makes it (the server, or
a ``jobtrail worker``), so jobs are idle against that process's siblings: under a systemd
slice, against the service's own processes. Every server there shares it, and it is never
removed: an empty cgroup costs nothing, and a removal would race another server's join.
The cgroup v1 ``cpu`` hierarchy is what every machine of this project has; where there is
none (cgroup v2 alone, or not root), jobs run at their nice, and the server says so.
"""

from __future__ import annotations

import logging
import os
import shlex

NAME = "jobtrail-jobs"
SELF_CGROUP = "/proc/self/cgroup"
MOUNTINFO = "/proc/self/mountinfo"


def _cpu_hierarchy(cgroup_file: str) -> str | None:
    """This process's path in the v1 hierarchy that has the ``cpu`` controller."""
    with open(cgroup_file, encoding="utf-8") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "cpu" in controllers.split(","):
                return path
    return None


def _cpu_mount(mountinfo: str) -> tuple[str, str] | None:
    """(mount point, the hierarchy's path mounted there) of the v1 ``cpu`` hierarchy."""
    with open(mountinfo, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3]
            if fstype == "cgroup" and "cpu" in options.split(","):
                return fields[4], fields[3]
    return None


def prepare(cgroup_file: str = SELF_CGROUP, mountinfo: str = MOUNTINFO) -> tuple[str | None, str]:
    """The idle group's folder, made if missing, and ""; or None and why it cannot be had."""
    try:
        path = _cpu_hierarchy(cgroup_file)
        mount = _cpu_mount(mountinfo)
    except (OSError, ValueError, IndexError) as exc:
        return None, f"cannot read this process's cgroups: {exc}"
    if path is None or mount is None:
        return None, "no cgroup v1 cpu controller is mounted"
    point, root = mount
    if not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None, f"this process's cpu cgroup {path} is outside the mount at {point}"
    own = os.path.join(point, path[len(root) :].lstrip("/"))
    group = own if os.path.basename(own) == NAME else os.path.join(own, NAME)  # a job's
    try:
        os.makedirs(group, exist_ok=True)
        with open(os.path.join(group, "cpu.idle"), "w", encoding="ascii") as f:
            f.write("1")
    except OSError as exc:
        return None, f"cannot make the idle cpu cgroup {group}: {exc.strerror or exc}"
    return group, ""


def member(group: str, cgroup_file: str = SELF_CGROUP) -> bool:
    """Whether this process is in ``group`` (its cpu hierarchy's path ends as the folder's)."""
    try:
        path = _cpu_hierarchy(cgroup_file)
    except (OSError, ValueError):
        return False
    return path is not None and os.path.basename(path) == NAME and group.endswith(path)


def join(group: str) -> bool:
    """Move this process (all its threads; its later children follow) into ``group``.
    False if it cannot (a read-only /sys under bubblewrap, another user): the caller's
    nice is then all that puts it below the server."""
    if member(group):
        return True
    try:
        with open(os.path.join(group, "cgroup.procs"), "w", encoding="ascii") as f:
            f.write(str(os.getpid()))
    except OSError:
        return False
    return True


def launcher_line(group: str) -> str:
    """The shell line a worker launcher runs before it execs bubblewrap, which mounts /sys
    read-only: the launcher joins as root, and all it starts follows."""
    return f"echo $$ > {shlex.quote(os.path.join(group, 'cgroup.procs'))} 2>/dev/null || true"


def wanted(policy: str, nice: int) -> bool:
    """Whether jobs join the idle group: ``--worker-cpu idle``, and below the server at all."""
    return policy == "idle" and nice > 0


def for_jobs(policy: str, nice: int, log: logging.Logger) -> str | None:
    """The group this server's (or worker's) jobs join, or None: none asked for (nice 0, or
    ``--worker-cpu nice``), or none to be had, which ``log`` is told once, at start."""
    if not wanted(policy, nice):
        return None
    group, why = prepare()
    if group is None:
        log.warning(
            "jobs run below the server at their nice only, not in an idle cpu cgroup: %s", why
        )
    else:
        log.debug("jobs run below the server in the idle cpu cgroup %s", group)
    return group
