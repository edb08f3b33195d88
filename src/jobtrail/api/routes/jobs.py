"""Jobs: submit, list, show (with the newest log lines), cancel; job types, playbooks; health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from jobtrail.api.bodies import job_body
from jobtrail.api.deps import Service, require_json
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
from jobtrail.api.schemas.rerun import RerunJob
from jobtrail.limits import Limits
from jobtrail.models import JobStatus
from jobtrail.registry import job_types
from jobtrail.service import JobService

router = APIRouter(prefix="/api", tags=["jobs"])
RECENT_LOGS = 50
JSON = "application/json"


async def json_if_any(request: Request) -> None:
    """A rerun may come without a body; one it has must be sent as JSON (415 otherwise)."""
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        await require_json(request)


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    responses={415: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    dependencies=[Depends(require_json)],
)
def submit_job(body: SubmitJob, service: Service) -> JobOut:
    limits = Limits(body.memory_mb, body.timeout_s)
    job = service.submit(body.type, body.params, limits=limits)
    return job_out(job, service.log_file(job.job_id))


@router.get("/jobs", response_model=JobList)
def list_jobs(
    service: Service,
    status: JobStatus | None = None,
    type: Annotated[str | None, Query(max_length=48)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobList:
    jobs = service.list(status.value if status else None, type, limit)
    return JobList(
        jobs=[job_out(job, service.log_file(job.job_id)) for job in jobs], count=len(jobs)
    )


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"model": ErrorOut}})
async def get_job(job_id: str, service: Service) -> Response:
    """The job with its newest records (``recent_logs``: their first five keys, newest
    first). Served from the stored bytes (``api/bodies.py``); ``JobOut`` documents it.

    On the event loop when the job is had there (``peek_on_loop``: in memory, or awaited
    from Redis), else in a thread: the hop costs more than the rest of such a request
    (0.3 of 0.8 ms)."""
    job = await service.peek_on_loop(job_id)
    recent: list[bytes] | None = []
    if job is not None and not job.logs_expired:
        recent = service.recent_heads_at_once(job_id, RECENT_LOGS)
    if job is None or recent is None:
        return await run_in_threadpool(_job_response, service, job_id)
    return Response(job_body(job, service.log_file(job_id), recent), media_type=JSON)


def _job_response(service: JobService, job_id: str) -> Response:
    job = service.get(job_id)
    recent = [] if job.logs_expired else service.recent_heads(job_id, RECENT_LOGS)
    return Response(job_body(job, service.log_file(job_id), recent), media_type=JSON)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
def cancel_job(job_id: str, service: Service) -> JobOut:
    """What the cancel did: ``cancelled`` for a pending job; a running one stays ``running``
    with ``cancel_requested`` until its processes are stopped (asking again is harmless)."""
    job = service.cancel(job_id)
    return job_out(job, service.log_file(job_id))


@router.post(
    "/jobs/{job_id}/rerun",
    status_code=202,
    response_model=JobOut,
    responses={
        404: {"model": ErrorOut},
        409: {"model": ErrorOut},
        415: {"model": ErrorOut},
        422: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
    dependencies=[Depends(json_if_any)],
)
def rerun_job(job_id: str, service: Service, body: RerunJob | None = None) -> JobOut:
    """A new job of the ended job's type and params, overrides applied (`rerun_of` set;
    the old job's `reruns` lists it). The body may be left out."""
    body = body or RerunJob()
    job = service.rerun(job_id, failed_hosts_only=body.failed_hosts_only, params=body.params)
    return job_out(job, service.log_file(job.job_id))


@router.get("/job-types", response_model=list[JobTypeOut])
def list_job_types() -> list[JobTypeOut]:
    return [
        JobTypeOut(
            name=t.name,
            description=t.description,
            params_schema=t.schema(),
            sandbox_paths=t.sandbox_paths.to_json(),
        )
        for t in sorted(job_types().values(), key=lambda t: t.name)
    ]


@router.get("/playbooks", response_model=PlaybooksOut)
def list_playbooks(service: Service) -> PlaybooksOut:
    """What ``ansible_playbook``'s ``playbook`` may name (a file walk: run in a thread)."""
    found = service.playbooks()
    return PlaybooksOut(playbooks=found.playbooks, directory=found.directory)


@router.get("/health", response_model=Health)
async def health(service: Service) -> Health:
    """On the event loop: the counts in memory, or awaited from Redis; else in a thread."""
    health = await service.health_on_loop()
    if health is None:
        health = await run_in_threadpool(service.health)
    return Health(
        status="ok",
        workers=health.workers,
        workers_alive=health.workers_alive,
        pending=health.pending,
        running=health.running,
    )
