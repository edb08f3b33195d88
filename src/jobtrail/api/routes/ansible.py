"""A playbook job's results as data: the hosts table (PLAY RECAP) and the tasks table."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from jobtrail.api.deps import Service
from jobtrail.api.schemas import ErrorOut
from jobtrail.api.schemas.ansible import HostRow, HostsOut, TaskRow, TasksOut, TaskStatus

router = APIRouter(prefix="/api", tags=["ansible"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    410: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


@router.get("/jobs/{job_id}/hosts", response_model=HostsOut, responses=ERRORS)
def get_hosts(job_id: str, service: Service) -> HostsOut:
    """Per host ok, changed, unreachable, failed, skipped, rescued, ignored (422 for a job
    that is not a playbook)."""
    rows = service.hosts(job_id)
    return HostsOut(job_id=job_id, hosts=[HostRow.model_validate(row) for row in rows])


@router.get("/jobs/{job_id}/tasks", response_model=TasksOut, responses=ERRORS)
def get_tasks(
    job_id: str,
    service: Service,
    status: Annotated[
        TaskStatus | None, Query(description="Only rows with this status (running: acted on now)")
    ] = None,
) -> TasksOut:
    """One row per task and host with its status, start, end and duration."""
    table = service.tasks(job_id, status.value if status is not None else None)
    rows = [TaskRow.model_validate(row) for row in table.tasks]
    return TasksOut(job_id=job_id, tasks=rows, dropped=table.dropped)
