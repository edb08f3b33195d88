"""Jobs: submit, list, show (with the newest log lines), cancel; job types, playbooks; health."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from jobtrail.api.checks import require_json
from jobtrail.api.deps import get_server
from jobtrail.api.schemas import (
    ErrorOut,
    Health,
    JobList,
    JobOut,
    JobTypeOut,
    PlaybooksOut,
    SubmitJob,
    job_out,
)
from jobtrail.jobtypes.ansible import job as ansible
from jobtrail.models import JobStatus
from jobtrail.registry import job_types
from jobtrail.service.service import JobServer

router = APIRouter(prefix="/api", tags=["jobs"])
Server = Annotated[JobServer, Depends(get_server)]
RECENT_LOGS = 50


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    responses={415: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    dependencies=[Depends(require_json)],
)
def submit_job(body: SubmitJob, server: Server) -> JobOut:
    job = server.submit(body.type, body.params)
    return job_out(job, server.log_file(job.job_id))


@router.get("/jobs", response_model=JobList)
def list_jobs(
    server: Server,
    status: JobStatus | None = None,
    type: Annotated[str | None, Query(max_length=48)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobList:
    jobs = server.list(status.value if status else None, type, limit)
    return JobList(
        jobs=[job_out(job, server.log_file(job.job_id)) for job in jobs], count=len(jobs)
    )


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"model": ErrorOut}})
async def get_job(job_id: str, server: Server) -> JobOut:
    job = server.get(job_id)
    recent = [] if job.logs_expired else server.recent(job_id, RECENT_LOGS)
    return job_out(job, server.log_file(job_id), recent)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
def cancel_job(job_id: str, server: Server) -> JobOut:
    """What the cancel did: ``cancelled`` for a pending job; a running one stays ``running``
    with ``cancel_requested`` until its processes are stopped (asking again is harmless)."""
    job = server.cancel(job_id)
    return job_out(job, server.log_file(job_id))


@router.get("/job-types", response_model=list[JobTypeOut])
def list_job_types() -> list[JobTypeOut]:
    return [
        JobTypeOut(name=t.name, description=t.description, params_schema=t.schema())
        for t in sorted(job_types().values(), key=lambda t: t.name)
    ]


@router.get("/playbooks", response_model=PlaybooksOut)
def list_playbooks() -> PlaybooksOut:
    """What ``ansible_playbook``'s ``playbook`` may name (a file walk: run in a thread)."""
    base = ansible.playbooks_dir()
    return PlaybooksOut(playbooks=ansible.list_playbooks(base), directory=str(base))


@router.get("/health", response_model=Health)
async def health(server: Server) -> Health:
    health = await asyncio.to_thread(server.health)  # Redis mode asks Redis: not on the loop
    return Health(
        status="ok",
        workers=health.workers,
        workers_alive=health.workers_alive,
        pending=health.pending,
        running=health.running,
    )
