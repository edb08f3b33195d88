"""The one place errors become HTTP: each ``JobtrailError`` subclass has its status, and a
request FastAPI could not validate gets one 422 line per problem that says what to fix."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from jobtrail.errors import (
    CannotRerun,
    InvalidParams,
    InvalidQuery,
    JobFinished,
    JobNotEnded,
    JobNotFound,
    JobtrailError,
    LogsExpired,
    QueueFull,
    UnknownJobType,
    UnsupportedMediaType,
)

STATUS: dict[type[JobtrailError], int] = {
    JobNotFound: 404,
    UnknownJobType: 422,
    InvalidParams: 422,
    InvalidQuery: 422,
    JobFinished: 409,
    JobNotEnded: 409,
    CannotRerun: 422,
    LogsExpired: 410,
    QueueFull: 503,
    UnsupportedMediaType: 415,
}
"""Any other ``JobtrailError`` is a 400: the request asked for something that cannot be."""


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(JobtrailError, _jobtrail_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]


async def _jobtrail_error(request: Request, exc: JobtrailError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=STATUS.get(type(exc), 400))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [describe(err) for err in exc.errors()]
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)


def describe(err: dict[str, Any]) -> str:
    """One validation problem in words: where, and what was wrong with what was sent."""
    loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path")]
    where = ".".join(loc) if loc != ["body"] else "body"
    if err.get("type") == "missing":
        return f"{where}: required"
    if err.get("type") in ("model_attributes_type", "dict_type") and loc == ["body"]:
        return 'body: must be a JSON object such as {"type": "sleep", "params": {}}'
    if err.get("type") == "json_invalid":
        return "body: is not valid JSON"
    return f"{where}: {err.get('msg')} (got {err.get('input')!r})"
