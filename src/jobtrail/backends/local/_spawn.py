"""Starting a pool worker process from a server that runs many threads.

What the worker must not inherit (the server's ``__main__``, unflushed output buffers) is
kept from it; what helper processes started with it must carry (the home's mark) is given
to them; and its spool (``worker/spool.py``) is created for it here, in the server, which
outlives it and reads the spool if it dies.
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
from pathlib import Path
from typing import Any

from jobtrail.processes import WORKER_MARK_ENV
from jobtrail.worker import spool


def start_process(
    ctx: BaseContext,
    target: Callable[..., None],
    args: tuple[Any, ...],
    *,
    name: str,
    helper_mark: str,
) -> BaseProcess:
    """Start ``target(*args)`` in a new process of ``ctx``; helpers that start with it (a
    forkserver, the resource tracker) carry ``helper_mark``."""
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
    with _without_main_module(), _marked_environment(helper_mark), warnings.catch_warnings():
        # Python 3.12+ warns that fork() from a multi-threaded process may deadlock the
        # child: that is why forkserver is the default; who picks fork has chosen it.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        process.start()
    return process


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


class WorkerSpools:
    """The workers' spools: files in a private folder of the home (0700; files 0600)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        for leftover in folder.glob("worker-*.spool"):  # a previous server's
            remove_spool(str(leftover))
        self._folder = folder

    def create(self, worker_id: int) -> str:
        path = self._folder / f"worker-{worker_id}.spool"
        remove_spool(str(path))
        spool.create(path)
        return str(path)


def remove_spool(path: str | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)
