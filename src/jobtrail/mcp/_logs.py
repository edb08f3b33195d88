"""The tools that read a job's log: a window with its cursor, a search, a summary, and
waiting for something to happen (the agent's ``logs -f``)."""

# no `from __future__ import annotations`: the SDK reads these signatures for the schemas

import asyncio
import time
from collections.abc import Sequence
from typing import Annotated, Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult
from pydantic import Field

from jobtrail.client import AsyncClient, LogFilters, LogPage, LogRecord, SearchOptions
from jobtrail.mcp import _render as render
from jobtrail.mcp._budget import RUN_MIN, TIMES, Reply, cut, record_data, record_line, runs
from jobtrail.mcp._errors import tool_errors
from jobtrail.mcp._jobs import JobId

WAIT_POLL_S = 0.5
Level = Annotated[
    str | None, Field(description="minimum severity: DEBUG, INFO, WARNING, ERROR, CRITICAL")
]
After = Annotated[
    int | None, Field(ge=0, description="cursor: only records with a larger seq, oldest first")
]


def parse_fields(field: Sequence[str] | None) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in field or ():
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ToolError(f"field must be KEY:VALUE, such as attempt:3; got {item!r}")
        parsed[key] = value
    return parsed


def add_records(reply: Reply, records: Sequence[LogRecord]) -> tuple[list[dict[str, Any]], int]:
    """Add ``records`` as lines, runs of one shape as one line with its count, until the
    reply is full: (their data, the seq of the last one shown, 0 for none)."""
    shown: list[dict[str, Any]] = []
    last = 0
    for run in runs(records):
        if not reply.add_all(run.lines()):
            break
        if len(run.records) < RUN_MIN:
            shown.extend(record_data(r) for r in run.records)
        else:
            data = record_data(run.first)
            data["repeated"] = len(run.records)
            data["last_seq"] = run.records[-1].seq
            shown.append(data)
        last = run.records[-1].seq
    return shown, last


class LogTools:
    """read_log, search_log, log_summary and wait_job over one client."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def read_log(
        self,
        job_id: JobId,
        tail: Annotated[
            int | None,
            Field(ge=1, le=10000, description="the newest N matching records (default 50)"),
        ] = None,
        after: After = None,
        level: Level = None,
        host: Annotated[str | None, Field(description="a playbook's records of this host")] = None,
        task: Annotated[str | None, Field(description="a playbook's records of this task")] = None,
        field: Annotated[
            list[str] | None,
            Field(description="KEY:VALUE filters on the records' fields, all must hold"),
        ] = None,
    ) -> CallToolResult:
        """A window of a job's log, oldest first, with the cursor to the next one: the
        newest `tail` records, or with `after` the records that follow that seq."""
        fields = parse_fields(field)
        filters: LogFilters = {"tail": tail or (50 if after is None else 200)}
        if after is not None:
            filters["after"] = after
        if level:
            filters["level"] = level
        if host:
            filters["host"] = host
        if task:
            filters["task"] = task
        if fields:
            filters["fields"] = fields
        with tool_errors(job_id):
            page = await self.client.logs(job_id, **filters)
        reply = Reply()
        reply.add(self._page_header(page, after))
        shown, last = add_records(reply, page.records)
        if page.records and last < page.records[-1].seq:
            reply.leave_out(
                f"records #{last + 1}-#{page.records[-1].seq} did not fit: "
                f"read_log(job_id, after={last}) goes on from there."
            )
        elif page.more:
            reply.leave_out(f"more records follow: read_log(job_id, after={page.last_seq}).")
        if after is None and page.first_seq and page.first_seq > page.truncated_before:
            reply.leave_out(
                f"older records from #{page.truncated_before}: search_log(job_id, pattern=...) "
                "finds them, or read_log(job_id, after=SEQ) from an earlier seq."
            )
        reply.data = {
            "job_id": job_id,
            "records": shown,
            "first_seq": page.first_seq,
            "last_seq": last or page.last_seq,
            "latest_seq": page.latest_seq,
            "truncated_before": page.truncated_before,
            "next_after": last or page.last_seq,
            "more": page.more or bool(page.records and last < page.records[-1].seq),
        }
        return reply.result()

    @staticmethod
    def _page_header(page: LogPage, after: int | None) -> str:
        if not page.records:
            where = f"after #{after}" if after is not None else "that match"
            return f"no records {where} (the log is at #{page.latest_seq})"
        return (
            f"{len(page.records)} record(s) #{page.first_seq}-#{page.last_seq} "
            f"of #{page.latest_seq} so far:"
        )

    async def search_log(
        self,
        job_id: JobId,
        pattern: Annotated[str, Field(min_length=1, description="text (or a regex) to find")],
        regex: Annotated[bool, Field(description="pattern is a regular expression")] = False,
        ignore_case: bool = False,
        context: Annotated[int, Field(ge=0, le=20, description="records around each")] = 2,
        max: Annotated[int, Field(ge=1, le=1000, description="matches in this answer")] = 20,
        after: After = None,
        level: Level = None,
    ) -> CallToolResult:
        """Search the whole kept log of a job: each match with `context` records around it,
        the number of all matches, and the cursor to the next page."""
        options: SearchOptions = {
            "regex": regex,
            "ignore_case": ignore_case,
            "context": context,
            "max": max,
        }
        if after is not None:
            options["after"] = after
        if level:
            options["level"] = level
        with tool_errors(job_id):
            result = await self.client.search(job_id, pattern, **options)
        reply = Reply()
        total = result.total_matches
        reply.add(f"{total:,} match(es) of {pattern!r}" + (":" if total else ""))
        shown: list[dict[str, Any]] = []
        last = after or 0
        printed = 0  # the last seq shown: overlapping contexts are shown once
        for match in result.matches:
            around = [*match.before, match.record, *match.after]
            fresh = [r for r in around if r.seq > printed]
            lines = ["  ..."] if printed and fresh and fresh[0].seq > printed + 1 else []
            lines += [
                f"{'>' if r.seq == match.record.seq else ' '} {record_line(r)}" for r in fresh
            ]
            if not reply.add_all(lines):
                break
            printed = around[-1].seq if around[-1].seq > printed else printed  # `max` is an arg
            shown.append(
                {
                    **record_data(match.record),
                    "before": [r.seq for r in match.before],
                    "after": [r.seq for r in match.after],
                }
            )
            last = match.record.seq
        left = total - len(shown)
        if left > 0:
            reply.leave_out(
                f"{left:,} more match(es): search_log(job_id, pattern={pattern!r}, after={last}) "
                "for the next ones, or a narrower pattern or level."
            )
        reply.data = {
            "job_id": job_id,
            "pattern": pattern,
            "total_matches": total,
            "matches": shown,
            "next_after": last if left > 0 else None,
            "latest_seq": result.latest_seq,
        }
        return reply.result()

    async def log_summary(self, job_id: JobId) -> CallToolResult:
        """A job's whole log at a glance (also the part rotation deleted): records and
        bytes, counts per level, the first and last error, the most repeated message
        shapes, its time span, and a playbook's host recap."""
        with tool_errors(job_id):
            summary = await self.client.summary(job_id)
        reply = Reply()
        reply.add(render.log_extent(summary))
        if summary.span_s is not None:
            reply.add(f"span: {render.duration(summary.span_s)}")
        if summary.records_dropped:
            reply.add(f"records dropped under back-pressure: {summary.records_dropped:,}")
        for name, record in (
            ("first error", summary.first_error),
            ("last error", summary.last_error),
        ):
            if record is not None:
                reply.add(f"{name}: {record_line(record)}")
        if summary.repeated:
            reply.add("most repeated message shapes:")
            for shape in summary.repeated[:15]:
                reply.add(
                    f"  {TIMES}{shape.count:,} #{shape.first_seq}-#{shape.last_seq}: "
                    + cut(shape.shape, 200)
                )
        if summary.hosts:
            failed = [h for h in summary.hosts if h.failed or h.unreachable]
            reply.add(
                f"hosts: {len(summary.hosts)}, failed or unreachable: "
                + (", ".join(h.host for h in failed[:20]) or "none")
            )
        reply.data = {key: value for key, value in summary.raw.items() if key != "hosts"}
        if summary.hosts:
            reply.data["hosts"] = [dict(h.raw) for h in summary.hosts]
        return reply.result()

    async def wait_job(
        self,
        job_id: JobId,
        timeout_s: Annotated[float, Field(gt=0, le=300, description="at most this long")] = 30,
        after: Annotated[
            int | None,
            Field(ge=0, description="the cursor the last wait_job gave (default: now)"),
        ] = None,
    ) -> CallToolResult:
        """Wait until the job's status changes, a new WARNING-or-worse record arrives, or
        the timeout passes, and say which: call it again with the `after` it gives."""
        deadline = time.monotonic() + timeout_s
        with tool_errors(job_id):
            start = await self.client.get_job(job_id)
            if after is None:
                after = (await self.client.logs(job_id, tail=1)).latest_seq
            job, page, why = start, None, "timeout"
            while not start.status.terminal:
                page = await self.client.logs(job_id, level="WARNING", after=after, tail=20)
                if page.records:
                    why = "new WARNING-or-worse record(s)"
                    break
                job = await self.client.get_job(job_id)
                if job.status != start.status:
                    why = f"status changed: {start.status.value} → {job.status.value}"
                    break
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))
            else:
                why = "the job had already ended"
        reply = Reply()
        reply.add(f"{why}: {render.job_line(job)}")
        records = page.records if page else ()
        shown, last = add_records(reply, records)
        cursor = last if records and last else after  # no warning yet: the same cursor
        if page and (page.more or (records and last < records[-1].seq)):
            reply.leave_out(f"more warnings follow: wait_job(job_id, after={cursor}).")
        if not job.status.terminal:
            reply.add(f"next: wait_job(job_id={job_id!r}, after={cursor})")
        else:
            reply.add(render.next_steps(job))
        reply.data = {
            "reason": why.split(":", 1)[0],
            "job": render.job_data(job),
            "records": shown,
            "after": cursor,
        }
        return reply.result()
