"""Client errors as tool errors: each says what went wrong and what to call next, so the
model can recover; the session itself never fails for a bad call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mcp.server.mcpserver.exceptions import ToolError

from jobtrail.client import (
    ClientError,
    InvalidParams,
    InvalidRequest,
    JobFinished,
    JobNotFound,
    LogsExpired,
    RequestFailed,
    ServerStopping,
    ServerUnavailable,
    Unauthorized,
    WaitTimeout,
)


def advice(exc: ClientError, job_id: str | None = None) -> str:
    """The message of a tool error for ``exc``: what happened, then what to do next."""
    job = f"job {job_id!r}" if job_id else "the job"
    if isinstance(exc, JobNotFound):
        return f"no {job} on this server ({exc}): list_jobs shows the recent ones"
    if isinstance(exc, LogsExpired):
        return (
            f"the log of {job} was deleted by retention ({exc}); "
            "get_job still has its status, error and failure digest"
        )
    if isinstance(exc, JobFinished):
        return f"{job} has already ended ({exc}): nothing to cancel; get_job shows how it ended"
    if isinstance(exc, InvalidParams):
        return f"the server refused the params: {exc}. list_job_types shows each type's params"
    if isinstance(exc, InvalidRequest):
        return f"the server refused the request: {exc}. Fix the argument it names and call again"
    if isinstance(exc, Unauthorized):
        return (
            "the server wants a token: start `jobtrail mcp` with --token "
            "(or JOBTRAIL_TOKEN), or send 'Authorization: Bearer <token>' to /mcp"
        )
    if isinstance(exc, ServerUnavailable):
        return f"{exc}: is it running? Try again shortly"
    if isinstance(exc, ServerStopping):
        return f"the jobtrail server is stopping: {exc}. Try again once it is back"
    if isinstance(exc, WaitTimeout):
        return f"{exc}: call wait_job again to keep waiting"
    if isinstance(exc, RequestFailed):
        return f"the server answered {exc.status_code}: {exc}"
    return str(exc)


@contextlib.contextmanager
def tool_errors(job_id: str | None = None) -> Iterator[None]:
    """Turn a ``ClientError`` raised inside into a ``ToolError`` the model can act on."""
    try:
        yield
    except ClientError as exc:
        raise ToolError(advice(exc, job_id)) from exc
