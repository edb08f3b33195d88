"""A playbook job's hosts and tasks tables, for ``JobService.hosts``, ``tasks`` and
``failed_hosts`` (the tables themselves are ``jobtypes.ansible.tables``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobtrail.errors import InvalidQuery
from jobtrail.jobtypes.ansible.job import JOB_TYPE
from jobtrail.jobtypes.ansible.tables import PlaybookTables
from jobtrail.logstore import JobLogStore
from jobtrail.models import Job

PAGE = 10_000  # records per read while folding a log


@dataclass(frozen=True)
class TaskRows:
    """A playbook's tasks table; ``dropped`` counts the oldest rows its bound let go."""

    tasks: list[dict[str, Any]]
    dropped: int = 0


def tables(job: Job, store: JobLogStore) -> PlaybookTables:
    """The job's tables, folded from its log; InvalidQuery for a job that is no playbook."""
    if job.job_type != JOB_TYPE:
        raise InvalidQuery(
            f"job {job.job_id!r} is a {job.job_type!r} job, not an {JOB_TYPE!r} one: "
            "it has no hosts or tasks"
        )
    folded = PlaybookTables()
    after = 0
    while True:
        page = store.read(job.job_id, tail=PAGE, after=after, match={"logger": "ansible"})
        for record in page.records:
            folded.add(record)
        if not page.more or page.last_seq is None:
            return folded
        after = page.last_seq


def task_rows(job: Job, folded: PlaybookTables, status: str | None) -> TaskRows:
    """The rows, ``status`` ones only if given; a row a stopped run left unfinished reads
    ``interrupted`` (its host was being acted on when the job ended)."""
    rows = folded.tasks()
    if job.status.terminal:
        for row in rows:
            if row["status"] == "running":
                row["status"] = "interrupted"
    if status is not None:
        rows = [row for row in rows if row["status"] == status]
    return TaskRows(rows, folded.dropped)


def failed_hosts(job: Job, store: JobLogStore) -> list[str]:
    """From the failure digest (it outlives the log) when the job has one, else the log."""
    if job.job_type != JOB_TYPE:
        return []
    failure = job.extra.get("failure")
    if isinstance(failure, dict) and isinstance(failure.get("hosts"), list):
        return [str(host) for host in failure["hosts"]]
    if job.logs_expired:
        return []
    return tables(job, store).failed_hosts()
