"""``jobtrail serve`` and ``jobtrail demo``: the API server in this process.

::

    serve: job modules import ─► open_service (locks the home) ─► bind the port ─► uvicorn
           (each check one line, exit 2 or 3, before any worker starts)   └─ lifespan starts
                                                                             and stops it
    demo:  a temporary home ─► service + uvicorn in a thread ─► one job followed over the
           client ─► stop, remove the home (also on Ctrl-C and SIGTERM)
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from jobtrail import secrecy
from jobtrail.cli.exits import START_FAILURE, CLIError, exit_code
from jobtrail.cli.logformat import server_logging
from jobtrail.cli.logs import follow
from jobtrail.cli.output import display
from jobtrail.cli.worker import BACKEND_ENV, secret_env_names, secret_option
from jobtrail.client import Client
from jobtrail.errors import JobModuleError
from jobtrail.registry import import_job_modules, job_types
from jobtrail.service import HomeInUse, JobService, ServerConfig
from jobtrail.service.config import check_backend, wants_log_export
from jobtrail.worker.runtime import TOKEN_ENV

if TYPE_CHECKING:
    import uvicorn  # imported when serving: client verbs start faster without it

log = logging.getLogger("jobtrail.serve")
SHUTDOWN_GRACE_SECONDS = 3  # then uvicorn cancels what is left, such as open log streams
# what each demo job type needs; the others run with their defaults
DEMO_PARAMS: dict[str, dict[str, Any]] = {"ansible_playbook": {"playbook": "demo.yml"}}


def _config(args: argparse.Namespace) -> ServerConfig:
    try:
        backend = check_backend(args.backend or "local")
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return ServerConfig(
        home=Path(args.home),
        workers=args.workers,
        start_method=args.start_method,
        job_modules=tuple(args.jobs_module or ()),
        playbooks=Path(args.playbooks) if args.playbooks else None,
        log_max_bytes=args.log_max_bytes,
        retention_hours=args.retention_hours,
        worker_nice=args.worker_nice,
        worker_cpu=args.worker_cpu,
        token=args.token or None,
        redact_patterns=tuple(args.redact or ()),
        redact_defaults=not args.no_redact,
        backend=backend,
        otlp_endpoint=args.otlp_endpoint or None,
        job_memory_mb=args.job_memory_mb,
        job_timeout=args.job_timeout,
        job_user=args.job_user or None,
        sandbox=args.sandbox,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Check what can fail in one line (job modules, the home, the port) before any worker
    starts; then uvicorn runs the app, whose lifespan starts and stops the service."""
    server_logging(args.log_format)
    _keep_secrets(args)  # first: a re-execution then repeats only the CLI's own imports
    import uvicorn

    from jobtrail.api.app import ApiServer, create_app

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
    _check_log_export(config)
    _import_job_modules(config.job_modules, args.app_dir)
    _check_isolation(config)
    service = _open_service(config)
    try:
        sock = _listen(args.host, args.port)
    except CLIError:
        service.stop()  # not started: closes its files and releases the home
        raise
    url = _url(args.host, sock.getsockname()[1])
    service.publish_address(url)
    uv = ApiServer(  # uvicorn's, ending open log streams first when it stops
        uvicorn.Config(
            create_app(server=service, start_server=True, metrics_public=args.metrics_public),
            host=args.host,
            port=args.port,
            log_level="info",
            access_log=args.access_log,
            # json: uvicorn's loggers propagate to the root's JSON handler
            log_config=None if args.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,  # open log streams must not hold it
        )
    )
    ready = [
        f"jobtrail serving on {url}  (web page {url}/ , API docs {url}/docs)",
        f"home {service.home}",
        f"job types: {', '.join(sorted(job_types()))}",
    ]
    as_log = args.log_format == "json"
    threading.Thread(
        target=_announce, args=(uv, ready, as_log), name="jobtrail-ready", daemon=True
    ).start()
    uv.run(sockets=[sock])
    return 0


def _keep_secrets(args: argparse.Namespace) -> None:
    """The token and a Redis password out of every job's reach (``jobtrail.secrecy``):
    read from their files, then out of this process's argv and environment by one
    re-execution, which comes back here with them handed over."""
    handed = secrecy.take_handover()
    if handed is not None:
        args.token = handed.get("token")
        args.backend = handed.get("backend", args.backend)
        return
    args.token = secret_option(args, "token", "--token", TOKEN_ENV)
    args.backend = secret_option(args, "backend", "--backend", BACKEND_ENV)
    secrets = {"token": args.token} if args.token else {}
    if secrecy.url_password(args.backend or ""):
        secrets["backend"] = args.backend
    secrecy.keep_out_of_proc(
        secrets, {"token": "--token", "backend": "--backend"}, secret_env_names()
    )


def _check_log_export(config: ServerConfig) -> None:
    """--otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT) without the SDK: one line, exit 2."""
    if wants_log_export(config.otlp_endpoint):
        try:
            import jobtrail.service.otel  # noqa: F401
        except ImportError as exc:
            raise CLIError(
                f"OTLP log export needs the extra ({exc}): pip install 'jobtrail[otel]'"
            ) from None


def _import_job_modules(modules: Sequence[str], app_dir: str) -> None:
    try:
        import_job_modules(modules, app_dir)
    except JobModuleError as exc:
        raise CLIError(str(exc)) from None


def _check_isolation(config: ServerConfig) -> None:
    """--job-user / --sandbox that cannot work (no such user, not root, a path the user
    cannot reach): one line, exit 2, before the home is opened."""
    from jobtrail import isolation

    if (config.job_user or config.sandbox) and config.backend != "local":
        raise CLIError(
            "--job-user and --sandbox apply where jobs run: pass them to jobtrail worker"
        )
    try:
        chosen = isolation.prepare(
            config.job_user,
            config.sandbox,
            home=config.home,
            playbooks=config.playbooks,
            sys_path=sys.path,
        )
        isolation.check_reachable(
            chosen, config.job_modules, playbooks=config.playbooks, sys_path=sys.path
        )
    except isolation.IsolationError as exc:
        raise CLIError(str(exc)) from None


def _open_service(config: ServerConfig) -> JobService:
    from jobtrail.backends import open_service

    try:
        return open_service(config)
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


def _announce(uv: uvicorn.Server, lines: list[str], as_log: bool) -> None:
    """Print where jobtrail serves once uvicorn is serving (``started`` is set after the
    app's startup, with the socket listening); nothing if it stops first. ``as_log``: as
    log records instead (``--log-format json``: every line the server writes is JSON)."""
    while not uv.started:
        if uv.should_exit:
            return
        time.sleep(0.05)
    if as_log:
        for line in lines:
            log.info("%s", line)
    else:
        print("\n".join(lines), flush=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- demo -----------------------------------------------------------------------------------
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_demo(args: argparse.Namespace, home: Path) -> int:
    import uvicorn

    from jobtrail.api.app import ApiServer, create_app

    shown = display(args)
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    service = _open_service(ServerConfig(home=home, workers=2))
    uv = ApiServer(  # open log streams end at once when the demo stops
        uvicorn.Config(
            create_app(server=service),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    service.publish_address(url)
    try:
        service.start()
        thread.start()
        # a hang's limit: a server that fails exits its thread, seen at once; a loaded
        # machine (CI runs the tests four at a time) may take well over 15 s to start it
        deadline = time.monotonic() + 60
        while not uv.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise CLIError("the demo server did not start")
            time.sleep(0.05)
        with Client(url) as client:
            job = client.submit(args.type, DEMO_PARAMS.get(args.type, {}))
            print(
                f"jobtrail demo: server at {url} (home {home}); running job {job.job_id}\n",
                flush=True,
            )
            job = follow(client, job.job_id, shown)
        print(f"\n{shown.summary(job.raw)}")
        if args.keep:
            print("\nServing until Ctrl-C; try:")
        else:
            print("\nThe demo server stops now; run `jobtrail demo --keep` to keep it up and try:")
        print(f"  curl {url}/api/jobs/{job.job_id}")
        print(f"  curl '{url}/api/jobs/{job.job_id}/logs?tail=20&level=WARNING'")
        print(f"  curl {url}/api/jobs\n  open {url}/ for the web page, {url}/docs for the API")
        print("", flush=True)
        if args.keep:
            while thread.is_alive():
                thread.join(0.5)
        return exit_code(job)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # from here on the cleanup is the way out
        uv.should_exit = True
        if thread.is_alive():
            thread.join(10)
        service.stop()
