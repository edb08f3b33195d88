"""``jobtrail worker``: run jobs from a redis backend (distributed mode).

Checked here, each as one line before any worker starts: the backend URL, the concurrency,
the distributed extra (rq, redis) and the job modules. Then
``jobtrail.backends.redis.worker.run_workers`` runs the RQ workers until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from jobtrail import secrecy
from jobtrail.cli.exits import CLIError
from jobtrail.cli.logformat import add_log_format_argument, logs_json, server_logging
from jobtrail.errors import JobModuleError, JobtrailError
from jobtrail.limits import server_limits
from jobtrail.registry import import_job_modules
from jobtrail.service.config import is_redis_url
from jobtrail.worker.runtime import TOKEN_ENV

BACKEND_ENV = "JOBTRAIL_BACKEND"
log = logging.getLogger("jobtrail.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``jobtrail worker``."""
    parser.add_argument(
        "--backend",
        default=os.environ.get(BACKEND_ENV, ""),
        help="redis://HOST:PORT/DB, the same as the API servers' (env JOBTRAIL_BACKEND)",
    )
    add_backend_file_argument(parser)
    parser.add_argument(
        "--concurrency", type=int, default=os.cpu_count() or 2, help="jobs at a time"
    )
    add_job_module_arguments(parser)
    parser.add_argument("--playbooks", help="directory of Ansible playbooks")
    add_limit_arguments(parser)
    parser.add_argument(
        "--job-user",
        metavar="USER",
        help="run every job's process as USER, with a private TMPDIR/HOME (needs root)",
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="with --job-user: each job sees a read-only system, a /tmp of its own and "
        "no home (/root, /home)",
    )
    add_log_format_argument(parser, "the worker's")


def add_backend_file_argument(parser: argparse.ArgumentParser) -> None:
    """--backend-file, the same for ``serve`` and ``worker``."""
    parser.add_argument(
        "--backend-file",
        metavar="PATH",
        help="read the backend URL (one with a Redis password) from PATH, which only this "
        "user may read, so the password shows in no process's command line or environment",
    )


def secret_option(args: argparse.Namespace, name: str, option: str, env: str) -> str | None:
    """The value of a secret ``option`` (``--token``, ``--backend``): from its file
    (``option``-file) if given, else as parsed (the option, else ``env``). Warns, one
    line, when it was given on the command line, where anyone on the host can read it
    until the command re-executes without it (``jobtrail.secrecy``)."""
    path = getattr(args, f"{name}_file", None)
    given = any(arg == option or arg.startswith(f"{option}=") for arg in sys.argv[1:])
    if path:
        if given:
            raise CLIError(f"give {option} or {option}-file, not both")
        try:
            return secrecy.read_secret_file(path, f"{option}-file")
        except secrecy.SecretFileError as exc:
            raise CLIError(str(exc)) from None
    value: str | None = getattr(args, name)
    if given and value and (name == "token" or secrecy.url_password(value)):
        log.warning(
            "%s on the command line is visible to every user of this host "
            "until jobtrail re-executes without it; use %s-file or env %s",
            option,
            option,
            env,
        )
    return value


def secret_env_names() -> list[str]:
    """The variables a job must not find in a jobtrail process's ``/proc/PID/environ``:
    the token, and the backend URL when it holds a password."""
    names = [TOKEN_ENV]
    if secrecy.url_password(os.environ.get(BACKEND_ENV, "")):
        names.append(BACKEND_ENV)
    return names


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """--job-memory-mb and --job-timeout, the same for ``serve`` and ``worker``."""
    parser.add_argument(
        "--job-memory-mb",
        type=_at_least_zero(int),
        default=0,
        metavar="MB",
        help="memory limit of a job's process tree when neither the submission nor its job "
        "type sets one (0: none)",
    )
    parser.add_argument(
        "--job-timeout",
        type=_at_least_zero(float),
        default=0.0,
        metavar="SECONDS",
        help="a job's timeout when neither the submission nor its job type sets one (0: none)",
    )


def _at_least_zero(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be 0 (none) or more; got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def add_job_module_arguments(parser: argparse.ArgumentParser) -> None:
    """--jobs-module and --app-dir, the same for ``serve`` and ``worker``."""
    parser.add_argument(
        "--jobs-module",
        action="append",
        metavar="MODULE",
        help="module that registers job types (repeatable), looked up in --app-dir first",
    )
    parser.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="put DIR first on the import path of the server and its workers, as uvicorn "
        "does (default: '.', the current directory)",
    )


def _refuse(message: str) -> int:
    if logs_json():
        log.error("jobtrail worker: %s", message)
    else:
        print(f"jobtrail worker: {message}", file=sys.stderr)
    return 2


def cmd_worker(args: argparse.Namespace) -> int:
    server_logging(args.log_format)
    handed = secrecy.take_handover()
    if handed is not None:
        args.backend = handed.get("backend", args.backend)
    else:
        try:
            args.backend = secret_option(args, "backend", "--backend", BACKEND_ENV) or ""
        except CLIError as exc:
            return _refuse(str(exc))
        secret = {"backend": args.backend} if secrecy.url_password(args.backend) else {}
        secrecy.keep_out_of_proc(secret, {"backend": "--backend"}, secret_env_names())
    if not args.backend or not is_redis_url(args.backend):
        return _refuse("--backend redis://HOST:PORT/DB is required")
    if args.concurrency < 1:
        return _refuse("--concurrency must be at least 1")
    try:
        from jobtrail.backends.redis._job_image import check_reachable
        from jobtrail.backends.redis._pidns import job_isolation
        from jobtrail.backends.redis.worker import run_workers
    except ImportError as exc:
        return _refuse(f"{exc}; install the extra: pip install 'jobtrail[distributed]'")
    try:  # here, before any worker starts, so a module that cannot be imported is one line
        import_job_modules(args.jobs_module or (), args.app_dir)
    except JobModuleError as exc:
        return _refuse(str(exc))
    try:
        isolation = job_isolation(args.job_user, args.sandbox, args.playbooks)
        check_reachable(isolation, args.jobs_module or (), args.playbooks)  # what jobs exec
    except JobtrailError as exc:  # IsolationError: no such user, not root
        return _refuse(str(exc))
    return run_workers(
        args.backend,
        args.concurrency,
        args.jobs_module or (),
        args.playbooks,
        server_limits(args.job_memory_mb, args.job_timeout),
        isolation,
    )
