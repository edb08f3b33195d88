"""jobtrail's Python client: everything the REST API offers, as typed calls.

::

    from jobtrail.client import Client

    with Client("http://127.0.0.1:8765") as jobtrail:
        job = jobtrail.submit("deploy", {"service": "web"})
        for item in jobtrail.follow(job.job_id):   # LogRecord, or Gap after a rotation
            print(item)
        print(jobtrail.get_job(job.job_id).status)

To learn why a job failed without reading all of its log: ``search(job_id, "refused")``
(matches with their context), ``summary(job_id)``, and for a playbook ``hosts(job_id)`` (the
PLAY RECAP) and ``tasks(job_id)``; ``rerun(job_id, failed_hosts_only=True)`` runs it again.

``AsyncClient`` has the same methods, awaited (``follow`` is an async iterator). Results are
frozen dataclasses (``_models``); failures are ``ClientError`` subclasses (``_errors``). This
package imports nothing of the server's, so it is all a remote user needs (with httpx).
"""

from jobtrail.client._async import AsyncClient
from jobtrail.client._calls import (
    DEFAULT_URL,
    FieldValue,
    LogFilters,
    RecordFilters,
    SearchOptions,
)
from jobtrail.client._errors import (
    ClientError,
    InvalidParams,
    InvalidRequest,
    JobFinished,
    JobNotFound,
    LogsExpired,
    RequestFailed,
    ServerStopping,
    ServerUnavailable,
    Unauthorized,
    WaitTimeout,
)
from jobtrail.client._models import Gap, Health, Job, JobType, LogPage, LogRecord
from jobtrail.client._reports import (
    HostRow,
    RepeatedShape,
    SearchMatch,
    SearchResult,
    Summary,
    TaskRow,
)
from jobtrail.client._sync import Client

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "Client",
    "ClientError",
    "FieldValue",
    "Gap",
    "Health",
    "HostRow",
    "InvalidParams",
    "InvalidRequest",
    "Job",
    "JobFinished",
    "JobNotFound",
    "JobType",
    "LogFilters",
    "LogPage",
    "LogRecord",
    "LogsExpired",
    "RecordFilters",
    "RepeatedShape",
    "RequestFailed",
    "SearchMatch",
    "SearchOptions",
    "SearchResult",
    "ServerStopping",
    "ServerUnavailable",
    "Summary",
    "TaskRow",
    "Unauthorized",
    "WaitTimeout",
]
