"""How jobs, their failures and their logs' extent read for a model: compact lines, each
fact once, the next call to make named where it helps."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jobtrail.client import Job, JobType, Summary
from jobtrail.mcp._budget import cut

PLAYBOOK = "ansible_playbook"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def job_line(job: Job) -> str:
    """One job in one line: id, status, progress, duration, type, and its error if any."""
    line = (
        f"{job.job_id}  {job.status.value:<9} {job.progress:3.0f}%  "
        f"{duration(job.duration_s):>7}  {job.job_type}"
    )
    if job.cancel_requested and not job.status.terminal:
        line += "  (cancel requested)"
    if job.error:
        line += f"  error: {cut(job.error, 160)}"
    return line


def params_text(params: Mapping[str, Any]) -> str:
    return cut(json.dumps(dict(params), default=str, separators=(", ", ": ")), 300)


def job_lines(job: Job) -> list[str]:
    """What get_job says about a job: status and timing, error and failure digest."""
    lines = [
        f"job {job.job_id} ({job.job_type}): {job.status.value}, {job.progress:.0f}%"
        + (f", step: {cut(job.current_step, 160)}" if job.current_step else ""),
        f"params: {params_text(job.params)}",
        f"created {job.created_at:%Y-%m-%d %H:%M:%SZ}"
        + (f", started {job.started_at:%H:%M:%SZ}" if job.started_at else "")
        + (f", ended {job.completed_at:%H:%M:%SZ}" if job.completed_at else "")
        + f", duration {duration(job.duration_s)}",
    ]
    if job.cancel_requested and not job.status.terminal:
        lines.append("cancel requested: its processes are being stopped")
    if job.error:
        lines.append(f"error: {cut(job.error, 600)}")
    if job.failure:
        lines.extend(failure_lines(job.failure))
    if job.result is not None:
        lines.append(f"result: {cut(json.dumps(job.result, default=str), 300)}")
    if job.records_dropped:
        lines.append(f"records dropped under back-pressure: {job.records_dropped:,}")
    if job.rerun_of:
        lines.append(f"rerun of {job.rerun_of}")
    if job.reruns:
        lines.append(f"rerun as: {', '.join(job.reruns[-5:])}")
    return lines


def failure_lines(failure: Mapping[str, Any]) -> list[str]:
    """The failure digest: task, host, message and rc of a playbook; the cause chain and
    the frame of a Python exception."""
    lines = ["failure:"]
    if failure.get("kind") == "exception":
        lines.append(f"  {failure.get('type')}: {cut(str(failure.get('message')), 300)}")
        for cause in failure.get("causes") or ():
            lines.append(f"  ← {cause.get('type')}: {cut(str(cause.get('message')), 300)}")
        frame = failure.get("frame")
        if frame:
            lines.append(f"  at {frame.get('file')}:{frame.get('line')} in {frame.get('function')}")
        return lines
    for key in ("play", "task", "host", "message", "rc", "stderr", "playbook"):
        value = failure.get(key)
        if value not in (None, ""):
            lines.append(f"  {key}: {cut(str(value), 400)}")
    hosts = failure.get("hosts")
    if hosts:
        shown = ", ".join(str(h) for h in hosts[:20])
        more = f" and {len(hosts) - 20} more" if len(hosts) > 20 else ""
        lines.append(f"  failed hosts: {shown}{more}")
    return lines


def log_extent(summary: Summary) -> str:
    kept = f", kept from #{summary.truncated_before}" if (summary.truncated_before or 1) > 1 else ""
    levels = ", ".join(f"{n:,} {lvl}" for lvl, n in summary.levels.items() if n)
    return (
        f"log: {summary.records:,} records, {summary.bytes:,} bytes, "
        f"#1-#{summary.summarised_to_seq}{kept}" + (f" ({levels})" if levels else "")
    )


def next_steps(job: Job) -> str:
    steps = []
    if job.job_type == PLAYBOOK and job.status.terminal:
        steps.append("ansible_hosts(job_id) for the recap and failed tasks")
    if job.failure or job.error:
        steps.append("search_log(job_id, pattern=...) for the error's words")
    if not job.status.terminal:
        steps.append("wait_job(job_id) to follow it")
    steps.append("log_summary(job_id) for the whole log at a glance")
    steps.append("read_log(job_id, tail=50) for its newest lines")
    return "next: " + "; ".join(steps)


def job_data(job: Job) -> dict[str, Any]:
    """The job's JSON for programs, without its recent records (read_log has them)."""
    return {key: value for key, value in job.raw.items() if key != "recent_logs"}


def type_lines(job_type: JobType) -> list[str]:
    summary = (job_type.description or "").strip().split("\n", 1)[0]
    lines = [f"{job_type.name}: {cut(summary, 200)}" if summary else job_type.name]
    schema = job_type.params_schema
    required = set(schema.get("required") or ())
    for name, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type") or " | ".join(
            str(s.get("type")) for s in spec.get("anyOf", ()) if s.get("type")
        )
        extra = (
            "required"
            if name in required
            else f"default {json.dumps(spec.get('default'), default=str)}"
        )
        lines.append(f"  {name}: {kind or 'any'} ({extra})")
    if job_type.sandbox_read or job_type.sandbox_write:  # what it may touch under --sandbox
        reads = f"reads {', '.join(job_type.sandbox_read)}" if job_type.sandbox_read else ""
        writes = f"writes {', '.join(job_type.sandbox_write)}" if job_type.sandbox_write else ""
        lines.append(f"  sandbox: {'; '.join(part for part in (reads, writes) if part)}")
    return lines
