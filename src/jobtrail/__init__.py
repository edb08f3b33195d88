"""jobtrail: run jobs in a process pool and watch their logs as closely as from a terminal."""

from jobtrail.errors import (
    InvalidParams,
    JobFinished,
    JobNotFound,
    JobtrailError,
    LogsExpired,
    UnknownJobType,
)
from jobtrail.models import Job, JobStatus
from jobtrail.registry import job
from jobtrail.sandbox_paths import SandboxPaths
from jobtrail.worker.runtime import progress

__all__ = [
    "InvalidParams",
    "Job",
    "JobFinished",
    "JobNotFound",
    "JobStatus",
    "JobtrailError",
    "LogsExpired",
    "SandboxPaths",
    "UnknownJobType",
    "job",
    "progress",
]
