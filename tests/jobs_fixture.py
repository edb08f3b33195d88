"""Job types the tests run; importable by worker processes as `jobs_fixture`."""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jobpkg.hostile  # noqa: F401  (registers the hostile job type: tests/jobpkg/hostile.py)

from jobtrail import job, progress

log = logging.getLogger("fixture")


@job("log_threads")
def log_threads(threads: int = 4, records: int = 1000, tag: str = "") -> int:
    """Each thread logs `records` numbered lines; checks nothing is lost or reordered."""

    def emit(t: int) -> None:
        for n in range(records):
            log.info("%s t=%d n=%d", tag, t, n)

    workers = [threading.Thread(target=emit, args=(t,), name=f"emit-{t}") for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return threads * records


@job("levels")
def levels(errors_every: int = 0, count: int = 10) -> None:
    """Logs DEBUG..CRITICAL once each, then `count` INFO lines with an ERROR every N."""
    for name in ("debug", "info", "warning", "error", "critical"):
        getattr(log, name)("a %s record", name)
    for i in range(count):
        if errors_every and i % errors_every == 0:
            log.error("error %d", i)
        else:
            log.info("info %d", i)


@job("crash")
def crash(kind: str, lines: int = 5) -> None:
    """Dies the way `kind` says, after logging `lines` lines."""
    for i in range(lines):
        log.info("before the crash %d", i)
    time.sleep(0.1)  # the documented bound: records older than the 20 ms flush interval survive
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "exit":
        os._exit(3)
    elif kind == "raise":
        raise ValueError("the job went wrong")
    elif kind == "oom":
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, resource.RLIM_INFINITY))
        hog = []
        while True:
            hog.append(bytearray(256 * 1024**2))
    elif kind == "sysexit":
        sys.exit(4)
    time.sleep(0.1)


@job("process_tree")
def process_tree(seconds: float = 60.0) -> None:
    """Starts a child that starts a grandchild, reports their pids, then waits."""
    code = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
        "print('grandchild', p.pid, flush=True); time.sleep(600)"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    print("child", child.pid, flush=True)
    progress(10, "tree started")
    time.sleep(seconds)


@job("priority")
def priority() -> dict[str, object]:
    """How this job process is scheduled: its nice, session, autogroup and cpu cgroup."""
    with open("/proc/self/autogroup") as group:
        autogroup = group.read().strip()
    with open("/proc/self/cgroup") as cgroups:
        hierarchies = [line.rstrip("\n").split(":", 2) for line in cgroups]
    return {
        "cpu_cgroup": next(path for _, names, path in hierarchies if "cpu" in names.split(",")),
        "nice": os.nice(0),
        "session_leader": os.getsid(0) == os.getpid(),
        "autogroup": autogroup,
        # pid 1 of a namespace (--job-user) has no parent in sight
        "parent_autogroup": Path(f"/proc/{os.getppid()}/autogroup").read_text().strip()
        if os.getppid()
        else "",
    }


@job("output")
def output() -> None:
    """Writes through every path that is not `logging`: print, stderr, a child, os.system."""
    print("printed line")
    sys.stderr.write("stderr line\n")
    subprocess.run([sys.executable, "-c", "print('child says hi')"], check=True)
    os.system("echo from os.system; echo to-stderr 1>&2")
    os.write(1, b"bad utf8 \xff\xfe here\n")
    print("\x1b[31mred text\x1b[0m and a\rcarriage return")
    print("x" * 70_000)
    print("no newline at the end", end="")


@job("messy")
def messy() -> None:
    """Records that would break naive logging: unpicklable args and extras, bad formats."""
    lock = threading.Lock()
    log.info("an unpicklable arg: %s", lock)
    log.info("extra that cannot pickle", extra={"thing": lock})
    log.info("bad format %d", "not a number")
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        log.exception("with a traceback")
    log.info("line one\n[2026-01-01 00:00:00] ERROR: forged")


@job("forked_logger")
def forked_logger() -> None:
    """A child forked by the job logs through its inherited handler."""
    import multiprocessing

    def child() -> None:
        logging.getLogger("child").warning("hello from the forked child %d", os.getpid())

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join()


@job("wait_for_file")
def wait_for_file(path: str, timeout: float = 30.0) -> str:
    """Logs, then waits until `path` exists: lets a test act while the job runs."""
    log.info("waiting for %s", path)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)
    return path


@job("typed")
def typed(
    count: int, name: str = "x", ratio: float = 0.5, flags: list[str] | None = None
) -> dict[str, object]:
    """Only here to have a signature to validate against."""
    return {"count": count, "name": name, "ratio": ratio, "flags": flags or []}


@job("leaky")
def leaky(user: str, password: str, api_token: str = "") -> None:
    """Logs its own secrets by accident, in the shapes people really use."""
    log.info("connecting as %s with password %s", user, password)
    bearer = api_token or "abcdefghijklmnop1234"
    log.info("curl -H 'Authorization: Bearer %s' https://api.example", bearer)
    print(f"DATABASE_URL=postgres://{user}:{password}@db:5432/app")
    print(f"password={password}")
    print("JOBTRAIL_TOKEN in env:", os.environ.get("JOBTRAIL_TOKEN"))


@job("flood")
def flood(records: int = 100_000, payload: int = 80) -> int:
    """Logs as fast as it can: faster than the listener (or the disk) can take."""
    filler = "x" * payload
    for i in range(records):
        log.info("flood %d %s", i, filler)
    return records


@job("ticker")
def ticker(path: str, interval: float = 0.05, timeout: float = 60.0) -> int:
    """Logs `tick N` at a cycling level (DEBUG, INFO, WARNING, ERROR) every `interval`, with
    progress, until `path` exists: a job a follower can watch live and a test can end."""
    names = ("debug", "info", "warning", "error")
    deadline = time.monotonic() + timeout
    n = 0
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        getattr(log, names[n % 4])("tick %d", n)
        progress(min(99.0, n), f"tick {n}")
        n += 1
        time.sleep(interval)
    log.info("ticker done after %d ticks", n)
    return n


@job("fail_digest")
def fail_digest(lines: int = 3) -> None:
    """Fails on purpose with a failure digest, the way the Ansible job type does."""
    from jobtrail.errors import JobFailed

    for i in range(lines):
        log.info("deploying step %d", i)
    log.error("task failed on web1")
    raise JobFailed(
        "deploy failed: task 'restart app' on web1",
        failure={
            "play": "deploy <b>web</b>",
            "task": "restart app",
            "host": "web1",
            "message": "non-zero return code",
            "rc": 3,
            "stderr": "Job for app.service failed.\n<script>window.__pwned = 3</script>",
        },
    )


@job("html_message")
def html_message(extra: str = "") -> None:
    """Logs messages that are HTML and script: a page must show them as text."""
    log.warning("<script>window.__pwned = 1</script> and <b>bold</b>")
    log.info('<img src="x" onerror="window.__pwned = 2"> %s', extra)
    log.info("&lt;not an entity&gt; & <i>italic</i>")


@job("chatty")
def chatty(count: int, payload: int = 200, burst: int = 200, pause: float = 0.02) -> int:
    """Logs `count` records of about `payload` bytes, pausing `pause` s every `burst`."""
    pad = "y" * payload
    for i in range(1, count + 1):
        log.info("chatty %d %s", i, pad)
        if i % burst == 0:
            time.sleep(pause)
    return count


@job("slow_to_stop")
def slow_to_stop(path: str, cleanup: float = 1.0, timeout: float = 60.0) -> None:
    """Waits until `path` exists; its `finally` takes `cleanup` s, so a test sees a job that
    is being stopped (a cancel, a shutdown) before it has ended."""
    log.info("waiting for %s", path)
    deadline = time.monotonic() + timeout
    try:
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise TimeoutError(path)
            time.sleep(0.02)
    finally:
        log.info("cleaning up for %s s", cleanup)
        time.sleep(cleanup)
        log.info("cleaned up")


@job("root_cause")
def root_cause(how: str, url: str = "postgres://db.internal:5432/inv", password: str = "") -> None:
    """Fails with a chain of causes. `how`: ``from`` (raise … from), ``context`` (raised while
    handling another), ``suppressed`` (raise … from None), ``stdlib`` / ``library`` (the
    root raised inside json / psutil), ``package`` (deep in tests/jobpkg); a `password` goes
    into the messages."""
    import json

    import psutil

    if how == "stdlib":
        json.loads(url)  # root_cause: stdlib
    if how == "library":
        psutil.Process(-5)  # root_cause: library
    if how == "package":
        from jobpkg import inventory

        inventory.load(url)
    try:
        _connect(url, password)
    except ConnectionError as exc:
        if how == "from":
            raise RuntimeError("inventory unavailable") from exc
        if how == "suppressed":
            raise RuntimeError("inventory unavailable") from None  # root_cause: suppressed
        raise RuntimeError(f"inventory unavailable for {password or 'nobody'}")  # noqa: B904


def _connect(url: str, password: str) -> None:
    where = url.replace("://", f"://bob:{password}@") if password else url
    raise ConnectionError(f"could not connect to {where}: connection refused")  # root_cause: raise


class _Opaque:
    """An object with neither a JSON form nor a picklable state: kept as its repr."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return "<Opaque holding a lock>"


@job("fielded")
def fielded(count: int = 9, token: str = "") -> int:
    """Logs `count` records with ``extra=`` fields (attempt cycles 1, 2, 3; an ERROR every
    third), then one record each with an object, a long value, too many fields, a secret,
    and one from a forked child."""
    for i in range(count):
        attempt = i % 3 + 1
        level = logging.ERROR if attempt == 3 else logging.INFO
        log.log(level, "try %d", i, extra={"attempt": attempt, "user": f"u{i % 2}", "ok": i > 0})
    log.info("plain, no fields")
    log.info("an object", extra={"thing": _Opaque(), "ratio": 0.5, "nothing": None})
    log.info("a long value", extra={"blob": "y" * 5000, "attempt": "3"})
    log.info("many", extra={f"k{n:02d}": n for n in range(40)})
    log.info("secret", extra={"api_token": "t0p-s3cret-value", "note": f"sent {token} along"})
    import multiprocessing

    def child() -> None:  # logs through the inherited handler: a tagged line on fd 2
        log.warning("from a forked child", extra={"attempt": 7, "thing": _Opaque()})

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join()
    return count


@job("structlogged")
def structlogged() -> str:
    """Logs through structlog's standard-library integration, both ways: its key/values as
    ``extra`` (``render_to_log_kwargs``), and its event dict for a ``ProcessorFormatter``
    on a handler of the job's own, whose output it returns."""
    import io

    import structlog

    kwargs_log = structlog.wrap_logger(
        logging.getLogger("slog.kwargs"),
        processors=[structlog.stdlib.render_to_log_kwargs],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    kwargs_log.bind(request_id="r-1").info("order placed", order=42, total=9.5)
    own = io.StringIO()
    handler = logging.StreamHandler(own)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=structlog.processors.KeyValueRenderer())
    )
    formatter_logger = logging.getLogger("slog.formatter")
    formatter_logger.addHandler(handler)
    try:
        event_log = structlog.wrap_logger(
            formatter_logger,
            processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            wrapper_class=structlog.stdlib.BoundLogger,
        ).bind(request_id="r-2")
        event_log.warning("order shipped", order=43)
        try:
            raise ValueError("no such carrier")
        except ValueError:
            event_log.exception("shipping failed", order=44)
    finally:
        formatter_logger.removeHandler(handler)
    return own.getvalue()


@job("search_corpus")
def search_corpus(count: int = 200, every: int = 10, pad: int = 0) -> int:
    """Records for search: every `every`-th an ERROR holding a needle, hosts web1/web2 (a
    top-level key, as Ansible's), field `attempt` = i % 3, then a multi-line one, a traceback
    and a run of x's (for a pattern that backtracks forever in Python's re)."""
    filler = " " + "z" * pad if pad else ""
    for i in range(1, count + 1):
        hit = i % every == 0
        log.log(
            logging.ERROR if hit else logging.INFO,
            "record %d: %s%s",
            i,
            'Needle found "quoted" café' if hit else "hay",
            filler,
            extra={"jobtrail_fields": {"host": "web1" if i % 2 else "web2"}, "attempt": i % 3},
        )
    log.warning("first line\nsecond line with a NEEDLE in it")
    try:
        raise ValueError("the needle is in the traceback")
    except ValueError:
        log.exception("it failed")
    log.info("x" * 40)
    return count


@job("summary_mix")
def summary_mix(count: int = 100, burst: int = 100, pause: float = 0.0) -> int:
    """For the log summary: an ERROR first, messages that differ only in their numbers, hex
    ids, uuids and quoted strings, a CRITICAL, then `count` chatty records (a pause of
    `pause` s every `burst`) and a last ERROR."""
    log.error("could not reach db-%d at 10.0.0.%d", 1, 7)
    for i in range(30):
        log.info('fetched "item-%d" for request %08x-1234-5678-9abc-%012x', i, i, i * 7919)
        log.warning("slow response from host 0x%x after %.2f s", 4096 + i, i / 3)
    log.critical("disk %s is full", "sda1")
    for i in range(1, count + 1):
        log.info("chatty %d %s", i, "y" * 100)
        if pause and i % burst == 0:
            time.sleep(pause)
    log.error("could not reach db-%d at 10.0.0.%d", 2, 8)
    return count


_PRINTER = """import time
for i in range(30000):
    print("child", i, flush=True)
    time.sleep(0.001)
"""
_LINES = """import sys
n = int(sys.argv[1])
sys.stdout.write("".join(f"cw {i}\\n" for i in range(n - 1)) + f"cw {n - 1}")
"""


@job("last_words")
def last_words(
    records: int = 100,
    threads: int = 1,
    child: bool = False,
    how: str = "sigkill",
    child_lines: int = 0,
    printed: int = 0,
) -> None:
    """Logs `records` numbered lines (`lw <thread> <n>`, split over `threads` threads, while
    a child process prints if `child`), prints `printed` (`pw <n>`), lets a child print
    `child_lines` (`cw <n>`, the last without a newline) and exit, then dies at once: `how`
    is sigkill, os_exit or segfault. Every line before the death must be in the job's log."""
    printer = None
    if child:
        printer = subprocess.Popen([sys.executable, "-c", _PRINTER])

    def emit(t: int, count: int) -> None:
        for n in range(count):
            log.info("lw %d %d", t, n)

    share = [records // threads + (t < records % threads) for t in range(threads)]
    workers = [threading.Thread(target=emit, args=(t, share[t])) for t in range(1, threads)]
    for w in workers:
        w.start()
    emit(0, share[0])
    for w in workers:
        w.join()
    for n in range(printed):
        print("pw", n)
    if child_lines:
        subprocess.run([sys.executable, "-c", _LINES, str(child_lines)], check=True)
    del printer  # still printing when the job's process dies
    if how == "os_exit":
        os._exit(3)
    if how == "segfault":
        import ctypes

        ctypes.string_at(0)
    os.kill(os.getpid(), signal.SIGKILL)


_HOG = """import sys, time
held = []
for step in range(int(sys.argv[1])):
    held.append(bytearray(int(sys.argv[2]) * 1024 * 1024))
    print("child holds", (step + 1) * int(sys.argv[2]), "MB", flush=True)
    time.sleep(0.05)
time.sleep(60)
"""


@job("cgroup_oom")
def cgroup_oom(parent: str, name: str, limit_mb: int = 64) -> None:
    """Moves its process into a fresh memory cgroup `parent`/`name` (cgroup v1 or v2)
    limited to `limit_mb` (swap too), then takes 8 MB at a time, logging each: the kernel's
    OOM killer kills it. The caller removes the cgroup."""
    path = os.path.join(parent, name)
    os.mkdir(path)
    limit = str(limit_mb * 1024 * 1024)
    v1 = os.path.exists(os.path.join(path, "memory.limit_in_bytes"))
    limits = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"] if v1 else ["memory.max"]
    limits += [] if v1 else ["memory.swap.max"]
    for knob in limits:  # memsw after the memory limit: it may not be below it
        if os.path.exists(os.path.join(path, knob)):
            with open(os.path.join(path, knob), "w") as f:
                f.write(limit if knob != "memory.swap.max" else "0")
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    log.info("in memory cgroup %s, limited to %d MB", name, limit_mb)
    held = []
    for step in range(1, 200):
        held.append(b"\x01" * (8 * 1024 * 1024))  # written, so resident
        log.info("holds %d MB more", step * 8)
    log.error("still alive holding %d MB: the cgroup's limit did not apply", len(held) * 8)


@job("hog")
def hog(steps: int = 40, mb: int = 10, in_child: bool = False) -> None:
    """Takes `mb` more MB every 50 ms, `steps` times (in a child process if `in_child`),
    logging how much it holds; then waits. A memory limit below the total stops it."""
    if in_child:
        subprocess.run([sys.executable, "-c", _HOG, str(steps), str(mb)], check=True)
        return
    held = []
    for step in range(steps):
        held.append(bytearray(mb * 1024 * 1024))
        log.info("hog holds %d MB", (step + 1) * mb)
        time.sleep(0.05)
    time.sleep(60)


_GRANDPARENT = """import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("grandchild", grandchild.pid, flush=True)
time.sleep(120)
"""


@job("slow_tree")
def slow_tree(seconds: float = 120.0) -> None:
    """Starts a child that starts a grandchild (each printing nothing but the grandchild's
    pid; both sleep), logs the child's pid, then sleeps `seconds`."""
    child = subprocess.Popen([sys.executable, "-c", _GRANDPARENT])
    log.info("child %d", child.pid)
    time.sleep(seconds)


@job("limited_sleep", memory_mb=700, timeout_s=30)
def limited_sleep(seconds: float = 0.0) -> None:
    """Sleeps; its type's limits are 700 MB and 30 s."""
    time.sleep(seconds)


@job("quick_timeout", timeout_s=1)
def quick_timeout(seconds: float = 30.0) -> None:
    """Sleeps longer than its type's 1 s timeout allows."""
    log.info("sleeping %s s", seconds)
    time.sleep(seconds)
