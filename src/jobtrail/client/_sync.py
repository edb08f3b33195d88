"""``Client``: the jobtrail API over a blocking ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from jobtrail.client import _calls as calls
from jobtrail.client._errors import InvalidRequest, WaitTimeout, raise_for_status, unreachable
from jobtrail.client._models import Gap, Health, Job, JobType, LogPage, LogRecord
from jobtrail.client._reports import HostRow, SearchResult, Summary, TaskRow

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's from Python 3.11

T = TypeVar("T")


class Client:
    """A jobtrail server at ``url``; ``token`` for a server started with one.

    Use it as a context manager (or call ``close``) to release its connections. Every
    method raises a ``ClientError``: ``ServerUnavailable`` when the server cannot be
    reached, a ``RequestFailed`` subclass (``JobNotFound``, ...) when it refused.
    """

    def __init__(
        self, url: str = calls.DEFAULT_URL, *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        headers = calls.auth_headers(token)
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: calls.Call[T]) -> T:
        try:
            response = self._http.request(
                call.method, call.path, params=call.params, json=call.body
            )
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        return call.result(response)

    def submit(
        self,
        job_type: str,
        params: Mapping[str, Any] | None = None,
        *,
        memory_mb: int | None = None,
        timeout_s: float | None = None,
    ) -> Job:
        """Queue a job; it comes back ``pending`` (``InvalidParams`` if they do not fit).
        ``memory_mb`` and ``timeout_s`` override the job type's and the server's limits."""
        return self._send(calls.submit(job_type, params, memory_mb, timeout_s))

    def get_job(self, job_id: str) -> Job:
        """The job now, with its newest records in ``recent_logs``."""
        return self._send(calls.get_job(job_id))

    def list_jobs(
        self, status: str | None = None, type: str | None = None, limit: int | None = None
    ) -> list[Job]:
        """Jobs, newest first (the server's default limit is 50, its maximum 1000)."""
        return self._send(calls.list_jobs(status, type, limit))

    def logs(self, job_id: str, **filters: Unpack[calls.LogFilters]) -> LogPage:
        """Records of the job's log, oldest first: the newest ``tail`` matching ones (100
        unless given), or those after the seq ``after``; ``level`` is a minimum severity;
        ``fields={"attempt": 3}`` keeps records whose fields hold all of those."""
        return self._send(calls.logs(job_id, **filters))

    def search(self, job_id: str, q: str, **options: Unpack[calls.SearchOptions]) -> SearchResult:
        """The records of the whole kept log whose message holds ``q`` (a substring, or a
        pattern with ``regex=True``), oldest first, each with ``context`` records around it.
        ``InvalidRequest`` quotes the server's error for a pattern it cannot use."""
        return self._send(calls.search(job_id, q, **options))

    def summary(self, job_id: str) -> Summary:
        """The whole log at a glance: levels, first and last error, repeated shapes, span."""
        return self._send(calls.summary(job_id))

    def hosts(self, job_id: str) -> list[HostRow]:
        """A playbook's PLAY RECAP, one row per host (failed runs too)."""
        return self._send(calls.hosts(job_id))

    def tasks(self, job_id: str, status: str | None = None) -> list[TaskRow]:
        """A playbook's tasks, one row per task and host; ``status="running"`` gives the
        hosts being acted on now."""
        return self._send(calls.tasks(job_id, status))

    def rerun(
        self,
        job_id: str,
        *,
        failed_hosts_only: bool = False,
        params: Mapping[str, Any] | None = None,
    ) -> Job:
        """Queue the job again, same type and params with ``params`` laid over them (secret
        ones the server never stored must be given again); ``failed_hosts_only`` limits a
        playbook to the hosts that failed or were unreachable. The new job has ``rerun_of``."""
        return self._send(calls.rerun(job_id, failed_hosts_only, params))

    def cancel(self, job_id: str) -> Job:
        """A pending job comes back ``cancelled``; a running one ``running`` with
        ``cancel_requested`` until its processes stopped (see ``wait``)."""
        return self._send(calls.cancel(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it ended (``WaitTimeout`` if ``timeout`` seconds pass first)."""
        deadline = calls.Deadline(timeout)
        while True:
            job = self.get_job(job_id)
            if job.status.terminal:
                return job
            if deadline.passed():
                raise WaitTimeout(job_id, job.status.value, deadline.timeout or 0.0)
            time.sleep(calls.WAIT_INTERVAL)

    def follow(
        self,
        job_id: str,
        after: int = 0,
        level: str = "DEBUG",
        fields: Mapping[str, calls.FieldValue] | None = None,
    ) -> Iterator[LogRecord | Gap]:
        """The job's records from the seq ``after`` on, as they are written, until the job
        ends; a ``Gap`` says rotation removed records before they could be read. A dropped
        connection is resumed where it stopped, retrying for up to 30 s; ``ServerStopping``
        if the server stops first. ``fields`` filters as ``logs`` does."""
        state = calls.FollowState(self.url, job_id, after, level, fields)
        while True:
            params, headers = state.connect()
            try:
                with self._http.stream(
                    "GET", state.path, params=params, headers=headers, timeout=calls.STREAM_TIMEOUT
                ) as response:
                    if response.is_error:
                        response.read()
                        raise_for_status(response, InvalidRequest)
                    for line in response.iter_lines():
                        item = state.feed(line)
                        if item is not None:
                            yield item
                        if state.ended:
                            return
                problem = state.EARLY_CLOSE
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
            time.sleep(state.retry_delay(problem))

    def job_types(self) -> list[JobType]:
        """The registered job types, with the JSON Schema of their params."""
        return self._send(calls.job_types())

    def health(self) -> Health:
        """Liveness and workers; answers without a token."""
        return self._send(calls.health())
