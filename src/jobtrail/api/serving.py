"""The HTTP server that runs the app: uvicorn's, plus one step at the start of its shutdown.

uvicorn stops in this order: stop accepting, ask open connections to finish, wait for them
(``timeout_graceful_shutdown``), cancel what is left, then the app's lifespan shutdown. A log
stream never finishes by itself while its job runs, so each one held a SIGTERM for the whole
timeout and was then cancelled with a traceback. Here the streams are told first
(``stream.stop_streams``): each sends its ``shutdown`` event and closes, and the wait that
follows is over in milliseconds.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from jobtrail.api.stream import stop_streams


class ApiServer(uvicorn.Server):
    """``uvicorn.Server`` whose shutdown ends the app's log streams before it waits."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if isinstance(self.config.app, FastAPI):
            stop_streams(self.config.app)
        await super().shutdown(sockets)
