"""A playbook job's hosts and tasks tables, for ``JobService.hosts``, ``tasks`` and
``failed_hosts``: the summary keeper folds them as the log is written (the folds "hosts"
and "tasks" of ``jobtypes.ansible.tables``), so they answer at once on any log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobtrail.errors import InvalidQuery
from jobtrail.jobtypes.ansible.job import JOB_TYPE
from jobtrail.jobtypes.ansible.tables import hosts_fold, tasks_fold
from jobtrail.logstore import SummaryKeeper
from jobtrail.models import Job


@dataclass(frozen=True)
class TaskRows:
    """A playbook's tasks table; ``dropped`` counts the oldest rows its bound let go."""

    tasks: list[dict[str, Any]]
    dropped: int = 0


def add_folds(keeper: SummaryKeeper) -> None:
    keeper.add_fold("hosts", hosts_fold)
    keeper.add_fold("tasks", tasks_fold)


def check(job: Job) -> Job:
    if job.job_type != JOB_TYPE:
        raise InvalidQuery(
            f"job {job.job_id!r} is a {job.job_type!r} job, not an {JOB_TYPE!r} one: "
            "it has no hosts or tasks"
        )
    return job


def hosts(job: Job, keeper: SummaryKeeper) -> list[dict[str, Any]]:
    found = keeper.summary(check(job).job_id).folds.get("hosts")
    return list(found or [])


def task_rows(job: Job, keeper: SummaryKeeper, status: str | None) -> TaskRows:
    """The rows, ``status`` ones only if given; a row a stopped run left unfinished reads
    ``interrupted`` (its host was being acted on when the job ended)."""
    found = keeper.summary(check(job).job_id).folds.get("tasks") or {}
    rows: list[dict[str, Any]] = list(found.get("tasks", []))
    if job.status.terminal:
        for row in rows:
            if row["status"] == "running":
                row["status"] = "interrupted"
    if status is not None:
        rows = [row for row in rows if row["status"] == status]
    return TaskRows(rows, int(found.get("dropped", 0)))


def failed_hosts(job: Job, keeper: SummaryKeeper) -> list[str]:
    """From the failure digest (it outlives the log) when the job has one, else the log."""
    if job.job_type != JOB_TYPE:
        return []
    failure = job.extra.get("failure")
    if isinstance(failure, dict) and isinstance(failure.get("hosts"), list):
        return [str(host) for host in failure["hosts"]]
    if job.logs_expired:
        return []
    return [h["host"] for h in hosts(job, keeper) if h["failed"] or h["unreachable"]]
