"""``jobtrail logs``: a job's log (``--field``, ``--grep``: see grep.py), and following it
live (also for ``submit --follow`` and ``demo``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping

from jobtrail.cli.exits import CLIError, exit_code
from jobtrail.cli.grep import match_lines, parse_fields
from jobtrail.cli.output import Display, display
from jobtrail.client import Client, FieldValue, Gap, Job, RecordFilters, ServerStopping

DEFAULT_TAIL = 100


def cmd_logs(args: argparse.Namespace) -> int:
    filters: RecordFilters = {
        "level": args.level,
        "after": args.after,
        "fields": parse_fields(args.field),
    }
    if args.grep is not None:
        return _grep(args, filters)
    with Client(args.url, token=args.token) as client:
        shown = display(args)
        tail = DEFAULT_TAIL if args.tail is None else args.tail
        page = client.logs(args.job_id, tail=tail, **filters)
        if args.json and not args.follow:
            print(json.dumps(page.raw, indent=2))
            return 0
        for record in page.records:
            print(shown.record(record.raw), flush=True)
        if not args.follow:
            return 0
        after = page.last_seq or args.after or 0
        job = follow(
            client, args.job_id, shown, after=after, level=args.level, fields=filters["fields"]
        )
        return exit_code(job)


def _grep(args: argparse.Namespace, filters: RecordFilters) -> int:
    """``--grep``: one search of the whole kept log, printed as grep -C prints."""
    if args.follow:
        raise CLIError("--grep searches the log written so far; it does not take -f")
    if args.tail is not None:
        raise CLIError("--tail does not apply to --grep; --max N bounds the matches shown")
    with Client(args.url, token=args.token) as client:
        result = client.search(
            args.job_id,
            args.grep,
            regex=args.regex,
            ignore_case=args.ignore_case,
            context=args.context,
            max=args.max,
            **filters,
        )
    if args.json:
        print(json.dumps(result.raw, indent=2))
    else:
        print("\n".join(match_lines(result, display(args))))
    return 0


def follow(
    client: Client,
    job_id: str,
    shown: Display,
    after: int = 0,
    level: str = "DEBUG",
    fields: Mapping[str, FieldValue] | None = None,
) -> Job:
    """Print the job's records as they come until it ends; returns the ended job. A gap
    (records rotated away unread) is one line on stderr, not a silent hole."""
    try:
        for item in client.follow(job_id, after=after, level=level, fields=fields):
            if isinstance(item, Gap):
                print(
                    f"jobtrail: records {item.first}-{item.last} were removed by log "
                    "rotation before they could be shown",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                print(shown.record(item.raw), flush=True)
    except ServerStopping as exc:
        raise CLIError(f"{exc} (follow it again: jobtrail logs {job_id} -f)") from None
    return client.get_job(job_id)
