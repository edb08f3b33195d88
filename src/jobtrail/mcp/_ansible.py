"""ansible_hosts: a playbook's PLAY RECAP, its failed tasks with their messages, and its
slowest tasks, in one answer that stays small however many hosts there are."""

# no `from __future__ import annotations`: the SDK reads these signatures for the schemas

from collections import defaultdict

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult

from jobtrail.client import AsyncClient, HostRow
from jobtrail.mcp import _render as render
from jobtrail.mcp._budget import Reply, record_data, record_line
from jobtrail.mcp._errors import tool_errors
from jobtrail.mcp._jobs import JobId

SLOWEST = 5
FAILED_RECORDS = 20


def recap_lines(hosts: list[HostRow]) -> list[str]:
    """Hosts that failed or were unreachable one line each; the others grouped by equal
    counts, so 30 hosts that all went the same way are one line."""
    lines = []
    groups: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for row in hosts:
        counts = tuple(getattr(row, name) for name in HostRow.COUNTS)
        if row.failed or row.unreachable:
            lines.append(f"  {row.host}: " + _counts(counts))
        else:
            groups[counts].append(row.host)
    for counts, names in groups.items():
        named = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        lines.append(f"  {named} ({len(names)} host(s)): " + _counts(counts))
    return lines


def _counts(counts: tuple[int, ...]) -> str:
    return " ".join(f"{name}={n}" for name, n in zip(HostRow.COUNTS, counts, strict=True))


class AnsibleTools:
    """ansible_hosts over one client."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def ansible_hosts(self, job_id: JobId) -> CallToolResult:
        """A playbook job's host recap (as PLAY RECAP), its failed tasks with their
        messages, and its slowest tasks."""
        with tool_errors(job_id):
            job = await self.client.get_job(job_id)
            if job.job_type != render.PLAYBOOK:
                raise ToolError(
                    f"job {job_id!r} is a {job.job_type!r} job, not a playbook: "
                    "get_job and log_summary describe it"
                )
            hosts = await self.client.hosts(job_id)
            tasks = await self.client.tasks(job_id)
            failed = await self.client.logs(job_id, level="ERROR", tail=FAILED_RECORDS)
        reply = Reply()
        bad = [h.host for h in hosts if h.failed or h.unreachable]
        reply.add(
            f"job {job_id} ({job.status.value}): {len(hosts)} host(s), "
            f"{len(bad)} failed or unreachable" + (f": {', '.join(bad[:20])}" if bad else "")
        )
        reply.add_all(["PLAY RECAP:", *recap_lines(hosts)])
        bad_tasks = [t for t in tasks if t.status in ("failed", "unreachable")]
        if bad_tasks:
            reply.add("failed tasks:")
            for row in bad_tasks[:20]:
                reply.add(f"  {row.play}: {row.task!r} on {row.host}: {row.status}")
        if failed.records:
            reply.add("their messages (the newest ERROR records):")
            for record in failed.records:
                reply.add(f"  {record_line(record)}")
            if failed.first_seq and failed.first_seq > failed.truncated_before:
                reply.leave_out("older ERROR records: read_log(job_id, level='ERROR', after=0).")
        timed = [t for t in tasks if t.duration_s is not None]
        timed.sort(key=lambda t: t.duration_s or 0.0, reverse=True)
        if timed:
            reply.add(f"slowest tasks (of {len(timed)}):")
            for row in timed[:SLOWEST]:
                reply.add(f"  {render.duration(row.duration_s)}  {row.task!r} on {row.host}")
        running = [t for t in tasks if t.status == "running"]
        if running:
            reply.add("running now: " + ", ".join(f"{t.task!r} on {t.host}" for t in running[:10]))
        reply.data = {
            "job_id": job_id,
            "status": job.status.value,
            "hosts": [dict(h.raw) for h in hosts],
            "failed_tasks": [dict(t.raw) for t in bad_tasks],
            "failed_records": [record_data(r) for r in failed.records],
            "slowest_tasks": [dict(t.raw) for t in timed[:SLOWEST]],
        }
        if job.failure:
            reply.data["failure"] = dict(job.failure)
        return reply.result()
