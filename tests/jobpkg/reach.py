"""The ``redis_reach`` job type: what of the RQ worker's Redis a job's process can still find
in its own memory (it is a fork of the work-horse, which is a fork of the RQ worker).

Run by ``jobtrail worker --jobs-module jobpkg.reach``; see tests/test_isolation_redis.py.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from types import CellType
from typing import Any

import redis.connection

from jobtrail import job


@job("redis_reach")
def redis_reach(needle_hex: str) -> dict[str, Any]:
    """Where the needle (the Redis password, hex so the params do not hold it) is reachable:
    gc-tracked containers, the dicts and lists they hold, every object's attributes,
    closure cells (but this function's own), every frame's locals up the stack,
    ``os.environ`` and ``sys.argv``; and how many Redis connections (and sockets at all)
    this process still holds."""
    needle = bytes.fromhex(needle_hex).decode()
    found: list[str] = []
    objects = gc.get_objects()
    held = [r for r in gc.get_referents(*objects) if type(r) in (dict, list)]
    held += [d for d in map(_attributes, objects) if d is not None]
    for obj in [*objects, *held]:
        if isinstance(obj, (dict, list)):
            items = obj.items() if isinstance(obj, dict) else enumerate(obj)
            found += [f"{type(obj).__name__}[{k!r}]" for k, v in list(items) if _holds(v, needle)]
    for cell in (o for o in objects if isinstance(o, CellType)):
        with contextlib.suppress(ValueError):  # an empty cell
            if cell.cell_contents is not needle and _holds(cell.cell_contents, needle):
                found.append("a closure's cell")
    frame = sys._getframe(1)
    while frame is not None:
        found += [f"local {name} of {frame.f_code.co_name}" for name, value in
                  frame.f_locals.items() if _holds(value, needle)]  # fmt: skip
        frame = frame.f_back
    found += [f"os.environ[{k}]" for k, v in os.environ.items() if needle in v]
    found += ["sys.argv" for arg in sys.argv if needle in arg]
    connections = [o for o in objects if isinstance(o, redis.connection.AbstractConnection)]
    return {
        "found": found,
        "open_connections": sum(_is_socket(c._sock) for c in connections if c._sock),
        "socket_fds": sum(_is_socket(int(fd)) for fd in os.listdir("/proc/self/fd")),
    }


def _holds(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return needle in value
    if isinstance(value, bytes):
        return needle.encode() in value
    if isinstance(value, tuple):
        return any(_holds(item, needle) for item in value)
    return False


def _attributes(obj: object) -> dict[str, Any] | None:
    try:
        found = object.__getattribute__(obj, "__dict__")
    except Exception:
        return None
    return found if isinstance(found, dict) else None


def _is_socket(sock: Any) -> bool:
    try:
        fd = sock if isinstance(sock, int) else sock.fileno()
        return os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    except (OSError, ValueError):
        return False


@job("who_am_i")
def who_am_i(target_pids: list[int], home: str) -> dict[str, Any]:
    """Who the job's process is, and whether it can signal or read ``target_pids`` (kill 0,
    their /proc environ) and list ``home``: a ``--job-user`` job must do none of these."""
    reached = []
    for pid in target_pids:
        with contextlib.suppress(OSError):
            os.kill(pid, 0)
            reached.append(f"signal {pid}")
        with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as f:
            f.read(1)
            reached.append(f"environ of {pid}")
    with contextlib.suppress(OSError):
        os.listdir(home)
        reached.append("home listed")
    return {"uid": os.getuid(), "tmpdir": os.environ.get("TMPDIR", ""), "reached": reached}
