"""How jobs and log records read on a terminal: times with their zone, durations, the jobs
table and one job's details.

``Display`` turns the API's JSON (a client result's ``raw``) into lines of text and does no
I/O, so the verbs stay short and the formats can be tested without a server; ``display``
picks its settings from the command line and the terminal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any

from jobtrail.records import display_time, text_line

ERROR_WIDTH = 60  # the jobs table's error column when stdout is not a terminal
_LEVEL_COLOURS = {
    "DEBUG": "\x1b[2m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
_BOLD = "\x1b[1m"
_STATUS_COLOURS = {"completed": "\x1b[32m", "failed": "\x1b[31m", "cancelled": "\x1b[33m"}
_COLUMNS = ("ID", "TYPE", "STATUS", "PROGRESS", "CREATED", "DURATION", "ERROR")


def seconds_text(seconds: float) -> str:
    """``1.2s``, ``3m04s``, ``2h05m``: short, and still exact enough to compare runs."""
    if seconds < 60:
        return f"{max(seconds, 0.0):.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def epoch(iso: str) -> float:
    """An API time as seconds (Python 3.10's ``fromisoformat`` does not take a ``Z``)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def duration(job: Mapping[str, Any], now: float) -> str:
    """How long the job ran, or has been running so far; ``-`` while it waits."""
    if job.get("duration_s") is not None:
        return seconds_text(float(job["duration_s"]))
    started = job.get("started_at")
    if not started:
        return "-"
    ended = job.get("completed_at")
    return seconds_text((epoch(ended) if ended else now) - epoch(started))


def cut(text: str, width: int) -> str:
    """The first line of ``text``, at most ``width`` characters, with ``…`` if cut."""
    line = text.split("\n", 1)[0]
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"


@dataclass(frozen=True)
class Display:
    """How this terminal shows things: colours (only on a tty), the time zone (UTC, or
    ``None`` for the system's local time) and the width of the terminal, when it is one."""

    colour: bool = False
    tz: tzinfo | None = timezone.utc
    width: int | None = None

    def paint(self, text: str, code: str | None) -> str:
        return f"{code}{text}\x1b[0m" if self.colour and code else text

    def time(self, iso: str | None) -> str:
        return display_time(iso, self.tz) if iso else "-"

    def record(self, record: Mapping[str, Any], match: bool = False) -> str:
        """A record as ``jobtrail logs`` prints it; a search's ``match`` is bold on a tty."""
        colour = _LEVEL_COLOURS.get(str(record.get("level")))
        if match:
            colour = _BOLD + (colour or "")
        return self.paint(text_line(record, self.tz), colour)

    def status(self, status: str, width: int = 0) -> str:
        return self.paint(status.ljust(width), _STATUS_COLOURS.get(status))

    def summary(self, job: Mapping[str, Any]) -> str:
        """One line: id, status, progress and the error if any."""
        line = f"{job['job_id']}  {self.status(job['status'])}  {job['progress']:.0f}%"
        if job.get("error"):
            line += f"  error: {job['error']}"
        return line

    def jobs_table(self, jobs: Sequence[Mapping[str, Any]], now: float) -> list[str]:
        """A header and one aligned row per job; the error is cut to fit the terminal."""
        rows = [
            (
                job["job_id"],
                job["job_type"],
                job["status"],
                f"{job['progress']:.0f}%",
                self.time(job["created_at"]),
                duration(job, now),
                job.get("error") or "",
            )
            for job in jobs
        ]
        widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(6)]
        start = sum(widths) + 2 * len(widths)
        room = ERROR_WIDTH if self.width is None else max(self.width - start, 20)
        header = [name.ljust(w) for name, w in zip(_COLUMNS[:6], widths, strict=True)]
        lines = ["  ".join(header) + "  ERROR"]
        for row in rows:
            cells = [cell.ljust(w) for cell, w in zip(row[:6], widths, strict=True)]
            cells[2] = self.status(row[2], widths[2])
            lines.append(("  ".join(cells) + "  " + cut(row[6], room)).rstrip())
        return lines

    def job_details(
        self, job: Mapping[str, Any], records: Iterable[Mapping[str, Any]], now: float
    ) -> list[str]:
        """What ``jobtrail show`` prints: the job's state, its failure digest, its newest
        lines (``records``, oldest first)."""
        fields: list[tuple[str, str]] = [
            ("type", job["job_type"]),
            ("params", json.dumps(job.get("params") or {})),
            ("created", self.time(job.get("created_at"))),
            ("started", self.time(job.get("started_at"))),
            ("ended", self.time(job.get("completed_at"))),
            ("duration", duration(job, now)),
        ]
        step = f"  {job['current_step']}" if job.get("current_step") else ""
        fields.append(("progress", f"{job['progress']:.0f}%{step}"))
        if job.get("error"):
            fields.append(("error", str(job["error"])))
        if job.get("result") is not None:
            fields.append(("result", cut(json.dumps(job["result"]), 200)))
        for key, label in (("records_dropped", "dropped"), ("log_note", "log note")):
            if job.get(key):
                fields.append((label, str(job[key])))
        if job.get("logs_expired"):
            fields.append(("log", "deleted by retention"))
        if job.get("rerun_of"):
            fields.append(("rerun of", str(job["rerun_of"])))
        if job.get("reruns"):
            fields.append(("reruns", ", ".join(job["reruns"])))
        lines = [f"{job['job_id']}  {self.status(job['status'])}"]
        lines += [f"  {name:<9} {value}" for name, value in fields]
        failure = job.get("failure") or {}
        if failure:
            lines.append("  failure")
            for key, text in failure_entries(failure):
                lines.append(f"    {key + ':':<9} " + text.replace("\n", "\n" + " " * 14))
        shown = [self.record(record) for record in records]
        if shown:
            lines += ["", f"newest {len(shown)} line(s) of its log:", *shown]
        return lines


def failure_entries(failure: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A failure digest as ``(key, text)``: a Python failure's ``causes`` one per line down
    to the root cause (``← …``, with how many were left out between), its ``frame`` as
    ``file:line in function``, a playbook's failed ``hosts`` as a list; the rest as is."""
    entries = []
    for key, value in failure.items():
        if key == "causes_cut":
            continue
        if key == "causes" and isinstance(value, list):
            chain = [f"← {cause.get('type')}: {cause.get('message')}" for cause in value]
            if failure.get("causes_cut") and chain:
                chain.insert(len(chain) - 1, f"← … {failure['causes_cut']} more")
            text = "\n".join(chain) or "-"
        elif key == "frame" and isinstance(value, dict):
            text = f"{value.get('file')}:{value.get('line')} in {value.get('function')}"
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            text = ", ".join(value)
        else:
            text = value if isinstance(value, str) else json.dumps(value)
        entries.append((key, text))
    return entries


def stderr_logging() -> None:
    """Log lines of ``serve`` and ``worker`` on stderr, their time in UTC with a ``Z``."""
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%SZ"
    )
    formatter.converter = time.gmtime
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def display(args: argparse.Namespace) -> Display:
    """Colours only on a terminal (and without NO_COLOR), the error column as wide as the
    terminal when it is one; UTC unless --local-time."""
    tty = sys.stdout.isatty()
    return Display(
        colour=tty and os.environ.get("NO_COLOR") is None,
        tz=None if getattr(args, "local_time", False) else timezone.utc,
        width=shutil.get_terminal_size().columns if tty else None,
    )
