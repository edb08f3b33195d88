"""A job's log: tail, minimum level, cursors, Ansible key filters and ``field=`` filters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from jobtrail.api.bodies import logs_body
from jobtrail.api.deps import Service
from jobtrail.api.schemas import ErrorOut, Level, LevelName, LogFormat, LogsOut
from jobtrail.errors import InvalidQuery
from jobtrail.logstore import FieldMatch, LogPage
from jobtrail.records import text_line
from jobtrail.service import JobService

router = APIRouter(prefix="/api", tags=["logs"])

MAX_FIELD_FILTERS = 16


async def field_match(
    field: Annotated[
        list[str] | None,
        Query(
            max_length=MAX_FIELD_FILTERS,
            description=(
                "KEY:VALUE: only records whose fields hold KEY with this value (its text: "
                'attempt:3 matches 3 and "3"); repeatable, all must hold'
            ),
        ),
    ] = None,
) -> FieldMatch | None:
    """The ``field=`` filters of a log route, parsed once; a malformed one is a 422. Async,
    as it does no I/O: FastAPI runs a plain ``def`` dependency in a thread, a hop that cost
    as much as the rest of a logs tail."""
    try:
        return FieldMatch.parse(field)
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None


Fields = Annotated[FieldMatch | None, Depends(field_match)]
"""A log route's ``field=`` filters: ``def route(fields: Fields)`` (also for search)."""


@router.get(
    "/jobs/{job_id}/logs",
    response_model=LogsOut,
    responses={404: {"model": ErrorOut}, 410: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def get_logs(
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
    fields: Fields = None,
) -> Response:
    """Records oldest first: as text lines, or as JSON the stored lines themselves (the
    body is built from the stored bytes, ``api/bodies.py``; ``LogsOut`` documents it).

    A plain tail of a job in memory (``logs_on_loop``: the job page's poll, an agent's) is
    answered on the event loop; anything else reads the files in a thread."""
    match = {k: v for k, v in (("host", host), ("task", task), ("event", event)) if v is not None}
    plain = level is Level.DEBUG and after is None and since is None and not match and not fields
    page = await service.logs_on_loop(job_id, tail) if plain else None
    if page is None:
        page = await run_in_threadpool(
            _read, service, job_id, tail, level.value, after, since, match, fields
        )
    entries = None
    if not format.records:
        entries = page.texts if page.texts is not None else [text_line(r) for r in page.records]
    body = logs_body(job_id, page, entries, service.log_file(job_id))
    return Response(body, media_type="application/json")


def _read(
    service: JobService,
    job_id: str,
    tail: int,
    min_level: str,
    after: int | None,
    since: str | None,
    match: dict[str, str],
    fields: FieldMatch | None,
) -> LogPage:
    service.check_logs(job_id)
    try:
        return service.read(
            job_id,
            tail=tail,
            min_level=min_level,
            after=after,
            since=since,
            match=match or None,
            fields=fields,
        )
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None
