"""A server in either mode, for the tests that run against both."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import pytest

from jobtrail.service.config import ServerConfig
from support.live import Live, live_server
from support.redis_server import redis_server, workers

MODES = ["local", "redis"]  # the params of a fixture that runs its module in both modes


@contextlib.contextmanager
def serve_in_mode(
    mode: str, config: ServerConfig, tmp_path_factory: pytest.TempPathFactory, worker_count: int = 2
) -> Iterator[Live]:
    """``config`` served in ``mode``: "local" runs its pool; "redis" starts a real
    redis-server and ``worker_count`` `jobtrail worker`s, and points ``config`` at it."""
    if mode == "local":
        with live_server(config) as live:
            yield live
        return
    with (
        redis_server(tmp_path_factory.mktemp("redis")) as rs,
        workers(rs.url, count=worker_count),
        live_server(replace(config, backend=rs.url)) as live,
    ):
        yield live
