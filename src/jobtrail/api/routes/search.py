"""Search a job's whole kept log for text or a regex, with the log endpoint's filters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from jobtrail.api.bodies import search_body
from jobtrail.api.deps import Service
from jobtrail.api.routes.logs import Fields
from jobtrail.api.schemas import ErrorOut, Level, LevelName
from jobtrail.api.schemas.search import SearchOut
from jobtrail.errors import InvalidQuery

router = APIRouter(prefix="/api", tags=["logs"])

MAX_QUERY = 1000  # characters of q: RE2 compiles in time linear in it, within its memory cap

Q = Annotated[
    str,
    Query(
        min_length=1,
        max_length=MAX_QUERY,
        description="Text to find in a record's message or traceback (a regex with regex=true)",
    ),
]
Regex = Annotated[
    bool,
    Query(
        description="q is an RE2 regex (linear time, so no pattern can hang the server; "
        "no backreferences or lookaround)"
    ),
]
IgnoreCase = Annotated[bool, Query(description="Match letters in either case")]


@router.get(
    "/jobs/{job_id}/logs/search",
    response_model=SearchOut,
    responses={404: {"model": ErrorOut}, 410: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def search_logs(
    job_id: str,
    service: Service,
    q: Q,
    regex: Regex = False,
    ignore_case: IgnoreCase = False,
    context: Annotated[
        int, Query(ge=0, le=20, description="Neighbours before and after each match")
    ] = 2,
    max_matches: Annotated[
        int, Query(alias="max", ge=1, le=1000, description="Matches to return")
    ] = 100,
    level: Annotated[LevelName, Query()] = Level.DEBUG,
    after: Annotated[
        int | None, Query(ge=0, description="Only records with a larger seq (`next_after`)")
    ] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="Only records at or after this ISO time")
    ] = None,
    host: Annotated[str | None, Query(max_length=256)] = None,
    task: Annotated[str | None, Query(max_length=1024)] = None,
    event: Annotated[str | None, Query(max_length=64)] = None,
    fields: Fields = None,
) -> Response:
    """Matches oldest first, each with `context` neighbours from the unfiltered log, and
    `total_matches` over the whole kept log; a regex RE2 refuses is a 422 quoting why.
    Served from the stored lines (``api/bodies.py``); ``SearchOut`` documents it."""
    service.check_logs(job_id)
    match = {k: v for k, v in (("host", host), ("task", task), ("event", event)) if v is not None}
    try:
        page = service.search(
            job_id,
            q,
            regex=regex,
            ignore_case=ignore_case,
            context=context,
            max_matches=max_matches,
            min_level=level.value,
            after=after,
            since=since,
            match=match or None,
            fields=fields,
        )
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None
    return Response(search_body(job_id, q, regex, ignore_case, page), media_type="application/json")
