"""``jobtrail worker`` options and the backend check, importable without rq or redis
installed (the CLI imports this; local mode needs neither)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from urllib.parse import urlparse

from jobtrail.terminal import stderr_logging
from jobtrail.worker.runtime import JobModuleError, import_job_modules


def is_redis_url(backend: str) -> bool:
    return urlparse(backend).scheme in ("redis", "rediss", "unix")


def check_backend(backend: str) -> str:
    """``local`` or a redis URL; anything else is a clear error."""
    if backend == "local" or is_redis_url(backend):
        return backend
    raise ValueError(
        f"backend must be 'local' or a redis URL such as redis://host:6379/0; got {backend!r}"
    )


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


def run(args: argparse.Namespace) -> int:
    if not args.backend or not is_redis_url(args.backend):
        print("jobtrail worker: --backend redis://HOST:PORT/DB is required", file=sys.stderr)
        return 2
    if args.concurrency < 1:
        print("jobtrail worker: --concurrency must be at least 1", file=sys.stderr)
        return 2
    try:
        from jobtrail.backends.redis.worker import run_workers
    except ImportError as exc:
        print(
            f"jobtrail worker: {exc}; install the extra: pip install 'jobtrail[distributed]'",
            file=sys.stderr,
        )
        return 2
    try:  # here, before any worker starts, so a module that cannot be imported is one line
        import_job_modules(args.jobs_module or (), args.app_dir)
    except JobModuleError as exc:
        print(f"jobtrail worker: {exc}", file=sys.stderr)
        return 2
    stderr_logging()
    return run_workers(args.backend, args.concurrency, args.jobs_module or (), args.playbooks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobtrail worker")
    add_arguments(parser)
    return run(parser.parse_args(argv))
