"""One ``APIRouter`` per resource: jobs, logs, the live stream and download, the pages.

Every route reaches the service through ``deps.Service`` and nothing else. The service's
methods may block (SQLite, Redis, file reads), so a route that calls one is a plain ``def``
route, which FastAPI runs in its threadpool; only the stream generators run on the event
loop, and they hand each blocking call to a thread.
"""
