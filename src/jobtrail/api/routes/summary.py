"""A job's log summary: counts per level, first and last error, repeated message shapes."""

from __future__ import annotations

from fastapi import APIRouter

from jobtrail.api.deps import Service
from jobtrail.api.schemas import ErrorOut
from jobtrail.api.schemas.summary import SummaryOut

router = APIRouter(prefix="/api", tags=["logs"])


@router.get(
    "/jobs/{job_id}/summary",
    response_model=SummaryOut,
    responses={404: {"model": ErrorOut}, 410: {"model": ErrorOut}},
)
def get_summary(job_id: str, service: Service) -> SummaryOut:
    """Plain ``def``: a summary the keeper has not caught up with reads the files."""
    found = service.summary(job_id)
    return SummaryOut.model_validate(
        {
            "job_id": job_id,
            "records": found.records,
            "bytes": found.bytes,
            "levels": found.levels,
            "first_error": found.first_error,
            "last_error": found.last_error,
            "repeated": found.repeated,
            "first_timestamp": found.first_timestamp,
            "last_timestamp": found.last_timestamp,
            "span_s": found.span_s,
            "records_dropped": found.records_dropped,
            "truncated_before": found.truncated_before,
            "summarised_to_seq": found.summarised_to_seq,
            "gap": found.gap,
            "hosts": found.folds.get("hosts"),
        }
    )
