"""What the client raises: one class per way a call can fail, under ``ClientError``.

::

    JobtrailError                   (jobtrail.errors: the base of everything jobtrail raises)
     └── ClientError
          ├── ServerUnavailable     the server cannot be reached (connection refused, reset,
          │                         timed out), or a follow() lost its stream for 30 s
          ├── ServerStopping        follow(): the server said it is stopping before the job ended
          ├── WaitTimeout           wait(timeout=...) ran out with the job still going
          └── RequestFailed         the server answered with an error status
               ├── Unauthorized     401: the server wants a token, or another one
               ├── JobNotFound      404: no job has this id (or it is not one jobtrail issues)
               ├── JobFinished      409: the job already ended, so it cannot be cancelled
               ├── LogsExpired      410: retention deleted the job's logs (the job is kept)
               └── InvalidRequest   422 (and 413, 415): a parameter the server cannot use
                    └── InvalidParams   422 from submit() or rerun(): unknown job type or
                                        wrong (or missing secret) params

Each ``RequestFailed`` keeps the HTTP status and the server's message, which says what to
fix ("invalid params for 'deploy': replicas: ..."); ``str(exc)`` is that message.
"""

from __future__ import annotations

import httpx

from jobtrail.errors import JobtrailError


class ClientError(JobtrailError):
    """Base class of what ``jobtrail.client`` raises."""


class ServerUnavailable(ClientError):
    """The server could not be reached, or stopped answering (see the chained cause)."""


class ServerStopping(ClientError):
    """The server sent its ``shutdown`` event: it is stopping while the followed job has not
    ended. A restarted server will not resume this stream, so follow() ends instead of
    retrying; follow the job again once the server is back."""

    def __init__(self, url: str, job_id: str, status: str) -> None:
        super().__init__(f"the server at {url} is stopping; job {job_id} was still {status}")
        self.job_id = job_id
        self.status = status


class WaitTimeout(ClientError, TimeoutError):
    """wait() gave up: the job had not ended within its timeout (it keeps running)."""

    def __init__(self, job_id: str, status: str, timeout: float) -> None:
        super().__init__(f"job {job_id} was still {status} after {timeout:g} s")
        self.job_id = job_id
        self.status = status


class RequestFailed(ClientError):
    """The server refused or failed the request: ``status_code`` and its ``detail``."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class Unauthorized(RequestFailed):
    """401: the server was started with a token; pass ``token=`` (the same one)."""


class JobNotFound(RequestFailed):
    """404: no job has this id (it may never have existed, or the id is malformed)."""


class JobFinished(RequestFailed):
    """409: the job already reached a terminal status, so there is nothing to cancel."""


class LogsExpired(RequestFailed):
    """410: retention deleted the job's logs; get_job() still answers."""


class InvalidRequest(RequestFailed):
    """422 (or 413/415): a query parameter or the body cannot be used as given."""


class InvalidParams(InvalidRequest):
    """422 from submit() or rerun(): the job type is not registered, the params do not fit
    it, or a rerun cannot be made as asked (secret params to give again, no failed host)."""


_BY_STATUS: dict[int, type[RequestFailed]] = {
    401: Unauthorized,
    404: JobNotFound,
    409: JobFinished,
    410: LogsExpired,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
}


def raise_for_status(response: httpx.Response, invalid: type[InvalidRequest]) -> None:
    """The error an answer of 400 or more stands for; ``invalid`` is the class a 422 gets
    (``InvalidParams`` from submit, where the request itself is the client's and well formed).
    A streamed response must have been read first."""
    if response.status_code < 400:
        return
    try:
        detail = str(response.json().get("detail", response.text))
    except (ValueError, AttributeError):  # not JSON, or not an object: a proxy's page
        detail = response.text
    kind = _BY_STATUS.get(response.status_code, RequestFailed)
    if kind is InvalidRequest and response.status_code == 422:
        kind = invalid
    raise kind(response.status_code, detail)


def unreachable(url: str, exc: httpx.TransportError) -> ServerUnavailable:
    return ServerUnavailable(f"cannot reach the jobtrail server at {url}: {exc}")
