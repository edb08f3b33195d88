"""``jobtrail summary``, ``hosts`` and ``tasks``: what a job did, without reading its log.

``summary`` prints the server's summary of the whole log (levels, first and last error, the
most repeated message shapes); ``hosts`` a playbook's PLAY RECAP, in the very format
ansible-playbook prints it; ``tasks`` one row per task and host, with durations.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from jobtrail.cli.output import Display, cut, display, seconds_text
from jobtrail.client import Client, HostRow, Summary, TaskRow

REPEATED_SHOWN = 10  # the summary's most frequent shapes printed (--json has all it sent)
_RED, _YELLOW, _GREEN = "\x1b[31m", "\x1b[33m", "\x1b[32m"
_TASK_STATUS_COLOURS = {
    "ok": _GREEN,
    "changed": _YELLOW,
    "failed": _RED,
    "unreachable": _RED,
    "ignored": _YELLOW,
    "rescued": _GREEN,
}
_TASK_COLUMNS = ("PLAY", "TASK", "HOST", "STATUS", "DURATION")


def cmd_summary(args: argparse.Namespace) -> int:
    with Client(args.url, token=args.token) as client:
        summary = client.summary(args.job_id)
    if args.json:
        print(json.dumps(summary.raw, indent=2))
    else:
        print("\n".join(summary_lines(summary, display(args))))
    return 0


def cmd_hosts(args: argparse.Namespace) -> int:
    with Client(args.url, token=args.token) as client:
        hosts = client.hosts(args.job_id)
    if args.json:  # the API's answer, as GET /api/jobs/{id}/hosts sent it
        print(json.dumps({"job_id": args.job_id, "hosts": [h.raw for h in hosts]}, indent=2))
    elif not hosts:
        print("no host recap (yet)")
    else:
        print("\n".join(["PLAY RECAP", *recap_lines(hosts, display(args))]))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    with Client(args.url, token=args.token) as client:
        tasks = client.tasks(args.job_id, status="running" if args.running else None)
    if args.slowest is not None:
        tasks = sorted(tasks, key=lambda t: -(t.duration_s or 0.0))[: args.slowest]
    if args.json:  # as GET /api/jobs/{id}/tasks sent them (sorted and cut by --slowest)
        print(json.dumps({"job_id": args.job_id, "tasks": [t.raw for t in tasks]}, indent=2))
    elif not tasks:
        print("no task is running" if args.running else "no tasks (yet)")
    else:
        print("\n".join(tasks_table(tasks, display(args), time.time())))
    return 0


def size_text(count: int) -> str:
    """``512 B``, ``2.1 MB``: a log's size at a glance."""
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def summary_lines(summary: Summary, shown: Display) -> list[str]:
    span = "" if summary.span_s is None else f", over {seconds_text(summary.span_s)}"
    lines = [
        f"{summary.job_id}  {summary.records:,} records, {size_text(summary.bytes)}{span}",
        f"  {'from':<11} {shown.time(summary.raw.get('first_timestamp'))}",
        f"  {'to':<11} {shown.time(summary.raw.get('last_timestamp'))}",
    ]
    levels = "  ".join(f"{level} {n:,}" for level, n in summary.levels.items() if n)
    lines.append(f"  {'levels':<11} {levels or '-'}")
    if summary.records_dropped:
        lines.append(f"  {'dropped':<11} {summary.records_dropped:,} records")
    if summary.truncated_before and summary.truncated_before > 1:
        lines.append(
            f"  {'rotation':<11} deleted the records before seq {summary.truncated_before} "
            "(counted here all the same)"
        )
    for label, record in (("first error", summary.first_error), ("last error", summary.last_error)):
        if record is not None:
            lines.append(f"  {label:<11} {cut(shown.record(record.raw), 200)}")
    if summary.repeated:
        lines.append("  repeated")
        for shape in summary.repeated[:REPEATED_SHOWN]:
            seqs = f"seq {shape.first_seq}-{shape.last_seq}"
            lines.append(f"    {shape.count:>8,} times  {cut(shape.shape, 100)}  ({seqs})")
    if summary.hosts:
        lines += ["", "PLAY RECAP", *recap_lines(summary.hosts, shown)]
    return lines


def recap_lines(hosts: Sequence[HostRow], shown: Display) -> list[str]:
    """One line per host as ansible-playbook's PLAY RECAP prints it (its default callback:
    the host padded to 26, then ``name=N`` padded to 4 each), without its trailing blanks."""
    lines = []
    for row in hosts:
        colour = _RED if row.failed or row.unreachable else _YELLOW if row.changed else _GREEN
        counts = " ".join(f"{name}={getattr(row, name):<4}" for name in HostRow.COUNTS)
        lines.append(f"{shown.paint(f'{row.host:<26}', colour)} : {counts}".rstrip())
    return lines


def _task_duration(task: TaskRow, now: float) -> str:
    if task.duration_s is not None:
        return seconds_text(task.duration_s)
    if task.started is not None:  # still running: how long so far
        return seconds_text(now - task.started.timestamp()) + "…"
    return "-"


def tasks_table(tasks: Sequence[TaskRow], shown: Display, now: float) -> list[str]:
    """A header and one aligned row per task and host."""
    rows = [(t.play, t.task, t.host, t.status, _task_duration(t, now)) for t in tasks]
    widths = [max(len(row[i]) for row in [_TASK_COLUMNS, *rows]) for i in range(4)]
    header = [name.ljust(w) for name, w in zip(_TASK_COLUMNS, widths, strict=False)]
    lines = ["  ".join([*header, _TASK_COLUMNS[4]])]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        cells[3] = shown.paint(cells[3], _TASK_STATUS_COLOURS.get(row[3]))
        lines.append("  ".join([*cells, row[4]]))
    return lines
