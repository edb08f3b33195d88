"""Why a Python job failed, as data: its exception, the chain of causes down to the root,
and the innermost frame of the job's own code, so ``error`` reads as a person would say it::

    RuntimeError: inventory unavailable ← ConnectionError: could not connect to postgres://…
    : connection refused (myjobs.py:53 in _connect)      (one line)

The chain is what a traceback prints above "The above exception was the direct cause of
the following exception" (``__cause__``) or "During handling of the above exception, another
exception occurred" (``__context__``, unless ``raise … from None`` suppressed it). The frame
is looked for in the root cause's traceback first: that is where the trouble started; the
stdlib, installed packages and jobtrail itself are not the job's code, so their frames are
passed over. The traceback text itself stays in the log record (``exc_text``).
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import traceback
from collections.abc import Callable
from functools import lru_cache
from typing import Any

ARROW = " ← "
MAX_CAUSES = 10  # in ``causes``: the nearest ones and the root; the count of the rest is said
MAX_WALK = 1000  # links followed to find the root; a longer chain is someone's loop
MAX_MESSAGE = 1000  # characters of one message in the digest
MAX_LINK = 200  # characters of one link of the one-line error
MAX_LINKS = 3  # links the one-line error names; a longer chain shows "… N more" in between
_LIBRARY_DIRS = ("site-packages", "dist-packages")


def describe(exc: BaseException, redact: Callable[[str], str]) -> tuple[str, dict[str, Any]]:
    """The job's one-line ``error`` and its ``failure`` digest (``kind: "exception"``),
    every message passed through ``redact``."""
    chain = exception_chain(exc)
    links = [
        {"type": type(e).__name__, "message": redact(_message(e))[:MAX_MESSAGE]} for e in chain
    ]
    causes = links[1:]
    cut = 0
    if len(causes) > MAX_CAUSES:
        cut = len(causes) - MAX_CAUSES
        causes = causes[: MAX_CAUSES - 1] + causes[-1:]
    frame = job_frame(chain)
    failure: dict[str, Any] = {"kind": "exception", **links[0], "causes": causes, "frame": frame}
    if cut:
        failure["causes_cut"] = cut
    return one_line(links, frame), failure


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, outermost first, down to the root; each exception once."""
    chain = [exc]
    seen = {id(exc)}
    while len(chain) < MAX_WALK:
        current = chain[-1]
        if current.__cause__ is not None:
            following = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            following = current.__context__
        else:
            break
        if id(following) in seen:  # a cycle (an exception re-raised inside its own handler)
            break
        seen.add(id(following))
        chain.append(following)
    return chain


def job_frame(chain: list[BaseException]) -> dict[str, Any] | None:
    """Where the job's own code was when it went wrong: the innermost such frame of the
    root cause's traceback, else of the next exception up; None if no frame is the job's."""
    for exc in reversed(chain):
        frames = list(traceback.walk_tb(exc.__traceback__))
        for frame, line in reversed(frames):
            code = frame.f_code
            if is_job_code(code.co_filename):
                return {
                    "file": shown_path(code.co_filename),
                    "line": line,
                    "function": code.co_name,
                }
    return None


def one_line(links: list[dict[str, str]], frame: dict[str, Any] | None) -> str:
    """``Type: message ← Cause: message (file:line in function)``, each message on one line."""
    words = [_link(link) for link in links]
    if len(words) > MAX_LINKS:
        words = [*words[: MAX_LINKS - 1], f"… {len(words) - MAX_LINKS} more", words[-1]]
    where = f" ({frame['file']}:{frame['line']} in {frame['function']})" if frame else ""
    return ARROW.join(words) + where


def _link(link: dict[str, str]) -> str:
    message = " ".join(link["message"].split())
    if len(message) > MAX_LINK:
        message = message[: MAX_LINK - 1] + "…"
    return f"{link['type']}: {message}" if message else link["type"]


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not hide the failure it describes
        return f"<exception str() failed for {type(exc).__name__}>"


def is_job_code(filename: str) -> bool:
    """Not the stdlib, an installed package, jobtrail, nor code without a file (``<string>``)."""
    if filename.startswith("<"):
        return False
    path = os.path.abspath(filename)
    if any(part in _LIBRARY_DIRS for part in path.split(os.sep)):
        return False
    return not any(path.startswith(prefix) for prefix in _not_job_code())


def shown_path(filename: str) -> str:
    """The file as its module is imported (``myjobs.py``, ``mypkg/db.py``): relative to the
    longest import-path entry that holds it, else its name alone."""
    path = os.path.abspath(filename)
    best = ""
    for entry in sys.path:
        base = os.path.join(os.path.abspath(entry or os.curdir), "")
        if path.startswith(base) and len(base) > len(best):
            best = base
    return path[len(best) :] if best else os.path.basename(path)


@lru_cache(maxsize=1)
def _not_job_code() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths}
    dirs |= set(site.getsitepackages()) | {site.getusersitepackages()}
    dirs.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # jobtrail's own
    return tuple(os.path.join(os.path.abspath(d), "") for d in dirs if d)
