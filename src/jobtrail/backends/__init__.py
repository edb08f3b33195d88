"""The backends that run jobs, and the composition root that picks one.

A backend is chosen from ``BACKENDS`` by the scheme of ``config.backend`` (as uvicorn picks
its loops and protocols from a table), and imported only then: redis and rq stay optional.
Each backend module offers ``open_backend(config, home, store, events) -> ports.Backend``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:  # imported when called: a distributed job's image imports none of them
    from jobtrail.service.config import ServerConfig
    from jobtrail.service.service import JobService

BACKENDS = {
    "local": "jobtrail.backends.local",
    "redis": "jobtrail.backends.redis",
    "rediss": "jobtrail.backends.redis",
    "unix": "jobtrail.backends.redis",  # redis over a unix socket: unix:///path/redis.sock
}


def open_service(config: ServerConfig) -> JobService:
    """The service for ``config``, with the home locked and the backend's parts built (not
    started: ``start()`` does that). ValueError for an unknown backend; ImportError when
    its optional dependencies are not installed; ``HomeInUse``."""
    from jobtrail.service.config import check_backend
    from jobtrail.service.ports import OpenBackend
    from jobtrail.service.service import JobService

    scheme = check_backend(config.backend).partition("://")[0]
    module = importlib.import_module(BACKENDS[scheme])
    return JobService(config, cast(OpenBackend, module.open_backend))
