"""The answer of ``GET /api/jobs/{id}/logs/search``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from jobtrail.api.schemas import LogRecordOut
from jobtrail.logstore import SearchPage


class SearchMatchOut(LogRecordOut):
    """The matching record (its own keys) with its neighbours in the unfiltered log."""

    before: list[LogRecordOut] = Field(description="Up to `context` records before it.")
    after: list[LogRecordOut] = Field(description="Up to `context` records after it.")


class SearchOut(BaseModel):
    """Matches of `q` in the record's message or traceback (`exc_text`), in every kept
    segment. Regexes are RE2 (linear time, so no pattern can hang the server)."""

    job_id: str
    q: str
    regex: bool
    ignore_case: bool
    total_matches: int = Field(
        description="Every match in the kept log from `after` on, also past `max`."
    )
    matches: list[SearchMatchOut] = Field(description="Oldest first, at most `max`.")
    more: bool = Field(description="Matches follow the last one returned: pass `next_after`.")
    next_after: int | None = Field(
        description="Seq of the last match returned while `more`: pass it as `after`."
    )
    truncated_before: int | None = Field(
        description="Lowest seq still kept after rotation; null when rotation removed nothing."
    )
    latest_seq: int = Field(description="Highest seq written for this job so far.")


def search_out(job_id: str, q: str, regex: bool, ignore_case: bool, page: SearchPage) -> SearchOut:
    return SearchOut(
        job_id=job_id,
        q=q,
        regex=regex,
        ignore_case=ignore_case,
        total_matches=page.total_matches or 0,
        matches=[
            SearchMatchOut.model_validate({**m.record, "before": m.before, "after": m.after})
            for m in page.matches
        ],
        more=page.more,
        next_after=page.next_after,
        truncated_before=page.truncated_before if page.truncated_before > 1 else None,
        latest_seq=page.latest_seq,
    )
