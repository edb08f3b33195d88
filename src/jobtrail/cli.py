"""The `jobtrail` command: run the server, and talk to it from a terminal."""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import ipaddress
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import httpx

from jobtrail.registry import job_types
from jobtrail.service.service import (
    START_METHODS,
    HomeInUse,
    JobServer,
    ServerConfig,
    default_home,
    default_start_method,
    open_server,
)
from jobtrail.terminal import TERMINAL, Display, stderr_logging
from jobtrail.worker.runtime import TOKEN_ENV, JobModuleError, import_job_modules

if TYPE_CHECKING:
    import uvicorn  # imported when serving: client verbs start faster without it

DEFAULT_URL = "http://127.0.0.1:8765"
SHUTDOWN_GRACE_SECONDS = 3  # then uvicorn cancels what is left, such as open log streams
RECENT_LOGS = 50  # the job JSON's recent_logs: more lines than this come from /logs
START_FAILURE = 3  # serve could not start: the home or the port is taken (uvicorn's code too)


class CLIError(Exception):
    """A message for the person at the terminal; printed without a traceback."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
    (type(None), "null"),
)


def _schema_types(prop: dict[str, Any]) -> set[str] | None:
    """The JSON types a parameter's schema accepts; None when it does not say (Any)."""
    options = prop.get("anyOf") or prop.get("oneOf") or [prop]
    types: set[str] = set()
    for option in options:
        kind = option.get("type")
        if kind is None:
            return None
        types.update(kind if isinstance(kind, list) else [kind])
    if "number" in types:
        types.add("integer")
    return types


def _json_type(value: Any) -> str:
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def _params(pairs: Sequence[str], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """key=value pairs; values are read as JSON when they parse (3, true, [1]) and text otherwise.

    With the job type's ``schema``, a value stays text when the parameter takes a string but
    not what the JSON reading gave: ``name=123`` or ``tag=true`` for a ``str`` parameter.
    """
    properties = (schema or {}).get("properties", {})
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"params are key=value; got {pair!r}")
        try:
            parsed = json.loads(value)
        except ValueError:
            params[key] = value
            continue
        accepted = _schema_types(properties[key]) if key in properties else None
        if accepted is not None and "string" in accepted and _json_type(parsed) not in accepted:
            parsed = value
        params[key] = parsed
    return params


# -- client ---------------------------------------------------------------------------------
class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CLIError(f"cannot reach the jobtrail server at {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise CLIError(f"{response.status_code}: {detail}")
        return response.json()

    def wait(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job once it ended, polled from its JSON."""
        while job["status"] not in TERMINAL:
            time.sleep(0.3)
            job = self.request("GET", f"/api/jobs/{job['job_id']}")
        return job

    def follow(
        self, job_id: str, display: Display, after: int = 0, level: str = "DEBUG"
    ) -> dict[str, Any]:
        """Print the job's records as they come (from its log stream), until it ends; returns
        the final job. A dropped connection is resumed where it stopped (``Last-Event-ID``),
        retrying with a short backoff for up to ``FOLLOW_RETRY_SECONDS``."""
        cursor = after
        failing_since: float | None = None
        delay = 0.2
        while True:
            try:
                ended = self._stream(job_id, display, cursor, level)
                if ended is not None:
                    return ended
                problem = "the server closed the stream before the job ended"
            except _Progress as moved:  # records came, then the connection dropped
                cursor = moved.cursor
                problem = str(moved.__cause__ or "connection lost")
                failing_since, delay = None, 0.2
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
            now = time.monotonic()
            failing_since = failing_since if failing_since is not None else now
            if now - failing_since > FOLLOW_RETRY_SECONDS:
                raise CLIError(
                    f"lost the log stream of {job_id} at {self.url} for "
                    f"{FOLLOW_RETRY_SECONDS:g}s: {problem}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _stream(
        self, job_id: str, display: Display, cursor: int, level: str
    ) -> dict[str, Any] | None:
        """One connection to the stream: the final job once it ended, None if the stream
        closed early; ``_Progress`` (with the new cursor) if it broke after records came."""
        headers = {"Last-Event-ID": str(cursor)}
        params = {"after": str(cursor), "level": level}
        timeout = httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT)
        path = f"/api/jobs/{job_id}/logs/stream"
        start = cursor
        try:
            with self.http.stream(
                "GET", path, params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                parser = SSEParser()
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    if event.event == "record":
                        print(display.record(json.loads(event.data)), flush=True)
                        cursor = int(event.id or cursor)
                    elif event.event == "gap":
                        gap = json.loads(event.data)
                        print(
                            f"jobtrail: records {gap['from']}-{gap['to']} were removed by log "
                            "rotation before they could be shown",
                            file=sys.stderr,
                            flush=True,
                        )
                        cursor = int(gap["to"])
                    elif event.event == "end":
                        return dict(self.request("GET", f"/api/jobs/{job_id}"))
                    elif event.event == "shutdown":  # a restart would not resume this stream
                        job = json.loads(event.data)
                        raise CLIError(
                            f"the server at {self.url} is stopping; job {job_id} was still "
                            f"{job['status']} (follow it again: jobtrail logs {job_id} -f)"
                        )
        except httpx.TransportError as exc:
            if cursor != start:
                raise _Progress(cursor) from exc
            raise
        if cursor != start:
            raise _Progress(cursor)
        return None

    def _raise_for(self, response: httpx.Response) -> None:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise CLIError(f"{response.status_code}: {detail}")


FOLLOW_RETRY_SECONDS = 30.0
STREAM_READ_TIMEOUT = 45.0  # the server sends a keep-alive comment every 15 s


class _Progress(Exception):
    """A stream connection ended after moving the cursor (so the retry window restarts)."""

    def __init__(self, cursor: int) -> None:
        super().__init__(f"stream ended at seq {cursor}")
        self.cursor = cursor


@dataclass
class SSEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


class SSEParser:
    """Server-Sent Events, line by line (https://html.spec.whatwg.org/#event-stream-interpretation):
    ``feed`` each line without its line ending; a blank line completes an event."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SSEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SSEvent(self._event or "message", "\n".join(self._data), self.last_id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None


def _exit_code(job: dict[str, Any]) -> int:
    return {"completed": 0, "cancelled": 3}.get(job["status"], 1)


# -- verbs ----------------------------------------------------------------------------------
def _config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        home=Path(args.home),
        workers=args.workers,
        start_method=args.start_method,
        job_modules=tuple(args.jobs_module or ()),
        playbooks=Path(args.playbooks) if args.playbooks else None,
        log_max_bytes=args.log_max_bytes,
        retention_hours=args.retention_hours,
        worker_nice=args.worker_nice,
        token=args.token or None,
        redact_patterns=tuple(args.redact or ()),
        redact_defaults=not args.no_redact,
        backend=_backend(getattr(args, "backend", None) or "local"),
    )


def _backend(value: str) -> str:
    from jobtrail.backends.redis.command import check_backend

    try:
        return check_backend(value)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Check what can fail in one line (job modules, the home, the port) before any worker
    starts; then uvicorn runs the app, whose lifespan starts and stops the server."""
    import uvicorn

    from jobtrail.api.app import create_app
    from jobtrail.api.serving import ApiServer

    stderr_logging()
    os.environ.pop(TOKEN_ENV, None)  # job processes must not inherit it
    # The listener and stream threads share the GIL with the event loop: a request waits for
    # the GIL up to this long (default 5 ms) while they work. At 1 ms, GET /api/jobs/{id} p99
    # with 4 jobs flooding went from 4.7-5.9 ms to 4.3-4.4 ms (benchmarks/api_latency.py).
    sys.setswitchinterval(0.001)
    if not args.token and not args.insecure and not _is_loopback(args.host):
        raise CLIError(
            f"refusing to serve on {args.host} without a token: anyone who reaches it could "
            "run jobs. Set --token (or JOBTRAIL_TOKEN), or pass --insecure if you mean it."
        )
    config = _config(args)
    _import_job_modules(config.job_modules, args.app_dir)
    server = _open_server(config)
    try:
        sock = _listen(args.host, args.port)
    except CLIError:
        server.stop()  # not started: closes its files and releases the home
        raise
    url = _url(args.host, sock.getsockname()[1])
    server.publish_address(url)
    uv = ApiServer(  # uvicorn's, ending open log streams first when it stops
        uvicorn.Config(
            create_app(server=server, start_server=True),
            host=args.host,
            port=args.port,
            log_level="info",
            access_log=args.access_log,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,  # open log streams must not hold it
        )
    )
    ready = [
        f"jobtrail serving on {url}  (web page {url}/ , API docs {url}/docs)",
        f"home {server.home}",
        f"job types: {', '.join(sorted(job_types()))}",
    ]
    threading.Thread(target=_announce, args=(uv, ready), name="jobtrail-ready", daemon=True).start()
    uv.run(sockets=[sock])
    return 0


def _import_job_modules(modules: Sequence[str], app_dir: str) -> None:
    try:
        import_job_modules(modules, app_dir)
    except JobModuleError as exc:
        raise CLIError(str(exc)) from None


def _open_server(config: ServerConfig) -> JobServer:
    try:
        return open_server(config)
    except HomeInUse as exc:
        raise CLIError(str(exc), code=START_FAILURE) from None
    except ImportError as exc:  # --backend redis://… without the extra installed
        raise CLIError(f"{exc}; install the extra: pip install 'jobtrail[distributed]'") from None


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound now so that a port in use is one line before any worker
    starts (uvicorn would find out only after the app's startup)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CLIError(
                f"port {port} on {host} is in use by another program (pick another --port)",
                code=START_FAILURE,
            ) from None
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announce(uv: uvicorn.Server, lines: list[str]) -> None:
    """Print where jobtrail serves once uvicorn is serving (``started`` is set after the
    app's startup, with the socket listening); nothing if it stops first."""
    while not uv.started:
        if uv.should_exit:
            return
        time.sleep(0.05)
    print("\n".join(lines), flush=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_submit(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    display = _display(args)
    schema = None
    if args.params:
        for job_type in client.request("GET", "/api/job-types"):
            if job_type["name"] == args.type:
                schema = job_type["params_schema"]
    params = _params(args.params, schema)
    job = client.request("POST", "/api/jobs", json={"type": args.type, "params": params})
    if args.follow:
        job = client.follow(job["job_id"], display)
    elif args.wait:
        job = client.wait(job)
    print(json.dumps(job, indent=2) if args.json else display.summary(job))
    return _exit_code(job) if (args.follow or args.wait) else 0


def cmd_jobs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.type:
        params["type"] = args.type
    listing = Client(args.url, args.token).request("GET", "/api/jobs", params=params)
    if args.json:
        print(json.dumps(listing, indent=2))
    elif not listing["jobs"]:
        print("no jobs" + (" match" if args.status or args.type else " yet"))
    else:
        print("\n".join(_display(args).jobs_table(listing["jobs"], time.time())))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    job = client.request("GET", f"/api/jobs/{args.job_id}")
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    records = list(reversed(job.get("recent_logs") or []))  # they come newest first
    if args.lines > RECENT_LOGS and not job.get("logs_expired"):
        page = client.request(
            "GET",
            f"/api/jobs/{args.job_id}/logs",
            params={"tail": args.lines, "format": "json"},
        )
        records = page["logs"]
    records = records[-args.lines :] if args.lines > 0 else []
    print("\n".join(_display(args).job_details(job, records, time.time())))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    display = _display(args)
    page = client.request(
        "GET",
        f"/api/jobs/{args.job_id}/logs",
        params={"tail": args.tail, "level": args.level, "format": "json"},
    )
    if args.json and not args.follow:
        print(json.dumps(page, indent=2))
        return 0
    for record in page["logs"]:
        print(display.record(record), flush=True)
    if not args.follow:
        return 0
    job = client.follow(args.job_id, display, after=page["last_seq"] or 0, level=args.level)
    return _exit_code(job)


def cmd_cancel(args: argparse.Namespace) -> int:
    """Print what the cancel did: a pending job is cancelled at once; a running one is
    still running (``cancel_requested``) until its process has stopped."""
    client = Client(args.url, args.token)
    display = _display(args)
    job = client.request("POST", f"/api/jobs/{args.job_id}/cancel")
    if not (args.json and args.wait):
        print(json.dumps(job, indent=2) if args.json else _cancel_line(job, display), flush=True)
    if not args.wait:
        return 0
    job = client.wait(job)
    print(json.dumps(job, indent=2) if args.json else display.summary(job))
    return _exit_code(job)


def _cancel_line(job: dict[str, Any], display: Display) -> str:
    # the cancel was accepted, so a job not ended yet is being stopped
    requested = job.get("cancel_requested") or job["status"] not in TERMINAL
    return display.summary(job) + (" — cancel requested" if requested else "")


def cmd_cleanup(args: argparse.Namespace) -> int:
    from jobtrail.backends.local.records import JobDB
    from jobtrail.logstore.store import JobLogStore
    from jobtrail.service.retention import expire_logs

    home = Path(args.home).expanduser()
    if not (home / "jobs.sqlite3").exists():
        raise CLIError(f"no jobtrail home at {home} (set --home or JOBTRAIL_HOME)")
    db = JobDB(home / "jobs.sqlite3")
    store = JobLogStore(home / "logs")
    try:
        expired = expire_logs(db, store, args.older_than, dry_run=args.dry_run)
    finally:
        store.close()
        db.close()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} the logs of {len(expired)} job(s) older than {args.older_than:g} h")
    for job_id in expired:
        print(f"  {job_id}")
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# what each demo job type needs; the others run with their defaults
DEMO_PARAMS: dict[str, dict[str, Any]] = {"ansible_playbook": {"playbook": "demo.yml"}}


class _Terminated(BaseException):
    """SIGTERM reached the demo: unwind through its ``finally`` (as Ctrl-C does)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise _Terminated()


def cmd_demo(args: argparse.Namespace) -> int:
    """A server on a temporary home, one demo job followed to its end; the home is removed
    however the demo ends: the job's end, Ctrl-C or SIGTERM."""
    home = Path(tempfile.mkdtemp(prefix="jobtrail-demo-"))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run_demo(args, home)
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        # 143, as a shell reports SIGTERM; a normal exit, so multiprocessing's exit handlers
        # still remove their own temporary files
        return 128 + signal.SIGTERM
    finally:
        shutil.rmtree(home, ignore_errors=True)  # a demo leaves nothing behind
        signal.signal(signal.SIGTERM, previous)


def _run_demo(args: argparse.Namespace, home: Path) -> int:
    import uvicorn

    from jobtrail.api.app import create_app
    from jobtrail.api.serving import ApiServer

    display = _display(args)
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    server = JobServer(ServerConfig(home=home, workers=2))
    uv = ApiServer(  # open log streams end at once when the demo stops
        uvicorn.Config(
            create_app(server=server),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    server.publish_address(url)
    try:
        server.start()
        thread.start()
        deadline = time.monotonic() + 15
        while not uv.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise CLIError("the demo server did not start")
            time.sleep(0.05)
        client = Client(url)
        params = DEMO_PARAMS.get(args.type, {})
        job = client.request("POST", "/api/jobs", json={"type": args.type, "params": params})
        job_id = job["job_id"]
        print(f"jobtrail demo: server at {url} (home {home}); running job {job_id}\n", flush=True)
        job = client.follow(job_id, display)
        print(f"\n{display.summary(job)}")
        if args.keep:
            print("\nServing until Ctrl-C; try:")
        else:
            print("\nThe demo server stops now; run `jobtrail demo --keep` to keep it up and try:")
        print(f"  curl {url}/api/jobs/{job_id}")
        print(f"  curl '{url}/api/jobs/{job_id}/logs?tail=20&level=WARNING'")
        print(f"  curl {url}/api/jobs\n  open {url}/ for the web page, {url}/docs for the API")
        print("", flush=True)
        if args.keep:
            while thread.is_alive():
                thread.join(0.5)
        return _exit_code(job)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # from here on the cleanup is the way out
        uv.should_exit = True
        if thread.is_alive():
            thread.join(10)
        server.stop()


def _use_colour() -> bool:
    return sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


def _display(args: argparse.Namespace) -> Display:
    """Colours and the error column's width only on a terminal; UTC unless --local-time."""
    tty = sys.stdout.isatty()
    return Display(
        colour=_use_colour(),
        tz=None if getattr(args, "local_time", False) else timezone.utc,
        width=shutil.get_terminal_size().columns if tty else None,
    )


def _version() -> str:
    try:
        return importlib.metadata.version("jobtrail")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from jobtrail.backends.redis import command as distributed

    parser = argparse.ArgumentParser(prog="jobtrail", description=__doc__)
    parser.add_argument("--version", action="version", version=f"jobtrail {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_local_time(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--local-time",
            action="store_true",
            help="show times in this machine's time zone, with their offset (default: UTC, 'Z')",
        )

    def client_verb(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument(
            "--token",
            default=os.environ.get(TOKEN_ENV),
            help="bearer token of a server started with one (env JOBTRAIL_TOKEN)",
        )
        p.add_argument(
            "--url",
            default=os.environ.get("JOBTRAIL_URL", DEFAULT_URL),
            help="server URL (env JOBTRAIL_URL)",
        )
        p.add_argument("--json", action="store_true", help="print the API's JSON")
        add_local_time(p)
        return p

    serve = sub.add_parser("serve", help="run the API server and its worker pool")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free one")
    serve.add_argument(
        "--home", default=str(default_home()), help="data directory (env JOBTRAIL_HOME)"
    )
    serve.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    serve.add_argument("--start-method", choices=START_METHODS, default=default_start_method())
    distributed.add_job_module_arguments(serve)
    serve.add_argument("--playbooks", help="directory of Ansible playbooks")
    serve.add_argument(
        "--log-max-bytes", type=int, default=10 * 1024 * 1024, help="size of one log segment"
    )
    serve.add_argument("--retention-hours", type=float, default=72.0)
    serve.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        help="CPU niceness of job processes (0: same as server)",
    )
    serve.add_argument(
        "--access-log", action="store_true", help="log every request (costs CPU under load)"
    )
    serve.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help="require 'Authorization: Bearer TOKEN' on every endpoint but /api/health "
        "(env JOBTRAIL_TOKEN)",
    )
    serve.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without a token"
    )
    serve.add_argument(
        "--redact",
        action="append",
        metavar="REGEX",
        help="also mask matches (or their groups) in job output (repeatable)",
    )
    serve.add_argument(
        "--no-redact", action="store_true", help="turn off the built-in secret patterns"
    )
    serve.add_argument(
        "--backend",
        default=os.environ.get("JOBTRAIL_BACKEND", "local"),
        help="'local' (default: pool, SQLite, files) or redis://HOST:PORT/DB to run jobs on "
        "`jobtrail worker` processes on any host (env JOBTRAIL_BACKEND)",
    )
    serve.set_defaults(func=cmd_serve)

    submit = client_verb("submit", "submit a job: TYPE key=value ...")
    submit.add_argument("type")
    submit.add_argument("params", nargs="*", metavar="key=value")
    submit.add_argument(
        "--wait", action="store_true", help="wait for the job to end; exit with its status"
    )
    submit.add_argument("--follow", "-f", action="store_true", help="print its log as it runs")
    submit.set_defaults(func=cmd_submit)

    jobs = client_verb("jobs", "list jobs, newest first")
    jobs.add_argument("--status", choices=["pending", "running", *TERMINAL])
    jobs.add_argument("--type")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.set_defaults(func=cmd_jobs)

    show = client_verb("show", "one job: status, times, error, failure digest, newest lines")
    show.add_argument("job_id")
    show.add_argument(
        "--lines", type=int, default=10, metavar="N", help="newest log lines to show (0: none)"
    )
    show.set_defaults(func=cmd_show)

    logs = client_verb("logs", "print a job's log")
    logs.add_argument("job_id")
    logs.add_argument("--tail", type=int, default=100)
    logs.add_argument("--level", default="DEBUG", type=str.upper)
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing until the job ends"
    )
    logs.set_defaults(func=cmd_logs)

    cancel = client_verb("cancel", "cancel a pending or running job")
    cancel.add_argument("job_id")
    cancel.add_argument(
        "--wait",
        action="store_true",
        help="wait until the job has stopped; exit with its status (3 once cancelled)",
    )
    cancel.set_defaults(func=cmd_cancel)

    worker = sub.add_parser("worker", help="run jobs from a redis backend (distributed mode)")
    distributed.add_arguments(worker)
    worker.set_defaults(func=distributed.run)

    cleanup = sub.add_parser("cleanup", help="delete logs past retention")
    cleanup.add_argument("--home", default=str(default_home()))
    cleanup.add_argument("--older-than", type=float, default=72.0, metavar="HOURS")
    cleanup.add_argument("--dry-run", action="store_true")
    cleanup.set_defaults(func=cmd_cleanup)

    demo = sub.add_parser("demo", help="start a server on a temporary home and run a demo job")
    demo.add_argument("--type", default="demo", help="job type to run")
    demo.add_argument("--port", type=int, default=0)
    demo.add_argument("--keep", action="store_true", help="keep serving after the job ends")
    add_local_time(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # inside the try: output into a closed pipe fails here
        return code
    except CLIError as exc:
        print(f"jobtrail: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("jobtrail: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`jobtrail jobs | head -1`): stop quietly, as `git log | head`
        # does. Python's "Note on SIGPIPE": point stdout at devnull, so the flush at exit
        # cannot fail again, and exit as a process ended by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
