"""``AsyncClient``: ``Client`` for asyncio, over ``httpx.AsyncClient``; each method does
what ``Client``'s of the same name does (see its docstrings), awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
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


class AsyncClient:
    """A jobtrail server at ``url``, for ``async with`` (or ``await aclose()``)."""

    def __init__(
        self, url: str = calls.DEFAULT_URL, *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        headers = calls.auth_headers(token)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=headers)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: calls.Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, json=call.body
            )
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        return call.result(response)

    async def submit(
        self,
        job_type: str,
        params: Mapping[str, Any] | None = None,
        *,
        memory_mb: int | None = None,
        timeout_s: float | None = None,
    ) -> Job:
        return await self._send(calls.submit(job_type, params, memory_mb, timeout_s))

    async def get_job(self, job_id: str) -> Job:
        return await self._send(calls.get_job(job_id))

    async def list_jobs(
        self, status: str | None = None, type: str | None = None, limit: int | None = None
    ) -> list[Job]:
        return await self._send(calls.list_jobs(status, type, limit))

    async def logs(self, job_id: str, **filters: Unpack[calls.LogFilters]) -> LogPage:
        return await self._send(calls.logs(job_id, **filters))

    async def search(
        self, job_id: str, q: str, **options: Unpack[calls.SearchOptions]
    ) -> SearchResult:
        return await self._send(calls.search(job_id, q, **options))

    async def summary(self, job_id: str) -> Summary:
        return await self._send(calls.summary(job_id))

    async def hosts(self, job_id: str) -> list[HostRow]:
        return await self._send(calls.hosts(job_id))

    async def tasks(self, job_id: str, status: str | None = None) -> list[TaskRow]:
        return await self._send(calls.tasks(job_id, status))

    async def rerun(
        self,
        job_id: str,
        *,
        failed_hosts_only: bool = False,
        params: Mapping[str, Any] | None = None,
    ) -> Job:
        return await self._send(calls.rerun(job_id, failed_hosts_only, params))

    async def cancel(self, job_id: str) -> Job:
        return await self._send(calls.cancel(job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        deadline = calls.Deadline(timeout)
        while True:
            job = await self.get_job(job_id)
            if job.status.terminal:
                return job
            if deadline.passed():
                raise WaitTimeout(job_id, job.status.value, deadline.timeout or 0.0)
            await asyncio.sleep(calls.WAIT_INTERVAL)

    async def follow(
        self,
        job_id: str,
        after: int = 0,
        level: str = "DEBUG",
        fields: Mapping[str, calls.FieldValue] | None = None,
    ) -> AsyncIterator[LogRecord | Gap]:
        state = calls.FollowState(self.url, job_id, after, level, fields)
        while True:
            params, headers = state.connect()
            try:
                async with self._http.stream(
                    "GET", state.path, params=params, headers=headers, timeout=calls.STREAM_TIMEOUT
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise_for_status(response, InvalidRequest)
                    async for line in response.aiter_lines():
                        item = state.feed(line)
                        if item is not None:
                            yield item
                        if state.ended:
                            return
                problem = state.EARLY_CLOSE
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
            await asyncio.sleep(state.retry_delay(problem))

    async def job_types(self) -> list[JobType]:
        return await self._send(calls.job_types())

    async def health(self) -> Health:
        return await self._send(calls.health())
