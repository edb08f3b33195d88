"""``jobtrail cleanup``: delete logs past retention in a home, with or without a server
running on it (the server's hourly task applies the same rule: service/retention.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from jobtrail.cli.exits import CLIError


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
