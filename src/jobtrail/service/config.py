"""What a server is configured with, whichever backend runs its jobs.

Importable without redis or rq (the CLI reads it in local mode): nothing here opens anything.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

START_METHODS = ("fork", "spawn", "forkserver")
WORKER_CPU = ("idle", "nice")  # serve --worker-cpu


def default_start_method() -> str:
    """forkserver: workers start from a clean single-threaded process, not a copy of the
    multi-threaded server (fork), and faster than spawn; env JOBTRAIL_START_METHOD overrides."""
    method = os.environ.get("JOBTRAIL_START_METHOD", "forkserver")
    if method not in START_METHODS:
        raise ValueError(
            f"JOBTRAIL_START_METHOD must be one of {', '.join(START_METHODS)}; got {method!r}"
        )
    return method


def default_home() -> Path:
    return Path(os.environ.get("JOBTRAIL_HOME", "~/.jobtrail")).expanduser()


# the standard variables that name an OTLP receiver (the exporter reads them and the other
# OTEL_EXPORTER_OTLP_* ones itself): either turns log export on, as --otlp-endpoint does
OTLP_ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def wants_log_export(otlp_endpoint: str | None) -> bool:
    """Export every record to an OTLP receiver (service/otel.py): named here or in the env."""
    return bool(otlp_endpoint) or any(os.environ.get(name) for name in OTLP_ENDPOINT_ENV)


def is_redis_url(backend: str) -> bool:
    return urlparse(backend).scheme in ("redis", "rediss", "unix")


def check_backend(backend: str) -> str:
    """``local`` or a redis URL; anything else is a clear error."""
    if backend == "local" or is_redis_url(backend):
        return backend
    raise ValueError(
        f"backend must be 'local' or a redis URL such as redis://host:6379/0; got {backend!r}"
    )


@dataclass(frozen=True)
class ServerConfig:
    home: Path = field(default_factory=default_home)
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    start_method: str = field(default_factory=default_start_method)
    job_modules: tuple[str, ...] = ()
    playbooks: Path | None = None
    log_max_bytes: int = 10 * 1024 * 1024
    log_segments: int = 5
    retention_hours: float = 72.0
    capture_level: int = logging.DEBUG
    worker_nice: int = 10  # 0: jobs run beside the server, not below it
    worker_cpu: str = "nice"  # how they run below it: by nice, or "idle" (jobtrail.cpu_group)
    max_pending: int = 10_000
    token: str | None = None  # with a token, every endpoint but /api/health needs it
    redact_patterns: tuple[str, ...] = ()
    redact_defaults: bool = True
    backend: str = "local"  # or redis://HOST:PORT/DB: see jobtrail.backends.redis
    job_memory_mb: int = 0  # a job's memory limit when neither it nor its type sets one; 0: none
    job_timeout: float = 0.0  # the same for its timeout, in seconds
    otlp_endpoint: str | None = None  # an OTLP/HTTP receiver for every record: service/otel.py
    job_user: str | None = None  # jobs run as this user (the server as root): jobtrail.isolation
    sandbox: bool = False  # each worker runs under bubblewrap: jobtrail.isolation
