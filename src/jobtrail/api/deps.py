"""The ``Depends`` functions routes share: the service, and two request checks.

Routes reach the service only through ``get_service``, which reads what the app's lifespan
opened (never a module global), so a test can swap it with ``dependency_overrides``. The
checks run as dependencies, before FastAPI validates anything else, so the error names the
real problem first: a query parameter the route does not declare, or a body not sent as JSON.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from jobtrail.errors import InvalidQuery, UnsupportedMediaType
from jobtrail.service import JobService


async def get_service(request: Request) -> JobService:
    """Async so FastAPI calls it on the event loop instead of a threadpool hop per request."""
    service: JobService = request.app.state.service
    return service


Service = Annotated[JobService, Depends(get_service)]
"""A route's service parameter: ``def route(service: Service)``."""


async def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take (``logs?grep=x`` would otherwise
    answer the whole log, as if filtered). Routes left out of the schema (the web page,
    ``/docs``) are not checked: the schema is the list of what a route takes."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return
    known = _query_names(route)
    unknown = [name for name in dict.fromkeys(request.query_params) if name not in known]
    if not unknown:
        return
    names = ", ".join(repr(name) for name in unknown)
    noun = "parameter" if len(unknown) == 1 else "parameters"
    takes = f"takes: {', '.join(known)}" if known else "takes no query parameters"
    raise InvalidQuery(f"unknown query {noun} {names}; {request.method} {route.path} {takes}")


def _query_names(route: APIRoute) -> tuple[str, ...]:
    """The route's query parameters as the schema names them, in declaration order (a walk
    of a few objects: cheaper than a cache keyed by routes, which do not hash)."""
    names: list[str] = []
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop(0)
        names += [field.alias for field in dependant.query_params if field.alias not in names]
        pending += dependant.dependencies
    return tuple(names)


async def require_json(request: Request) -> None:
    """415 for a body sent as another media type, or with none: FastAPI reads a body as JSON
    only when the header says so, and would answer that a JSON object is not one."""
    content_type = request.headers.get("content-type")
    if not content_type:
        raise UnsupportedMediaType(None)
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType(content_type)
