"""The ``hostile`` job type: a job that tries, attack by attack, to reach what it must not.

It returns one entry per attack, ``{"ok": bool, "detail": str}``, where ``ok`` means the
attack *worked* (the job got there), so a test asserts ``not result[name]["ok"]`` for each
attack its mode must stop. The attacks:

``proc_environ`` / ``proc_cmdline``
    a needle (the API token, a Redis password) in any ``/proc/*/environ`` or
    ``/proc/*/cmdline`` but this process's own. The needles come hex-encoded
    (``needles_hex``), so the params the server receives, stores and hands to the job do
    not themselves hold the text that is looked for.
``own_environ``
    a needle in this job's own environment (what it was handed).
``own_memory``
    a needle in this job's own memory: what its process holds without asking (a copy of
    the server's heap under the ``fork`` start method; an RQ horse's Redis connection). A
    child process does the search, so this process never decodes the needles itself.
``proc_mem``
    read the memory of the processes that hold secrets: ``target_pids`` (the server,
    ``jobtrail worker``) and this job's ancestors up to the first of them (a forkserver, an
    RQ worker). ``ok``: some target's memory was readable; ``reached`` lists those pids
    (a server's is the token's: every request carries it), ``needles`` the needles found
    in what was read.
``ptrace``
    ``PTRACE_ATTACH`` to each target (then wait for its stop and ``PTRACE_DETACH``, so a
    success leaves it running); ``reached``: the pids attached.
``signal``
    ``kill(pid, 0)`` to each target, then ``SIGCONT`` (harmless to a running process, and
    allowed exactly when any other signal would be); ``reached``: the pids signalled.
``read_db`` / ``list_home``
    open the job database (``home``/jobs.sqlite3) and read its first page; list ``home``.
``read_log`` / ``read_extra_vars``
    read another job's log (a file or a job's log directory) and extra-vars file, by the
    paths the test passes.

Root with CAP_SYS_PTRACE reads every process's memory and environment, dumpable or not. To
see what a job of the server's own user sees, start the server (and ``jobtrail worker``)
without that capability: ``drop_ptrace_capability`` as the ``preexec_fn`` of its
``subprocess.Popen``. A job under it then meets ``/proc`` and ptrace as an unprivileged
same-user job would: a non-dumpable process (``prctl(PR_SET_DUMPABLE, 0)``) is out of its
reach, a dumpable one is not. (Dropping the capability in the job alone would not do: the
kernel also refuses a caller whose capabilities are fewer than its target's.) An attack
with nothing to aim at (no path given) is ``{"ok": false, "detail": "not tried: ..."}``; one
that meets an ``OSError`` it does not handle itself (a ``--job-user`` job that cannot open the
interpreter for its search child) is ``{"ok": false, "detail": "<the error>"}``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jobtrail import job

PTRACE_ATTACH, PTRACE_DETACH = 16, 17
CAP_SYS_PTRACE = 19
PR_CAPBSET_DROP = 24
_CAP_VERSION_3 = 0x20080522
MEM_READ_LIMIT = 256 * 1024 * 1024  # per process: the heap of a server is far below it
Result = dict[str, Any]

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _entry(ok: bool, detail: str) -> Result:
    return {"ok": ok, "detail": detail}


def _tried(attack: Callable[..., Result], *args: Any) -> Result:
    """An attack's entry; an OSError it did not expect means it got nowhere."""
    try:
        return attack(*args)
    except OSError as exc:
        return _entry(False, f"failed: {exc}")


def _pids() -> list[int]:
    me = os.getpid()
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != me]


def _scan(kind: str, needles: list[bytes]) -> Result:
    """Every readable ``/proc/PID/<kind>`` searched for every needle."""
    readable, found = 0, []
    for pid in _pids():
        try:
            data = Path(f"/proc/{pid}/{kind}").read_bytes()
        except OSError:
            continue
        readable += 1
        for n, needle in enumerate(needles):
            if needle in data:
                found.append(f"needle {n} in pid {pid} ({_comm(pid)})")
    detail = f"read {readable} {kind} files; " + ("; ".join(found) or "no needle found")
    return _entry(bool(found), detail)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _own_environ(needles: list[bytes]) -> Result:
    mine = b"\0".join(os.fsencode(f"{k}={v}") for k, v in os.environ.items())
    mine += Path("/proc/self/environ").read_bytes()
    found = [str(n) for n, needle in enumerate(needles) if needle in mine]
    return _entry(bool(found), f"needles {', '.join(found)}" if found else "no needle found")


def _own_memory(needles_hex: list[str]) -> Result:
    """This process reads its own memory (always allowed, dumpable or not) and streams it
    to a child that knows the needles, so no needle is decoded in here."""
    code = "from jobpkg.hostile import search_stream; search_stream()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    child = subprocess.Popen(
        [sys.executable, "-c", code, *needles_hex],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert child.stdin and child.stdout and child.stderr
    total = 0
    try:
        for chunk in _memory("self"):
            child.stdin.write(len(chunk).to_bytes(8, "little") + chunk)
            total += len(chunk)
    except BrokenPipeError:
        pass  # the child died: its stderr says why
    finally:
        child.stdin.close()
    out, err = child.stdout.read(), child.stderr.read()
    child.wait(120)
    if child.returncode != 0:
        return _entry(False, f"the search failed: {err.decode().strip()[-300:]}")
    found = json.loads(out)
    detail = f"read {total} bytes; needles found {found}"
    return {**_entry(bool(found), detail), "needles": found}


def search_stream() -> None:
    """In the child ``own_memory`` starts: the needles (hex in argv) in the chunks on stdin
    (each 8 bytes of length, then the bytes), the indexes found as JSON on stdout."""
    needles = [bytes.fromhex(n) for n in sys.argv[1:]]
    found: set[int] = set()
    stream = sys.stdin.buffer
    while head := stream.read(8):
        chunk = stream.read(int.from_bytes(head, "little"))
        found.update(n for n, needle in enumerate(needles) if needle in chunk)
    print(json.dumps(sorted(found)))


def _targets(target_pids: list[int]) -> list[int]:
    """The given pids, and this job's ancestors up to the first of them (the processes in
    between, a forkserver or an RQ worker, may hold what their parent holds)."""
    targets = list(dict.fromkeys(target_pids))
    pid = os.getppid()
    while pid > 1 and target_pids and pid not in target_pids:
        targets.append(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return targets


def _memory(pid: int | str) -> Iterator[bytes]:
    """The contents of ``pid``'s writable mappings, up to MEM_READ_LIMIT in all."""
    total = 0
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        regions = maps.read().splitlines()  # read whole first: reading below maps more
        for line in regions:
            fields = line.split()
            if "w" not in fields[1] or (len(fields) > 5 and fields[5].startswith("[v")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            size = min(end - start, MEM_READ_LIMIT - total)
            if size <= 0:
                return
            try:
                mem.seek(start)
                chunk = mem.read(size)
            except OSError:
                continue
            total += len(chunk)
            yield chunk


def _read_mem(pid: int, needles: list[bytes]) -> tuple[int, list[int]]:
    """Bytes read from ``pid``'s writable mappings and the needles found in them."""
    total, found = 0, set[int]()
    for chunk in _memory(pid):
        total += len(chunk)
        found.update(n for n, needle in enumerate(needles) if needle in chunk)
    return total, sorted(found)


def _proc_mem(targets: list[int], needles: list[bytes]) -> Result:
    details, reached, needles_found = [], [], set[int]()
    for pid in targets:
        try:
            total, found = _read_mem(pid, needles)
        except OSError as exc:
            details.append(f"pid {pid}: {exc.strerror}")
            continue
        if total:
            reached.append(pid)
        needles_found.update(found)
        details.append(f"pid {pid}: read {total} bytes, needles found {found}")
    entry = _entry(bool(reached), "; ".join(details) or "not tried: no target")
    return {**entry, "reached": reached, "needles": sorted(needles_found)}


def _ptrace(targets: list[int]) -> Result:
    _libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    _libc.ptrace.restype = ctypes.c_long
    details, reached = [], []
    for pid in targets:
        if _libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
            details.append(f"pid {pid}: {os.strerror(ctypes.get_errno())}")
            continue
        reached.append(pid)
        try:
            os.waitpid(pid, getattr(os, "__WALL", 0x40000000))
        except ChildProcessError:
            pass
        _libc.ptrace(PTRACE_DETACH, pid, None, None)
        details.append(f"pid {pid}: attached (and detached)")
    return {**_entry(bool(reached), "; ".join(details) or "not tried"), "reached": reached}


def _signal(targets: list[int]) -> Result:
    details, reached = [], []
    for pid in targets:
        try:
            os.kill(pid, 0)
            os.kill(pid, signal.SIGCONT)
        except OSError as exc:
            details.append(f"pid {pid}: {exc.strerror}")
            continue
        reached.append(pid)
        details.append(f"pid {pid}: signal 0 and SIGCONT delivered")
    return {**_entry(bool(reached), "; ".join(details) or "not tried"), "reached": reached}


def _read(path: str) -> Result:
    if not path:
        return _entry(False, "not tried: no path given")
    target = Path(path)
    try:
        files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
        size = sum(len(p.read_bytes()) for p in files)
    except OSError as exc:
        return _entry(False, f"{path}: {exc.strerror}")
    return _entry(bool(files), f"read {size} bytes from {len(files)} file(s)")


def _read_db(home: str) -> Result:
    if not home:
        return _entry(False, "not tried: no home given")
    path = Path(home) / "jobs.sqlite3"
    try:
        with open(path, "rb") as db:
            head = db.read(4096)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        return _entry(False, f"{path}: {exc}")
    return _entry(True, f"read {len(head)} bytes; {rows} schema rows")


def _list_home(home: str) -> Result:
    if not home:
        return _entry(False, "not tried: no home given")
    try:
        names = os.listdir(home)
    except OSError as exc:
        return _entry(False, f"{home}: {exc.strerror}")
    return _entry(True, f"{len(names)} entries: {', '.join(sorted(names)[:10])}")


def drop_ptrace_capability() -> None:
    """Remove CAP_SYS_PTRACE from this process and all it starts (the bounding set, then
    capset(2)): a ``preexec_fn`` that makes a root server a same-user target (see above)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

    if os.geteuid() != 0:
        return  # an unprivileged process has no capability to drop
    if _libc.prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    header, data = Header(_CAP_VERSION_3, 0), (Data * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for field in ("effective", "permitted", "inheritable"):
        setattr(data[0], field, getattr(data[0], field) & ~(1 << CAP_SYS_PTRACE))
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


# What ``hostile`` tries, by its key in the result
ATTACKS = (
    "proc_environ",
    "proc_cmdline",
    "own_environ",
    "own_memory",
    "proc_mem",
    "ptrace",
    "signal",
    "read_db",
    "list_home",
    "read_log",
    "read_extra_vars",
)


@job("hostile")
def hostile(
    needles_hex: list[str] | None = None,
    target_pids: list[int] | None = None,
    home: str = "",
    log_path: str = "",
    extra_vars_path: str = "",
) -> dict[str, Result]:
    """Tries to reach the server's secrets, home, other jobs and processes; says what worked."""
    own_memory = _tried(_own_memory, list(needles_hex or ()))  # first: before decoding
    needles = [bytes.fromhex(n) for n in needles_hex or ()]
    targets = _targets(list(target_pids or ()))
    return {
        "proc_environ": _tried(_scan, "environ", needles),
        "proc_cmdline": _tried(_scan, "cmdline", needles),
        "own_environ": _tried(_own_environ, needles),
        "own_memory": own_memory,
        "proc_mem": _tried(_proc_mem, targets, needles),
        "ptrace": _tried(_ptrace, targets),
        "signal": _tried(_signal, targets),
        "read_db": _tried(_read_db, home),
        "list_home": _tried(_list_home, home),
        "read_log": _tried(_read, log_path),
        "read_extra_vars": _tried(_read, extra_vars_path),
    }


@job("sandbox_probe")
def sandbox_probe(write_to: list[str], list_dirs: list[str]) -> dict[str, Any]:
    """What ``--sandbox`` leaves a job: which of ``write_to`` it can create a file in, which
    of ``list_dirs`` it can list (and what), and what its /tmp holds."""
    written, listed = [], {}
    for folder in write_to:
        try:
            fd, path = tempfile.mkstemp(dir=folder, prefix="sandbox-probe-")
        except OSError:
            continue
        os.close(fd)
        os.unlink(path)
        written.append(folder)
    for folder in list_dirs:
        with contextlib.suppress(OSError):
            listed[folder] = sorted(os.listdir(folder))
    return {"written": written, "listed": listed, "tmp": sorted(os.listdir("/tmp"))}
