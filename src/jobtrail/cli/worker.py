"""``jobtrail worker``: run jobs from a redis backend (distributed mode).

Checked here, each as one line before any worker starts: the backend URL, the concurrency,
the distributed extra (rq, redis) and the job modules. Then
``jobtrail.backends.redis.worker.run_workers`` runs the RQ workers until SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from jobtrail.cli.output import stderr_logging
from jobtrail.errors import JobModuleError
from jobtrail.limits import server_limits
from jobtrail.registry import import_job_modules
from jobtrail.service.config import is_redis_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``jobtrail worker``."""
    parser.add_argument(
        "--backend",
        default=os.environ.get("JOBTRAIL_BACKEND", ""),
        help="redis://HOST:PORT/DB, the same as the API servers' (env JOBTRAIL_BACKEND)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=os.cpu_count() or 2, help="jobs at a time"
    )
    add_job_module_arguments(parser)
    parser.add_argument("--playbooks", help="directory of Ansible playbooks")
    add_limit_arguments(parser)


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
    print(f"jobtrail worker: {message}", file=sys.stderr)
    return 2


def cmd_worker(args: argparse.Namespace) -> int:
    if not args.backend or not is_redis_url(args.backend):
        return _refuse("--backend redis://HOST:PORT/DB is required")
    if args.concurrency < 1:
        return _refuse("--concurrency must be at least 1")
    try:
        from jobtrail.backends.redis.worker import run_workers
    except ImportError as exc:
        return _refuse(f"{exc}; install the extra: pip install 'jobtrail[distributed]'")
    try:  # here, before any worker starts, so a module that cannot be imported is one line
        import_job_modules(args.jobs_module or (), args.app_dir)
    except JobModuleError as exc:
        return _refuse(str(exc))
    stderr_logging()
    return run_workers(
        args.backend,
        args.concurrency,
        args.jobs_module or (),
        args.playbooks,
        server_limits(args.job_memory_mb, args.job_timeout),
    )
