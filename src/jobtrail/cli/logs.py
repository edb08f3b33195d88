"""``jobtrail logs``: a job's log, and following it live (also for ``submit --follow`` and
``demo``)."""

from __future__ import annotations

import argparse
import json
import sys

from jobtrail.cli.exits import CLIError, exit_code
from jobtrail.cli.output import Display, display
from jobtrail.client import Client, Gap, Job, ServerStopping


def cmd_logs(args: argparse.Namespace) -> int:
    with Client(args.url, token=args.token) as client:
        shown = display(args)
        page = client.logs(args.job_id, tail=args.tail, level=args.level)
        if args.json and not args.follow:
            print(json.dumps(page.raw, indent=2))
            return 0
        for record in page.records:
            print(shown.record(record.raw), flush=True)
        if not args.follow:
            return 0
        job = follow(client, args.job_id, shown, after=page.last_seq or 0, level=args.level)
        return exit_code(job)


def follow(
    client: Client, job_id: str, shown: Display, after: int = 0, level: str = "DEBUG"
) -> Job:
    """Print the job's records as they come until it ends; returns the ended job. A gap
    (records rotated away unread) is one line on stderr, not a silent hole."""
    try:
        for item in client.follow(job_id, after=after, level=level):
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
