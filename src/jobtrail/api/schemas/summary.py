"""The answer of ``GET /api/jobs/{id}/summary``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from jobtrail.api.schemas import LogRecordOut
from jobtrail.api.schemas.ansible import HostRow


class ShapeOut(BaseModel):
    """A message shape: messages with numbers, hex, uuids, ids and quoted strings replaced
    by ``<n>``, ``<hex>``, ``<uuid>``, ``<str>`` (their first line, up to 200 characters)."""

    shape: str
    count: int = Field(description="Records of this shape in the whole log.")
    first_seq: int
    last_seq: int
    example: LogRecordOut | None = Field(description="Its first record (a long one cut).")


class SummaryOut(BaseModel):
    """The whole log at a glance, rotated-away records included; kept up to date as records
    are written, so it answers at once on any size of log."""

    job_id: str
    records: int = Field(description="Records written, rotated-away ones included.")
    bytes: int = Field(description="Bytes of those records as stored.")
    levels: dict[str, int] = Field(description="Records per level (every level named).")
    first_error: LogRecordOut | None = Field(description="The first ERROR or CRITICAL record.")
    last_error: LogRecordOut | None = Field(description="The last ERROR or CRITICAL record.")
    repeated: list[ShapeOut] = Field(
        description="The most frequent message shapes seen at least twice, most first (≤ 20)."
    )
    first_timestamp: str | None
    last_timestamp: str | None
    span_s: float | None = Field(description="Seconds from the first record to the last.")
    records_dropped: int = Field(description="Records lost on the way (as in the job's JSON).")
    truncated_before: int = Field(description="Lowest seq still kept after rotation.")
    summarised_to_seq: int = Field(description="The summary covers every record up to this seq.")
    gap: int = Field(
        description="Records rotation deleted before the summary read them (0 normally)."
    )
    hosts: list[HostRow] | None = Field(
        description="A playbook's PLAY RECAP per host; null for other jobs."
    )
