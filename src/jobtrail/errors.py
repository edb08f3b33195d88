"""Everything jobtrail raises on purpose, under one base class.

    JobtrailError
     ├── JobNotFound          no job has this id (or it is not an id jobtrail issues)
     ├── UnknownJobType       the type is not registered
     ├── InvalidParams        params do not fit the job function's signature
     ├── JobFinished          the job already ended, so it cannot be cancelled
 ├── JobNotEnded          the job has not ended yet, so it cannot be rerun
 ├── CannotRerun          a rerun cannot be made as asked (secrets not stored, no failed host)
     ├── LogsExpired          the job's logs were removed by retention
     ├── QueueFull            too many jobs are waiting already
     ├── InvalidQuery         a query parameter cannot be used as given, or is unknown
     ├── UnsupportedMediaType a body came without ``Content-Type: application/json``
     ├── JobModuleError       a ``--jobs-module`` could not be imported
     └── JobFailed            job code failing on purpose, with a digest of why

The API maps each class to one HTTP status in one place (``api/app.py``); the messages are
written for the person who has to fix the request.
"""

from __future__ import annotations

import traceback


class JobtrailError(Exception):
    """Base class of every error jobtrail raises on purpose."""


class JobNotFound(JobtrailError):
    """No job has this id (it may never have existed, or it is not of jobtrail's shape)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class UnknownJobType(JobtrailError):
    """The requested job type is not registered; the message lists the ones that are."""

    def __init__(self, job_type: str, known: list[str]) -> None:
        super().__init__(
            f"unknown job type {job_type!r}; known types: {', '.join(sorted(known)) or 'none'}"
        )
        self.job_type = job_type


class InvalidParams(JobtrailError):
    """The params do not fit the job function: each problem names its parameter."""

    def __init__(self, job_type: str, problems: list[str]) -> None:
        super().__init__(f"invalid params for {job_type!r}: " + "; ".join(problems))
        self.problems = problems


class JobFinished(JobtrailError):
    """The job already reached a terminal status."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id!r} already ended with status {status!r}")


class JobNotEnded(JobtrailError):
    """The job is still pending or running: a rerun starts from how a job ended."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(
            f"job {job_id!r} is still {status}: rerun it once it ended (or cancel it first)"
        )


class CannotRerun(JobtrailError):
    """The job cannot be run again as asked; the message says what to send instead."""


class LogsExpired(JobtrailError):
    """Retention removed the job's logs; the job record itself is kept."""

    def __init__(self, job_id: str, hours: float) -> None:
        super().__init__(
            f"the logs of job {job_id!r} were deleted by retention (older than {hours:g} h)"
        )


class QueueFull(JobtrailError):
    """Too many jobs are already pending; submit again once some have started."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} jobs are already pending (the limit); try again later")


class InvalidQuery(JobtrailError):
    """A query parameter has a value the API cannot use; the message says which and why."""


class UnsupportedMediaType(JobtrailError):
    """A request body was sent as another media type (``curl -d`` sends a form's): 415, the
    status that names the problem, instead of a 422 saying a JSON object is not one."""

    def __init__(self, content_type: str | None) -> None:
        got = f"it came as {content_type!r}" if content_type else "it came without one"
        super().__init__(f"body: send it with the header 'Content-Type: application/json' ({got})")


class JobModuleError(JobtrailError):
    """A ``--jobs-module`` could not be imported: missing, or it raised while importing.

    One line that names the module and what went wrong, because the person reading it wants
    to fix a path or a typo, not to read importlib's frames."""

    def __init__(self, module: str, exc: Exception) -> None:
        name = getattr(exc, "name", None)
        if isinstance(exc, ModuleNotFoundError) and name and (module + ".").startswith(name + "."):
            what = f"{exc} (run from the folder that holds it, or pass --app-dir)"
        elif isinstance(exc, (ModuleNotFoundError, SyntaxError)):
            what = str(exc)  # a missing dependency, or the file and line of the syntax error
        else:
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
            what = f"{type(exc).__name__}: {exc}{where}"
        super().__init__(f"cannot import job module {module!r}: {what}")
        self.module = module


class JobFailed(JobtrailError):
    """Raised by job code to fail with a one-line reason and a structured digest.

    The runner copies ``failure`` into the job's JSON (e.g. which task failed on which
    host), and ``str(exc)`` becomes the job's ``error``.
    """

    def __init__(self, message: str, failure: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.failure = failure or {}
