"""A job's log: tail, minimum level, cursors, and Ansible field filters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from jobtrail.api.deps import Service
from jobtrail.api.schemas import ErrorOut, Level, LevelName, LogFormat, LogRecordOut, LogsOut
from jobtrail.errors import InvalidQuery
from jobtrail.records import text_line

router = APIRouter(prefix="/api", tags=["logs"])


@router.get(
    "/jobs/{job_id}/logs",
    response_model=LogsOut,
    responses={404: {"model": ErrorOut}, 410: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def get_logs(
    job_id: str,
    service: Service,
    tail: Annotated[int, Query(ge=1, le=10000, description="How many matching records")] = 100,
    level: Annotated[LevelName, Query()] = Level.DEBUG,
    format: Annotated[
        LogFormat, Query(description="text lines, or the records as JSON (json or jsonl)")
    ] = LogFormat.text,
    after: Annotated[
        int | None, Query(ge=0, description="Only records with a larger seq, oldest first")
    ] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="Only records at or after this ISO time")
    ] = None,
    host: Annotated[str | None, Query(max_length=256)] = None,
    task: Annotated[str | None, Query(max_length=1024)] = None,
    event: Annotated[str | None, Query(max_length=64)] = None,
) -> LogsOut:
    service.check_logs(job_id)
    match = {k: v for k, v in (("host", host), ("task", task), ("event", event)) if v is not None}
    try:
        page = service.read(
            job_id, tail=tail, min_level=level.value, after=after, since=since, match=match or None
        )
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None
    entries: list[str] | list[LogRecordOut]
    if format.records:
        entries = [LogRecordOut.model_validate(r) for r in page.records]
    else:
        entries = [text_line(r) for r in page.records]
    return LogsOut(
        job_id=job_id,
        format=LogFormat.json if format.records else LogFormat.text,
        total_lines=len(entries),
        logs=entries,
        log_file=service.log_file(job_id),
        first_seq=page.first_seq,
        last_seq=page.last_seq,
        latest_seq=page.latest_seq,
        truncated_before=page.truncated_before,
        more=page.more,
    )
