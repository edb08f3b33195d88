"""Keeping the API token and a Redis password out of every job's reach.

A job runs as the server's own user, so it can read any ``/proc/PID/environ`` and
``/proc/PID/cmdline`` of the server's processes (cmdline is world-readable), and their
memory too unless they are made non-dumpable. Removing a variable from ``os.environ``
changes neither: ``/proc/PID/environ`` shows the environment the process was *started*
with. So ``serve`` and ``jobtrail worker`` do this, once, before anything else starts::

    given in argv or env ─► re-execute this process (same pid) with them removed from
                            argv and env, handed over through an inherited pipe
    new image ─► take_handover(): read the pipe, close it ─► set_dumpable(False)
                 ─► serve; every helper (forkserver, resource tracker, pool workers)
                    starts from this clean argv and environment

A secret read from a file (``--token-file``, ``--backend-file``: ``read_secret_file``
refuses one that others can read, as ssh does) never shows in ``/proc`` at all and needs no
re-execution. ``prctl(PR_SET_DUMPABLE, 0)`` then keeps a same-user job from ptrace, and
from reading the holder's ``/proc/PID/mem`` and ``environ`` (root, with CAP_SYS_PTRACE, is
not kept out by it).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import stat
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qs, urlparse

HANDOVER_ENV = "JOBTRAIL_SECRETS_FD"  # the pipe's fd number in the re-executed process
PR_SET_DUMPABLE = 4


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message says what to fix."""


def set_dumpable(dumpable: bool) -> None:
    """``prctl(PR_SET_DUMPABLE)``. Off: the process's ``/proc/PID/{mem,environ,…}`` belong
    to root and only CAP_SYS_PTRACE may ptrace it (and it leaves no core dump). A fork keeps
    the setting; an exec of a program resets it to on."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")


def url_password(url: str) -> str | None:
    """The password in a Redis URL (``redis://:PW@host``, ``?password=PW``), if any."""
    parsed = urlparse(url)
    if parsed.password:
        return parsed.password
    return next(iter(parse_qs(parsed.query).get("password", [])), None)


def read_secret_file(path: str, option: str) -> str:
    """The secret in ``path`` (surrounding whitespace removed). Refused, as ssh refuses a
    private key others can read: a file group or others may read or write, one owned by
    another user (root excepted), one that is missing, not a regular file, or empty."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SecretFileError(f"cannot read {option} {path}: {exc.strerror}") from None
    with open(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(f"{option} {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SecretFileError(
                f"{option} {path}: permissions {mode:04o} are too open (group or others may "
                f"read or change it); chmod 600 {path}"
            )
        if info.st_uid not in (os.geteuid(), 0):
            raise SecretFileError(
                f"{option} {path} is owned by uid {info.st_uid}, not by this user "
                f"(uid {os.geteuid()}) or root"
            )
        secret = file.read().decode().strip()
    if not secret:
        raise SecretFileError(f"{option} {path} is empty")
    return secret


def visible(secrets: Iterable[str]) -> bool:
    """Whether any secret shows in this process's ``/proc/self/environ`` or ``cmdline``."""
    shown = Path("/proc/self/environ").read_bytes() + Path("/proc/self/cmdline").read_bytes()
    return any(secret and secret.encode() in shown for secret in secrets)


def take_handover() -> dict[str, str] | None:
    """In a process ``reexecute`` started: the secrets it handed over (the pipe is read and
    closed). None in any other process."""
    fd_text = os.environ.pop(HANDOVER_ENV, None)
    if fd_text is None:
        return None
    set_dumpable(False)  # before the secrets are in this process's memory
    with open(int(fd_text), "rb") as pipe:
        handed = json.loads(pipe.read())
    return {str(k): str(v) for k, v in handed.items()}


def reexecute(
    secrets: Mapping[str, str], options: Mapping[str, str], env_names: Sequence[str]
) -> NoReturn:
    """Execute this command again, in this process, without ``secrets`` in its argv (each
    given as ``options[name] VALUE`` or ``options[name]=VALUE``) or in ``env_names``; they
    reach the new image through a pipe whose fd it inherits (``take_handover``)."""
    argv = _command_line()
    for name, value in secrets.items():
        if name in options:
            argv = _without_option(argv, options[name], value)
    env = {k: v for k, v in os.environ.items() if k not in env_names}
    read_end, write_end = os.pipe()
    data = json.dumps(dict(secrets)).encode()
    with open(write_end, "wb") as pipe:  # a pipe holds 64 KiB: far more than a few secrets
        pipe.write(data)
    os.set_inheritable(read_end, True)
    env[HANDOVER_ENV] = str(read_end)
    _before_exec()
    os.execve(sys.executable, [sys.executable, *argv], env)


def keep_out_of_proc(
    secrets: Mapping[str, str], options: Mapping[str, str], env_names: Sequence[str]
) -> None:
    """Called once, early, by a command given ``secrets`` (name to value; a name may come
    as ``options[name]`` on the command line) and started with ``env_names`` possibly set:
    re-executes it (no return) when a secret shows in its ``/proc`` or one of ``env_names``
    is set; otherwise makes it non-dumpable if it holds a secret. Run in-process (a test
    calling ``main``), it only removes ``env_names`` from ``os.environ``."""
    shown = visible(secrets.values()) or any(os.environ.get(name) for name in env_names)
    if shown and invoked_as_command():
        reexecute(secrets, options, env_names)
    for name in env_names:
        os.environ.pop(name, None)
    if secrets:
        set_dumpable(False)


def invoked_as_command() -> bool:
    """True when this process is the ``jobtrail`` command (script or ``-m jobtrail.cli``),
    so re-executing it runs the same command; False when ``main`` was called in-process."""
    script = Path(sys.argv[0])
    return script.name == "jobtrail" or script.parts[-3:] == ("jobtrail", "cli", "__main__.py")


def _command_line() -> list[str]:
    """The interpreter's own arguments (``-m jobtrail.cli``, or the script) and the
    command's: ``sys.orig_argv`` ends with ``sys.argv[1:]``."""
    command = sys.argv[1:]
    interpreter = sys.orig_argv[1 : len(sys.orig_argv) - len(command)]
    return [*interpreter, *command]


def _without_option(argv: list[str], option: str, value: str) -> list[str]:
    kept: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == option and i + 1 < len(argv) and argv[i + 1] == value:
            skip = True
        elif arg != f"{option}={value}":
            kept.append(arg)
    return kept


def _before_exec() -> None:
    """What the exec would lose: buffered output, and a test run's coverage data of this
    image (coverage saves it at exit, which an exec skips). Data that cannot be saved (its
    folder read-only where the test started this) is the test's concern: the start goes on."""
    sys.stdout.flush()
    sys.stderr.flush()
    coverage = sys.modules.get("coverage")
    current = getattr(getattr(coverage, "Coverage", None), "current", None)
    cov = current() if current else None
    if cov is not None:
        with contextlib.suppress(Exception):  # OSError, coverage's DataError, sqlite3's
            cov.stop()
            cov.save()
