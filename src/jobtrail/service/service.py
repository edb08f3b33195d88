"""``JobService``: the one facade the API, the CLI's server and retention call.

It accepts jobs (checked params, queue limit, secrets masked in the record), answers for
them, and merges a finished job's outcome into its record, the same way whichever backend
runs the jobs: the backend's parts (``ports.JobRecords``, ``Execution``, ``LogIngest``) are
built by ``jobtrail.backends.open_service`` and the service never asks which one it has.
It owns the home and the log store, the only writer of log files, which the backend's
ingest appends to and every log read here comes from.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobtrail.errors import JobFinished, JobNotEnded, JobNotFound, QueueFull
from jobtrail.jobtypes.ansible import job as ansible
from jobtrail.limits import Limits, resolve, server_limits
from jobtrail.logstore import (
    JobLogStore,
    SummaryKeeper,
)
from jobtrail.messages import Outcome
from jobtrail.models import Health, Job, JobStatus, is_job_id, new_job_id
from jobtrail.registry import get_job_type
from jobtrail.secrets import MASK, mask_secrets, secret_values
from jobtrail.service import playbook, retention
from jobtrail.service.config import ServerConfig, wants_log_export
from jobtrail.service.home import open_home
from jobtrail.service.logreads import LogReads
from jobtrail.service.ports import SERVER_STOPPED, OpenBackend
from jobtrail.service.rerun import check_failed_hosts, rerun_params

if TYPE_CHECKING:  # the otel extra is imported only by a server that exports
    from jobtrail.service.otel import LogExport

log = logging.getLogger("jobtrail.server")

WAIT_POLL_SECONDS = 0.05  # wait() looks again this often: a job's end may show here later
SECRETS_LOST = (
    "the server restarted before the job started, and secret params are never written to "
    "disk: submit it again"
)
ACTIVE = ("pending", "running")


def _limits_extra(limits: Limits) -> dict[str, Any]:
    """The limits a job runs under, as its extra holds them (only those that are set)."""
    return {key: value for key, value in limits.to_json().items() if value is not None}


@dataclass(frozen=True)
class Playbooks:
    """What ``ansible_playbook``'s ``playbook`` may name, relative to ``directory``."""

    directory: str
    playbooks: builtins.list[str]


class JobService(LogReads):
    def __init__(self, config: ServerConfig, open_backend: OpenBackend) -> None:
        self.config = config
        self._home = open_home(config)
        self.home = self._home.path
        self.store = JobLogStore(
            self.home / "logs",
            max_segment_bytes=config.log_max_bytes,
            max_segments=config.log_segments,
        )
        self.summaries = SummaryKeeper(self.store)  # folds each job's log as it is written
        playbook.add_folds(self.summaries)  # a playbook's hosts and tasks tables
        self.log_export: LogExport | None = None  # every record to an OTLP receiver
        if wants_log_export(config.otlp_endpoint):
            from jobtrail.service.otel import LogExport

            self.log_export = LogExport(self.store, config.otlp_endpoint)
        self._ended = threading.Condition()
        self._ends = 0  # job_ended calls so far: wait() sleeps only while it is unchanged
        self._started = False
        try:
            backend = open_backend(config, self._home, self.store, self)
        except BaseException:
            self._close_files()
            raise
        self.records = backend.records
        self.execution = backend.execution
        self.ingest = backend.ingest

    def publish_address(self, url: str | None) -> None:
        """Name this server's URL in its home's lock, for a second server to report."""
        self._home.publish_address(url)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Recover from a previous server's end, start reading logs and running jobs, and
        run again what it left pending (unless its secrets were lost with it)."""
        pending = self.records.recover(SERVER_STOPPED)
        self.summaries.start()
        if self.log_export is not None:
            self.log_export.start()
        self.ingest.start()
        self.execution.start()
        self._started = True
        for job in pending:
            if MASK in secret_values(job.params):  # secret values lived only in memory
                self.records.transition(
                    job.job_id,
                    ("pending",),
                    status=JobStatus.FAILED,
                    error=SECRETS_LOST,
                    completed_at=time.time(),
                )
                continue
            self.execution.submit(job.job_id, job.job_type, job.params, Limits.from_json(job.extra))

    def stop(self) -> None:
        """Stop running and reading jobs; the jobs this server ran and cannot finish fail."""
        if self._started:
            self._started = False
            interrupted = self.execution.stop()
            self.ingest.stop()
            now = time.time()
            for job_id in interrupted:
                self.records.transition(
                    job_id, ACTIVE, status=JobStatus.FAILED, error=SERVER_STOPPED, completed_at=now
                )
        self.records.close()
        self._close_files()

    def _close_files(self) -> None:
        self.summaries.stop()  # after the ingest stopped: the last lines folded and saved
        if self.log_export is not None:
            self.log_export.stop()  # sends the last lines, waiting a few seconds at most
        self.store.close()
        self._home.close()

    # -- jobs -------------------------------------------------------------------------------
    def submit(
        self,
        job_type: str,
        params: dict[str, Any],
        *,
        extra: dict[str, Any] | None = None,
        limits: Limits | None = None,
    ) -> Job:
        """Accept a job: its params checked, the record stored with secrets masked, the
        checked values (secrets and all) handed to the backend that runs it. Its limits are
        the submission's, else its type's, else this server's (kept in its extra)."""
        kind = get_job_type(job_type)
        values = kind.validate(params)
        if self.records.count("pending") >= self.config.max_pending:
            raise QueueFull(self.config.max_pending)
        server = server_limits(self.config.job_memory_mb, self.config.job_timeout)
        applied = resolve(limits or Limits(), kind.limits, server)
        job = Job(
            job_id=new_job_id(job_type),
            job_type=job_type,
            params=mask_secrets(values),
            created_at=time.time(),
            extra={**(extra or {}), **_limits_extra(applied)},
        )
        self.records.insert(job)
        self.execution.submit(job.job_id, job_type, values, applied)
        return job

    def get(self, job_id: str) -> Job:
        found = self.records.get(job_id) if is_job_id(job_id) else None
        if found is None:
            raise JobNotFound(job_id)
        return found

    def peek(self, job_id: str) -> Job | None:
        """The job if it can be had at once (see ``JobRecords.peek``); None: call ``get``."""
        return self.records.peek(job_id) if is_job_id(job_id) else None

    async def peek_on_loop(self, job_id: str) -> Job | None:
        """The job if it can be had without blocking the event loop (``JobRecords``);
        None: call ``get``, in a thread."""
        return await self.records.peek_on_loop(job_id) if is_job_id(job_id) else None

    async def close_on_loop(self) -> None:
        """The server's event loop ends: what the records opened on it goes."""
        await self.records.close_on_loop()

    def list(
        self, status: str | None = None, job_type: str | None = None, limit: int = 50
    ) -> builtins.list[Job]:
        return self.records.list_jobs(status, job_type, limit)

    def cancel(self, job_id: str) -> Job:
        """The job as the cancel left it: ``cancelled`` if it had not started; still
        ``running`` with ``cancel_requested`` while its process tree is being stopped (asking
        again changes nothing). JobFinished once it ended."""
        job = self.get(job_id)
        if job.status.terminal:
            raise JobFinished(job_id, job.status.value)
        if self.execution.cancel(job_id) == "running":  # "pending": the backend ended it
            self.records.transition(job_id, ACTIVE, cancel_requested=True)
        return self.get(job_id)

    def wait(self, job_id: str, timeout: float) -> Job:
        """Block until the job is terminal (or timeout); for the CLI and tests. Woken by
        every job's end, and looking again every WAIT_POLL_SECONDS, since a job another
        server ended shows as ended here only once this server's ingest wrote its log."""
        deadline = time.monotonic() + timeout
        while True:
            with self._ended:
                seen = self._ends
            job = self.get(job_id)
            left = deadline - time.monotonic()
            if job.status.terminal or left <= 0:
                return job
            with self._ended:
                if self._ends == seen:
                    self._ended.wait(min(left, WAIT_POLL_SECONDS))

    def health(self) -> Health:
        return self.execution.health()

    async def health_on_loop(self) -> Health | None:
        """``health()`` had without blocking the loop (see ``Execution``); None: call it."""
        return await self.execution.health_on_loop()

    # -- rerun --------------------------------------------------------------------------------
    def rerun(
        self, job_id: str, *, failed_hosts_only: bool = False, params: dict[str, Any] | None = None
    ) -> Job:
        """A new job of the ended job's type and params (``params`` override them key by
        key), ``rerun_of`` it; the old job lists it in ``reruns``. ``failed_hosts_only``
        limits a playbook to the hosts that failed or were unreachable."""
        old = self.get(job_id)
        if not old.status.terminal:
            raise JobNotEnded(job_id, old.status.value)
        hosts = None
        if failed_hosts_only:
            hosts = check_failed_hosts(old, self.failed_hosts(job_id))
        values = rerun_params(old, params or {}, hosts)
        job = self.submit(
            old.job_type, values, extra={"rerun_of": job_id}, limits=Limits.from_json(old.extra)
        )
        self.records.link_rerun(job_id, job.job_id)
        return job

    def playbooks(self) -> Playbooks:
        """What ``GET /api/playbooks`` lists (a file walk: call it off the event loop)."""
        base = ansible.playbooks_dir()
        return Playbooks(directory=str(base), playbooks=ansible.list_playbooks(base))

    # -- retention ----------------------------------------------------------------------------
    def expire_logs(
        self, older_than_hours: float | None = None, dry_run: bool = False
    ) -> builtins.list[str]:
        """Delete logs of jobs that ended longer ago than the retention; never a running job's."""
        hours = self.config.retention_hours if older_than_hours is None else older_than_hours
        return retention.expire_logs(self.records, self.store, hours, dry_run)

    # -- BackendEvents: what the backend's threads report ------------------------------------
    def job_started(
        self, job_id: str, pid: int, worker: str | None = None, at: float = 0.0
    ) -> None:
        """``at``: when the job's process began it, by its clock; never later than now (a
        worker's clock ahead of this one's)."""
        now = time.time()
        started = min(at, now) if at > 0 else now
        fields: dict[str, Any] = {"status": JobStatus.RUNNING, "started_at": started}
        if worker:  # merged into what the job has: a rerun's names the job it reruns
            job = self.records.get(job_id)
            fields["extra"] = {**(job.extra if job else {}), "worker": worker}
        self.records.transition(job_id, ("pending",), **fields)

    def job_progress(self, job_id: str, pct: float, step: str | None) -> None:
        fields: dict[str, Any] = {"progress": pct}
        if step is not None:
            fields["current_step"] = step
        self.records.transition(job_id, ("running",), **fields)

    def job_ended(self, job_id: str, outcome: Outcome) -> None:
        """Once per job: whoever ends it first (another server, in Redis mode) records it."""
        try:
            job = self.records.get(job_id)
            if job is None or job.status.terminal:
                return
            self.records.transition(
                job_id,
                ACTIVE,
                status=outcome.status,
                error=outcome.error,
                result=outcome.result,
                completed_at=time.time(),
                extra=self._ended_extra(job, outcome),
                progress=100.0 if outcome.status is JobStatus.COMPLETED else job.progress,
                current_step=job.current_step,
            )
        finally:
            with self._ended:
                self._ends += 1
                self._ended.notify_all()

    def _ended_extra(self, job: Job, outcome: Outcome) -> dict[str, Any]:
        """The job's extra fields once it ended: what its process reported (drops, last
        seq, failure digest), plus what this server's store could not write."""
        extra = {**job.extra, **outcome.reported()}
        stats = self.store.stats(job.job_id)
        if stats.dropped:
            extra["dropped"] = extra.get("dropped", 0) + stats.dropped
            extra["log_note"] = f"log cut: {stats.cut_reason}"
        return extra
