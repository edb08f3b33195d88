"""Starting a pool worker process from a server that runs many threads.

What the worker must not inherit (the server's ``__main__``, unflushed output buffers) is
kept from it; what helper processes started with it must carry (the home's mark) is given
to them (its spool and pipes are ``_last_words.py``'s).
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

import psutil

from jobtrail.processes import WORKER_MARK_ENV


def start_process(
    ctx: BaseContext,
    target: Callable[..., None],
    args: tuple[Any, ...],
    *,
    name: str,
    helper_mark: str,
    executable: str | None = None,
) -> BaseProcess:
    """Start ``target(*args)`` in a new process of ``ctx``; helpers that start with it (a
    forkserver, the resource tracker) carry ``helper_mark``. ``executable``: a spawn
    context's worker starts through it (``isolation.write_launcher``) instead of Python."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # a forked child would otherwise write the server's buffer again
        except (OSError, ValueError):
            pass
    process: BaseProcess = ctx.Process(  # type: ignore[attr-defined]
        target=target,
        args=args,
        name=name,
        daemon=False,  # jobs may start multiprocessing children; the pool's stop() ends workers
    )
    with (
        _without_main_module(),
        _marked_environment(helper_mark),
        _spawn_executable(executable),
        warnings.catch_warnings(),
    ):
        # Python 3.12+ warns that fork() from a multi-threaded process may deadlock the
        # child: that is why forkserver is the default; who picks fork has chosen it.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        process.start()
    return process


def launched_pid(launcher_pid: int) -> int:
    """The worker below its launcher (setpriv's unshare or bwrap forks it once): the
    process to signal and whose tree is watched, as this host sees it."""
    try:
        children = psutil.Process(launcher_pid).children()
    except psutil.Error:
        return launcher_pid
    return children[0].pid if len(children) == 1 else launcher_pid


def exitcode(process: BaseProcess, *, launched: bool) -> int | None:
    """The worker's own exit code: bwrap reports a death by signal N as 128 + N."""
    code = process.exitcode
    return 128 - code if launched and code is not None and code > 128 else code


@contextlib.contextmanager
def _without_main_module() -> Iterator[None]:
    """Hide the server's ``__main__`` from spawn and forkserver children.

    They would import it again (running a script's top level twice, or failing outright for
    ``python -`` and REPLs); workers need only the job modules. Job types therefore live in
    importable modules (``--jobs-module``), never in ``__main__``.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@contextlib.contextmanager
def _spawn_executable(path: str | None) -> Iterator[None]:
    """Spawn through ``path`` while this worker starts, and only then: multiprocessing keeps
    one executable for every process it spawns, the resource tracker too (started first,
    so it is this Python's)."""
    if path is None:
        yield
        return
    from multiprocessing import resource_tracker, spawn

    resource_tracker.ensure_running()
    before = spawn.get_executable()
    spawn.set_executable(path)
    try:
        yield
    finally:
        spawn.set_executable(before)


@contextlib.contextmanager
def _marked_environment(mark: str) -> Iterator[None]:
    """Start helper processes (forkserver, resource tracker) with the home's mark, so a
    restarted server finds and stops them too if this one is killed.

    Only the C environment, which those processes inherit, is changed (``os.putenv``):
    ``os.environ`` itself stays untouched, because another thread may be iterating it
    (``urllib.request.getproxies`` does, for every httpx client) and would fail with a
    KeyError when a key vanishes under it."""
    before = os.environ.get(WORKER_MARK_ENV)
    os.putenv(WORKER_MARK_ENV, mark)
    try:
        yield
    finally:
        if before is None:
            os.unsetenv(WORKER_MARK_ENV)
        else:
            os.putenv(WORKER_MARK_ENV, before)
