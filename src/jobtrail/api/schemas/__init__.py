"""The API's pydantic models; internal dataclasses are converted here, at the edge."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from jobtrail.models import Job, JobStatus


class Level(str, Enum):
    """Minimum severity of the records to return."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


# A level in any case, as the CLI takes it (``warning``); the schema says exactly that with a
# pattern, since JSON Schema has no case-insensitive enum (and ECMA regexes no ``(?i)``).
LevelName = Annotated[
    Level,
    BeforeValidator(_upper),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^(" + "|".join(_any_case(level.value) for level in Level) + ")$",
            "description": "Minimum severity: DEBUG, INFO, WARNING, ERROR or CRITICAL, any case",
        }
    ),
]


class LogFormat(str, Enum):
    """``json`` and ``jsonl`` are one format: records as JSON objects (a list in ``/logs``,
    one per line in ``/logs/download``); both spellings work on both endpoints."""

    text = "text"
    json = "json"
    jsonl = "jsonl"

    @property
    def records(self) -> bool:
        return self is not LogFormat.text


class SubmitJob(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: str = Field(description="A registered job type; GET /api/job-types lists them.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Checked against the job's signature."
    )
    memory_mb: int | None = Field(
        None,
        ge=1,
        description="Memory limit of the job's process tree (the sum of its RSS), in MB; "
        "null: the job type's, else the server's (--job-memory-mb).",
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        description="Seconds the job may run; null: the job type's, else the server's "
        "(--job-timeout).",
    )


FIELDS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": ["string", "integer", "number", "boolean", "null"]},
    "description": (
        "What job code passed with extra= (only on records that have some): JSON scalars as "
        "they are, other values as their repr, cut; at most 32, with the key "
        '"…": "N more fields cut" when more were passed.'
    ),
}


def _fields_schema(schema: dict[str, Any]) -> None:
    # a key of its own only where a record has fields, so not a declared (always sent) field
    schema.setdefault("properties", {})["fields"] = FIELDS_SCHEMA


class LogRecordOut(BaseModel):
    """One captured record; Ansible records and tracebacks carry extra keys, records
    logged with ``extra=`` their ``fields``."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_fields_schema)
    seq: int
    timestamp: str
    level: str
    logger: str
    message: str


class JobOut(BaseModel):
    job_id: str
    job_type: str
    params: dict[str, Any]
    status: JobStatus
    progress: float
    current_step: str | None
    result: Any = None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    log_file: str | None
    logs_expired: bool = False
    records_dropped: int = Field(0, description="Records lost on the way (counted, never silent).")
    log_note: str | None = Field(None, description="Why the log is incomplete, when it is.")
    failure: dict[str, Any] | None = Field(
        None,
        description="Digest of why a job failed, when known: for a Python exception "
        '`{"kind": "exception", "type", "message", "causes": [{"type", "message"}, ...] '
        '(its causes, nearest first, down to the root), "frame": {"file", "line", '
        '"function"} | null}`; for a playbook the failed task and `hosts`.',
    )
    recent_logs: list[LogRecordOut] = Field(default_factory=list, description="Newest first.")
    cancel_requested: bool = Field(
        False, description="A cancel was asked for and the job is still stopping."
    )
    duration_s: float | None = Field(
        None, description="Seconds from start to end, so far while running; null before it ran."
    )
    rerun_of: str | None = Field(None, description="The job this one reruns (POST …/rerun).")
    reruns: list[str] = Field(default_factory=list, description="Its reruns, oldest first.")
    memory_mb: int | None = Field(None, description="Its memory limit in MB; null: none.")
    timeout_s: float | None = Field(None, description="Its timeout in seconds; null: none.")
    peak_rss_mb: float | None = Field(
        None,
        description="The most its process tree held in memory (sum of RSS, sampled every "
        "0.2 s), once it ended; null if it never ran.",
    )


class JobList(BaseModel):
    jobs: list[JobOut]
    count: int


class LogsOut(BaseModel):
    job_id: str
    format: LogFormat
    total_lines: int = Field(description="Number of entries in `logs`.")
    logs: list[str] | list[LogRecordOut]
    log_file: str | None
    first_seq: int | None = Field(description="Seq of the first entry returned.")
    last_seq: int | None = Field(description="Seq of the last entry returned: pass it as `after`.")
    latest_seq: int = Field(description="Highest seq written for this job so far.")
    truncated_before: int = Field(description="Lowest seq still kept after rotation.")
    more: bool = Field(description="More matching records follow `last_seq` (with `after`).")


class JobTypeOut(BaseModel):
    name: str
    description: str
    params_schema: dict[str, Any]
    sandbox_paths: dict[str, list[str]] = Field(
        description="Host paths its jobs may `read` and `write` under `--sandbox` (@job's "
        "sandbox_paths): bound into the sandbox, which otherwise shows a read-only system."
    )


class PlaybooksOut(BaseModel):
    playbooks: list[str] = Field(description="Relative to `directory`, sorted.")
    directory: str = Field(description="The server's --playbooks (or the bundled demo's).")


class Health(BaseModel):
    status: str
    workers: int
    workers_alive: int
    pending: int
    running: int


class ErrorOut(BaseModel):
    detail: str


_RECENT_KEYS = ("seq", "timestamp", "level", "logger", "message")


def timestamp(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


def job_out(job: Job, log_file: str | None, recent: list[dict[str, Any]] | None = None) -> JobOut:
    return JobOut(
        job_id=job.job_id,
        job_type=job.job_type,
        params=job.params,
        status=job.status,
        progress=job.progress,
        current_step=job.current_step,
        result=job.result,
        error=job.error,
        created_at=timestamp(job.created_at),  # type: ignore[arg-type]
        started_at=timestamp(job.started_at),
        completed_at=timestamp(job.completed_at),
        log_file=log_file,
        logs_expired=job.logs_expired,
        records_dropped=int(job.extra.get("dropped", 0)),
        log_note=job.extra.get("log_note"),
        failure=job.extra.get("failure") or None,
        recent_logs=[
            LogRecordOut.model_validate({k: r[k] for k in _RECENT_KEYS if k in r})
            for r in recent or []
        ],
        cancel_requested=job.cancel_requested and not job.status.terminal,
        duration_s=job.duration_s(),
        rerun_of=job.extra.get("rerun_of"),
        reruns=list(job.extra.get("reruns", ())),
        memory_mb=job.extra.get("memory_mb"),
        timeout_s=job.extra.get("timeout_s"),
        peak_rss_mb=job.extra.get("peak_rss_mb"),
    )
