"""``jobtrail submit``, ``jobs``, ``show``, ``cancel`` and ``rerun``: jobs over the client."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from jobtrail.cli.exits import CLIError, exit_code
from jobtrail.cli.logs import follow
from jobtrail.cli.output import Display, display
from jobtrail.client import Client, Job

RECENT_LOGS = 50  # the job JSON's recent_logs: more lines than this come from /logs

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


def parse_params(pairs: Sequence[str], schema: dict[str, Any] | None = None) -> dict[str, Any]:
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


def _dumps(job: Job) -> str:
    return json.dumps(job.raw, indent=2)


def _typed_params(client: Client, job_type: str, pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs read against the job type's schema (see ``parse_params``)."""
    schema = None
    if pairs:
        for known in client.job_types():
            if known.name == job_type:
                schema = dict(known.params_schema)
    return parse_params(pairs, schema)


def _until_end(client: Client, job: Job, args: argparse.Namespace, shown: Display) -> int:
    """Print the queued job, after following or waiting for it if asked; the exit code."""
    if args.follow:
        job = follow(client, job.job_id, shown)
    elif args.wait:
        job = client.wait(job.job_id)
    print(_dumps(job) if args.json else shown.summary(job.raw))
    return exit_code(job) if (args.follow or args.wait) else 0


def cmd_submit(args: argparse.Namespace) -> int:
    with Client(args.url, token=args.token) as client:
        params = _typed_params(client, args.type, args.params)
        job = client.submit(args.type, params, memory_mb=args.memory_mb, timeout_s=args.timeout)
        return _until_end(client, job, args, display(args))


def cmd_rerun(args: argparse.Namespace) -> int:
    """Queue the job again (``--failed-hosts``: a playbook on its failed hosts only), with
    ``key=value`` overrides read as ``submit`` reads them."""
    with Client(args.url, token=args.token) as client:
        params = None
        if args.params:
            params = _typed_params(client, client.get_job(args.job_id).job_type, args.params)
        job = client.rerun(args.job_id, failed_hosts_only=args.failed_hosts, params=params)
        return _until_end(client, job, args, display(args))


def cmd_jobs(args: argparse.Namespace) -> int:
    with Client(args.url, token=args.token) as client:
        jobs = client.list_jobs(status=args.status, type=args.type, limit=args.limit)
    if args.json:  # the API's listing, as GET /api/jobs sent it
        print(json.dumps({"jobs": [job.raw for job in jobs], "count": len(jobs)}, indent=2))
    elif not jobs:
        print("no jobs" + (" match" if args.status or args.type else " yet"))
    else:
        print("\n".join(display(args).jobs_table([job.raw for job in jobs], time.time())))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with Client(args.url, token=args.token) as client:
        job = client.get_job(args.job_id)
        if args.json:
            print(_dumps(job))
            return 0
        records = list(reversed(job.recent_logs))  # they come newest first
        if args.lines > RECENT_LOGS and not job.logs_expired:
            records = list(client.logs(args.job_id, tail=args.lines).records)
    records = records[-args.lines :] if args.lines > 0 else []
    lines = display(args).job_details(job.raw, [r.raw for r in records], time.time())
    print("\n".join(lines))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Print what the cancel did: a pending job is cancelled at once; a running one is
    still running (``cancel_requested``) until its process has stopped."""
    with Client(args.url, token=args.token) as client:
        shown = display(args)
        job = client.cancel(args.job_id)
        if not (args.json and args.wait):
            print(_dumps(job) if args.json else _cancel_line(job, shown), flush=True)
        if not args.wait:
            return 0
        job = client.wait(job.job_id)
    print(_dumps(job) if args.json else shown.summary(job.raw))
    return exit_code(job)


def _cancel_line(job: Job, shown: Display) -> str:
    # the cancel was accepted, so a job not ended yet is being stopped
    requested = job.cancel_requested or not job.status.terminal
    return shown.summary(job.raw) + (" — cancel requested" if requested else "")
