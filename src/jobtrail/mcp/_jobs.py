"""The tools about jobs: list, inspect, the types there are, submit and cancel."""

# no `from __future__ import annotations`: the SDK reads these signatures for the schemas

import contextlib
from typing import Annotated, Any

from mcp_types import CallToolResult
from pydantic import Field

from jobtrail.client import AsyncClient, ClientError, Job
from jobtrail.mcp import _render as render
from jobtrail.mcp._budget import Reply
from jobtrail.mcp._errors import tool_errors

JobId = Annotated[str, Field(description="the job's id, as list_jobs or submit_job gave it")]


class JobTools:
    """list_jobs, get_job, list_job_types, submit_job, cancel_job over one client."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def list_jobs(
        self,
        status: Annotated[
            str | None, Field(description="pending, running, completed, failed or cancelled")
        ] = None,
        type: Annotated[str | None, Field(description="only jobs of this type")] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="newest first")] = 20,
    ) -> CallToolResult:
        """The newest jobs, one compact line each: id, status, progress, duration, type,
        error."""
        with tool_errors():
            jobs = await self.client.list_jobs(status=status, type=type, limit=limit)
        reply = Reply()
        reply.add(f"{len(jobs)} job(s), newest first:" if jobs else "no jobs match")
        shown: list[dict[str, Any]] = []
        for job in jobs:
            if not reply.add(render.job_line(job)):
                reply.leave_out(
                    f"{len(jobs) - len(shown)} older job(s) did not fit: "
                    "narrow with status= or type=, or lower limit"
                )
                break
            shown.append(render.job_data(job))
        if len(jobs) == limit:
            reply.leave_out(f"there may be older jobs: raise limit (now {limit})")
        reply.data = {"jobs": shown}
        return reply.result()

    async def get_job(self, job_id: JobId) -> CallToolResult:
        """A job's status, progress, step, duration, error and failure digest (task, host,
        message and rc of a playbook; the cause chain and frame of a Python exception),
        its log's size and seq range. No raw log: read_log and search_log read it."""
        with tool_errors(job_id):
            job = await self.client.get_job(job_id)
        reply = Reply()
        for line in render.job_lines(job):
            reply.add(line)
        log: dict[str, Any] = {}
        if job.logs_expired:
            reply.add("log: deleted by retention")
        else:
            log = await self._log_extent(job, reply)
        reply.add(render.next_steps(job))
        reply.data = {"job": render.job_data(job), "log": log}
        return reply.result()

    async def _log_extent(self, job: Job, reply: Reply) -> dict[str, Any]:
        try:
            summary = await self.client.summary(job.job_id)
        except ClientError:  # a server without /summary: the seq range alone
            with contextlib.suppress(ClientError):
                page = await self.client.logs(job.job_id, tail=1)
                reply.add(f"log: #{page.truncated_before}-#{page.latest_seq}")
                return {"truncated_before": page.truncated_before, "latest_seq": page.latest_seq}
            return {}
        reply.add(render.log_extent(summary))
        return {
            "records": summary.records,
            "bytes": summary.bytes,
            "levels": dict(summary.levels),
            "truncated_before": summary.truncated_before,
            "latest_seq": summary.summarised_to_seq,
        }

    async def list_job_types(self) -> CallToolResult:
        """The job types this server runs: name, summary, params (type, required or
        default) and the paths --sandbox binds for it; the full JSON Schema of each is in the
        structured content."""
        with tool_errors():
            types = await self.client.job_types()
        reply = Reply()
        shown: list[dict[str, Any]] = []
        for job_type in types:
            if not reply.add_all(render.type_lines(job_type)):
                rest = [t.name for t in types[len(shown) :]]
                reply.leave_out(f"the params of {', '.join(rest)} did not fit")
                break
            shown.append(
                {
                    "name": job_type.name,
                    "description": job_type.description,
                    "params_schema": dict(job_type.params_schema),
                    "sandbox_paths": {
                        "read": list(job_type.sandbox_read),
                        "write": list(job_type.sandbox_write),
                    },
                }
            )
        reply.data = {"job_types": shown}
        return reply.result()

    async def submit_job(
        self,
        type: Annotated[str, Field(description="a job type from list_job_types")],
        params: Annotated[
            dict[str, Any] | None, Field(description="the type's params, as JSON values")
        ] = None,
    ) -> CallToolResult:
        """Queue a job; it is checked against its type's params first (a wrong or missing
        one is an error that names it)."""
        with tool_errors():
            job = await self.client.submit(type, params or {})
        reply = Reply()
        reply.add(f"queued: {render.job_line(job)}")
        reply.add(f"next: wait_job(job_id={job.job_id!r}) follows it; get_job shows it")
        reply.data = {"job": render.job_data(job)}
        return reply.result()

    async def cancel_job(self, job_id: JobId) -> CallToolResult:
        """Cancel a pending job (it never runs) or a running one (its processes are stopped,
        then it reads cancelled)."""
        with tool_errors(job_id):
            job = await self.client.cancel(job_id)
        reply = Reply()
        if job.status.terminal:
            reply.add(f"{job.job_id} is {job.status.value}")
        else:
            reply.add(f"{render.job_line(job)}: cancel requested, its processes are stopping")
            reply.add(f"next: wait_job(job_id={job.job_id!r}) returns once it is cancelled")
        reply.data = {"job": render.job_data(job)}
        return reply.result()
