"""The command line: one sub-command per verb, each set to the function that runs it."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
from typing import TypeAlias

from jobtrail.cli import cleanup, completion, jobs, logs, report, serve, worker
from jobtrail.cli import mcp as mcp_verb
from jobtrail.cli.logformat import add_log_format_argument
from jobtrail.client import DEFAULT_URL
from jobtrail.models import JobStatus
from jobtrail.service.config import (
    START_METHODS,
    WORKER_CPU,
    default_home,
    default_start_method,
)
from jobtrail.worker.runtime import TOKEN_ENV

DESCRIPTION = "The `jobtrail` command: run the server, and talk to it from a terminal."
Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _version() -> str:
    try:
        return importlib.metadata.version("jobtrail")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobtrail", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"jobtrail {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_client_verbs(sub)
    mcp_verb.add_verb(sub)
    completion.add_verb(sub, parser)
    work = sub.add_parser("worker", help="run jobs from a redis backend (distributed mode)")
    worker.add_arguments(work)
    work.set_defaults(func=worker.cmd_worker)

    clean = sub.add_parser("cleanup", help="delete logs past retention")
    clean.add_argument("--home", default=str(default_home()))
    clean.add_argument("--older-than", type=float, default=72.0, metavar="HOURS")
    clean.add_argument("--dry-run", action="store_true")
    clean.set_defaults(func=cleanup.cmd_cleanup)

    demo = sub.add_parser("demo", help="start a server on a temporary home and run a demo job")
    demo.add_argument("--type", default="demo", help="job type to run")
    demo.add_argument("--port", type=int, default=0)
    demo.add_argument("--keep", action="store_true", help="keep serving after the job ends")
    _add_local_time(demo)
    demo.set_defaults(func=serve.cmd_demo)
    return parser


def _add_local_time(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--local-time",
        action="store_true",
        help="show times in this machine's time zone, with their offset (default: UTC, 'Z')",
    )


def _add_serve(sub: Verbs) -> None:
    p = sub.add_parser("serve", help="run the API server and its worker pool")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free one")
    p.add_argument("--home", default=str(default_home()), help="data directory (env JOBTRAIL_HOME)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--start-method", choices=START_METHODS, default=default_start_method())
    worker.add_job_module_arguments(p)
    p.add_argument("--playbooks", help="directory of Ansible playbooks")
    p.add_argument(
        "--log-max-bytes", type=int, default=10 * 1024 * 1024, help="size of one log segment"
    )
    p.add_argument("--retention-hours", type=float, default=72.0)
    p.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        help="CPU niceness of job processes (0: same as server)",
    )
    p.add_argument(
        "--worker-cpu",
        choices=WORKER_CPU,
        default="nice",
        help="with a nice above 0, how jobs run below the server: at that nice (nice), or "
        "also in an idle cpu cgroup that any other task preempts at once (idle: they then "
        "get only CPU time nothing else of the host wants)",
    )
    worker.add_limit_arguments(p)
    add_isolation_arguments(p)
    p.add_argument(
        "--access-log", action="store_true", help="log every request (costs CPU under load)"
    )
    p.add_argument(
        "--metrics-public",
        action="store_true",
        help="serve /metrics without the token (for a Prometheus that cannot send one)",
    )
    add_log_format_argument(p, "the server's")
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help="require 'Authorization: Bearer TOKEN' on every endpoint but /api/health "
        "(env JOBTRAIL_TOKEN)",
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="read the token from PATH, which only this user may read (as ssh wants of a "
        "key): it then shows in no process's command line or environment",
    )
    p.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without a token"
    )
    p.add_argument(
        "--redact",
        action="append",
        metavar="REGEX",
        help="also mask matches (or their groups) in job output (repeatable)",
    )
    p.add_argument("--no-redact", action="store_true", help="turn off the built-in secret patterns")
    p.add_argument(
        "--backend",
        default=os.environ.get("JOBTRAIL_BACKEND", "local"),
        help="'local' (default: pool, SQLite, files) or redis://HOST:PORT/DB to run jobs on "
        "`jobtrail worker` processes on any host (env JOBTRAIL_BACKEND)",
    )
    worker.add_backend_file_argument(p)
    p.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export every record as an OpenTelemetry log to this OTLP/HTTP receiver, such as "
        "http://collector:4318 (also env OTEL_EXPORTER_OTLP_ENDPOINT; extra 'otel')",
    )
    p.set_defaults(func=serve.cmd_serve)


def add_isolation_arguments(p: argparse.ArgumentParser) -> None:
    """``--job-user`` and ``--sandbox`` (jobtrail.isolation), for whatever runs jobs."""
    p.add_argument(
        "--job-user",
        metavar="USER",
        help="run every job as USER (the server runs as root): a job then cannot read the "
        "home, other jobs' files, nor signal the server or other jobs",
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="run each worker under bubblewrap: a read-only system, a /tmp of its own, the "
        "home hidden (apt-get install bubblewrap)",
    )


def _add_client_verbs(sub: Verbs) -> None:
    """The verbs that talk to a running server over ``jobtrail.client``."""

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
        _add_local_time(p)
        return p

    submit = client_verb("submit", "submit a job: TYPE key=value ...")
    submit.add_argument("type")
    submit.add_argument("params", nargs="*", metavar="key=value")
    submit.add_argument(
        "--wait", action="store_true", help="wait for the job to end; exit with its status"
    )
    submit.add_argument("--follow", "-f", action="store_true", help="print its log as it runs")
    submit.add_argument(
        "--memory-mb",
        type=int,
        metavar="MB",
        help="memory limit of the job's process tree (default: its type's, else the server's)",
    )
    submit.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="fail the job after this long (default: its type's, else the server's)",
    )
    submit.set_defaults(func=jobs.cmd_submit)

    listing = client_verb("jobs", "list jobs, newest first")
    listing.add_argument("--status", choices=[status.value for status in JobStatus])
    listing.add_argument("--type")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=jobs.cmd_jobs)

    show = client_verb("show", "one job: status, times, error, failure digest, newest lines")
    show.add_argument("job_id")
    show.add_argument(
        "--lines", type=int, default=10, metavar="N", help="newest log lines to show (0: none)"
    )
    show.set_defaults(func=jobs.cmd_show)

    log = client_verb("logs", "print a job's log, or search all of it (--grep)")
    log.add_argument("job_id")
    log.add_argument("--tail", type=int, help=f"the newest N records (default {logs.DEFAULT_TAIL})")
    log.add_argument("--level", default="DEBUG", type=str.upper)
    log.add_argument("--after", type=int, metavar="SEQ", help="only records after this seq")
    log.add_argument(
        "--field",
        action="append",
        metavar="KEY:VALUE",
        help="only records whose fields hold KEY=VALUE (repeatable: all must hold)",
    )
    log.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    grep = log.add_argument_group("search the whole kept log (the server searches it)")
    grep.add_argument("--grep", metavar="TEXT", help="print the records whose message holds TEXT")
    grep.add_argument("--regex", action="store_true", help="TEXT is a regular expression")
    grep.add_argument("--ignore-case", "-i", action="store_true")
    grep.add_argument(
        "--context", "-C", type=int, default=2, metavar="N", help="records around each match"
    )
    grep.add_argument("--max", type=int, default=100, metavar="N", help="matches to print")
    log.set_defaults(func=logs.cmd_logs)

    summary = client_verb("summary", "a job's whole log at a glance: levels, errors, repeats")
    summary.add_argument("job_id")
    summary.set_defaults(func=report.cmd_summary)

    hosts = client_verb("hosts", "a playbook's PLAY RECAP: per host ok, changed, failed, ...")
    hosts.add_argument("job_id")
    hosts.set_defaults(func=report.cmd_hosts)

    tasks = client_verb("tasks", "a playbook's tasks per host, with status and duration")
    tasks.add_argument("job_id")
    tasks.add_argument("--running", action="store_true", help="only the hosts being acted on now")
    tasks.add_argument("--slowest", type=int, metavar="N", help="the N slowest, slowest first")
    tasks.set_defaults(func=report.cmd_tasks)

    rerun = client_verb("rerun", "queue a job again: same type and params, key=value overrides")
    rerun.add_argument("job_id")
    rerun.add_argument("params", nargs="*", metavar="key=value")
    rerun.add_argument(
        "--failed-hosts",
        action="store_true",
        help="a playbook: only on the hosts that failed or were unreachable",
    )
    rerun.add_argument(
        "--wait", action="store_true", help="wait for the new job to end; exit with its status"
    )
    rerun.add_argument("--follow", "-f", action="store_true", help="print its log as it runs")
    rerun.set_defaults(func=jobs.cmd_rerun)

    cancel = client_verb("cancel", "cancel a pending or running job")
    cancel.add_argument("job_id")
    cancel.add_argument(
        "--wait",
        action="store_true",
        help="wait until the job has stopped; exit with its status (3 once cancelled)",
    )
    cancel.set_defaults(func=jobs.cmd_cancel)
