"""What a job's process, forked from the work-horse, drops before the job's code runs.

The job's process is a copy of the horse, which is a copy of the RQ worker: it holds the
worker's Redis connections (sockets already authenticated) and the backend URL with its
password, in objects any code can find (``gc.get_objects()``, a frame's ``f_back`` locals).
``forget_redis``:

* replaces each socket fd of this process with /dev/null (``dup2``): the connection is gone
  from here, the horse's copy is untouched (nothing is shut down), and the fd number stays
  taken until its socket object closes it, so that close cannot hit a file the job opened;
* takes the credentials out of the pools of every client ``keys.connect`` made;
* replaces the URL and the password wherever they are held (each password object any
  client was given, ``keys.CREDENTIALS``: one no longer in ``keys.CLIENTS`` may still be
  in cyclic garbage): by the containers and objects
  (every Connection of those pools) that refer to those very string objects
  (``gc.get_referrers``, one pass in C), by the callers' frames (``_work(url, …)``: this
  process never returns into them, but a job can walk up to them) and by the dicts, lists
  and objects those frames hold.

A full scan of every object by value would cost seconds per job in a worker this size; what
it cannot reach either are bytes the interpreter freed but did not overwrite: a job that
scans its own raw memory may still find a copy. ``--job-user`` does not change that;
``--sandbox`` (a fresh interpreter) would.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import sys
from types import CellType, FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jobtrail.backends.redis import keys as b

FORGOTTEN = "<forgotten>"
_CREDENTIALS = ("password", "username", "credential_provider")


def secrets_of(url: str) -> tuple[str, ...]:
    """The strings a job must not find: the URL and its password (none without one)."""
    if not url:
        return ()
    parts = urlsplit(url)
    password = parts.password or next(iter(parse_qs(parts.query).get("password", [])), None)
    return (url, password) if password else ()


def forget_redis(url: str, keep_fds: tuple[int, ...] = ()) -> None:
    """Cut this process off Redis and replace every reachable copy of ``url``'s secrets."""
    secrets = secrets_of(url)
    _unplug_sockets(keep_fds)
    held: list[object] = [url] if secrets else []
    for client in list(b.CLIENTS):
        pool = client.connection_pool
        for name in _CREDENTIALS:
            held.append(pool.connection_kwargs.pop(name, None))
        # the connections it made (a reset pool no longer lists them) hold the same
        # password object: found below among its referrers
    if not secrets:
        return
    # a client already dropped (CLIENTS holds them weakly) may live on in cyclic garbage
    # until the next collection, its connections holding a password object of their own:
    # keys.connect kept it (a gc.collect() here would cost 150 ms a job under load)
    held += b.CREDENTIALS
    current = multiprocessing.current_process()
    current._args = _scrubbed(current._args, secrets)  # type: ignore[attr-defined]
    holders = gc.get_referrers(*[s for s in held if isinstance(s, str) and s])
    tuples = [h for h in holders if isinstance(h, tuple)]  # cannot change: their holders can
    for holder in [*holders, *(gc.get_referrers(*tuples) if tuples else ())]:
        _scrub(holder, secrets)
    _forget_in_frames(sys._getframe(1), secrets)  # not this frame: it holds them
    b.CREDENTIALS.clear()


def _unplug_sockets(keep: tuple[int, ...]) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            with contextlib.suppress(OSError):
                if fd not in keep and os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                    os.dup2(devnull, fd, inheritable=False)
    finally:
        os.close(devnull)


def _scrub(obj: object, secrets: tuple[str, ...]) -> None:
    """Replace, in a dict or a list, each value that holds a secret."""
    if isinstance(obj, dict):
        for key, value in list(obj.items()):
            if _holds(value, secrets):
                obj[key] = _scrubbed(value, secrets)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            if _holds(value, secrets):
                obj[i] = _scrubbed(value, secrets)
    elif isinstance(obj, CellType):  # a closure's (``lambda: connect(url)``)
        with contextlib.suppress(ValueError):  # empty
            if _holds(obj.cell_contents, secrets):
                obj.cell_contents = _scrubbed(obj.cell_contents, secrets)
    elif isinstance(obj, tuple):
        return
    elif (attributes := _attributes(obj)) is not None:  # a Connection's password
        _scrub(attributes, secrets)


def _attributes(obj: object) -> dict[str, Any] | None:
    """``obj.__dict__`` if it has one (what a job's ``vars()`` would read)."""
    if isinstance(obj, type):
        return None
    try:
        found = object.__getattribute__(obj, "__dict__")
    except Exception:  # no __dict__, or one that refuses to be read
        return None
    return found if isinstance(found, dict) else None


def _holds(value: Any, secrets: tuple[str, ...], depth: int = 2) -> bool:
    if isinstance(value, str):
        return any(s in value for s in secrets)
    if isinstance(value, bytes):
        return any(s.encode() in value for s in secrets)
    if depth and isinstance(value, tuple):
        return any(_holds(item, secrets, depth - 1) for item in value)
    return False


def _scrubbed(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with the secrets replaced (a tuple rebuilt: it cannot be changed in place)."""
    if isinstance(value, tuple):
        return tuple(_scrubbed(item, secrets) if _holds(item, secrets) else item for item in value)
    if isinstance(value, (str, bytes)) and _holds(value, secrets):
        return FORGOTTEN if isinstance(value, str) else FORGOTTEN.encode()
    return value


def _forget_in_frames(frame: FrameType | None, secrets: tuple[str, ...]) -> None:
    """The callers' locals, and the dicts and lists they hold: a function's locals, and its
    own containers of strings only (``handed = {"backend": url}``), are not tracked, so no
    referrer search finds them. A module's frame has its globals, which are."""
    while frame is not None:
        if frame.f_locals is frame.f_globals:
            frame = frame.f_back
            continue
        local_vars = frame.f_locals
        for value in local_vars.values():
            if isinstance(value, (dict, list)):
                _scrub(value, secrets)
        names = [name for name, value in local_vars.items() if _holds(value, secrets)]
        for name in names:
            local_vars[name] = _scrubbed(local_vars[name], secrets)
        if names and sys.version_info < (3, 13):  # before PEP 667, f_locals is a copy
            import ctypes

            ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
        frame = frame.f_back
