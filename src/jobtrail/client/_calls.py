"""The API's requests and how to read their answers, without I/O: ``Client`` and
``AsyncClient`` differ only in how they send a ``Call`` (and sleep), so everything else is
written once, here.

::

    Client.get_job(id) ─► get_job(id): Call ─► httpx sends it ─► Call.result(response)
                                                                  ├─ 4xx/5xx: RequestFailed
                                                                  └─ Job.from_json(...)

    Client.follow(id) ─► FollowState ─► connect(): path, params, Last-Event-ID
                          ▲   feed(line) ─► SSEParser ─► LogRecord | Gap | None
                          └── retry_delay(problem): the backoff, or ServerUnavailable
                              once the stream failed for FOLLOW_RETRY_SECONDS with no progress
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar
from urllib.parse import quote

import httpx

from jobtrail.client._errors import (
    InvalidParams,
    InvalidRequest,
    ServerStopping,
    ServerUnavailable,
    raise_for_status,
)
from jobtrail.client._models import Gap, Health, Job, JobType, LogPage, LogRecord
from jobtrail.client._reports import HostRow, SearchResult, Summary, TaskRow
from jobtrail.client._sse import SSEParser

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's from Python 3.11

T = TypeVar("T")
Params = Mapping[str, str | int | Sequence[str]]
FieldValue = str | int | float | bool  # a record's field, compared as its JSON text

DEFAULT_URL = "http://127.0.0.1:8765"
WAIT_INTERVAL = 0.3  # wait() polls the job this often: a few requests a second at most
FOLLOW_RETRY_SECONDS = 30.0  # a follow gives up after failing this long without a record
STREAM_TIMEOUT = httpx.Timeout(10.0, read=45.0)  # the server pings every 15 s when idle
_FIRST_DELAY, _MAX_DELAY = 0.2, 2.0  # reconnect backoff, doubling


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, and what its answer becomes."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: Params | None = None
    body: Any = None
    invalid: type[InvalidRequest] = InvalidRequest  # what a 422 means here

    def result(self, response: httpx.Response) -> T:
        raise_for_status(response, self.invalid)
        return self.read(response.json())


class RecordFilters(TypedDict, total=False):
    """Which records a log read, a search or a follow considers; the server's defaults apply
    to what is left out or None."""

    level: str | None  # a minimum severity, any case: DEBUG INFO WARNING ERROR CRITICAL
    after: int | None  # only records with a larger seq, oldest first (pass a page's last_seq)
    since: str | None  # only records at or after this ISO 8601 time
    host: str | None  # Ansible records: exact matches on their fields
    task: str | None
    event: str | None
    fields: Mapping[str, FieldValue] | None  # records whose `fields` hold all of these (field=K:V)


class LogFilters(RecordFilters, total=False):
    """What a log read may ask for."""

    tail: int | None  # the newest N matching records (1-10000; the server's default is 100)


class SearchOptions(RecordFilters, total=False):
    """How search() matches, and the filters it applies first (``after``: a page's
    ``next_after``)."""

    regex: bool | None  # q is a regular expression (default: a plain substring)
    ignore_case: bool | None
    context: int | None  # records before and after each match, from the unfiltered log (0-20; 2)
    max: int | None  # matches in this page (1-1000; 100); total_matches counts them all


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _job(job_id: str) -> str:
    return f"/api/jobs/{quote(job_id, safe='')}"  # an id never changes the path it is in


def _given(**values: str | int | None) -> dict[str, str | int]:
    """Only the parameters the caller set: the server's defaults apply to the rest."""
    return {name: value for name, value in values.items() if value is not None}


def field_filters(fields: Mapping[str, FieldValue] | None) -> list[str]:
    """``field=KEY:VALUE`` values: text as it is, other scalars as their JSON (``true``)."""
    return [
        f"{key}:{value if isinstance(value, str) else json.dumps(value)}"
        for key, value in (fields or {}).items()
    ]


def _filters(options: Mapping[str, Any]) -> dict[str, str | int | Sequence[str]]:
    """A log read's query: booleans as the API spells them, fields as repeated ``field``."""
    params: dict[str, str | int | Sequence[str]] = {}
    for name, value in options.items():
        if name == "fields":
            params["field"] = field_filters(value)
        elif isinstance(value, bool):
            params[name] = "true" if value else "false"
        elif value is not None:
            params[name] = value
    return params


def submit(
    job_type: str,
    params: Mapping[str, Any] | None,
    memory_mb: int | None = None,
    timeout_s: float | None = None,
) -> Call[Job]:
    body: dict[str, Any] = {"type": job_type, "params": dict(params or {})}
    for name, value in (("memory_mb", memory_mb), ("timeout_s", timeout_s)):
        if value is not None:  # unset: the job type's, else the server's
            body[name] = value
    return Call("POST", "/api/jobs", Job.from_json, body=body, invalid=InvalidParams)


def get_job(job_id: str) -> Call[Job]:
    return Call("GET", _job(job_id), Job.from_json)


def list_jobs(status: str | None, job_type: str | None, limit: int | None) -> Call[list[Job]]:
    params = _given(status=status, type=job_type, limit=limit)
    return Call("GET", "/api/jobs", lambda data: [Job.from_json(j) for j in data["jobs"]], params)


def logs(job_id: str, **filters: Unpack[LogFilters]) -> Call[LogPage]:
    params = {**_filters(filters), "format": "json"}  # records, so they come typed
    return Call("GET", _job(job_id) + "/logs", LogPage.from_json, params)


def search(job_id: str, q: str, **options: Unpack[SearchOptions]) -> Call[SearchResult]:
    params = {"q": q, **_filters(options)}
    return Call("GET", _job(job_id) + "/logs/search", SearchResult.from_json, params)


def summary(job_id: str) -> Call[Summary]:
    return Call("GET", _job(job_id) + "/summary", Summary.from_json)


def hosts(job_id: str) -> Call[list[HostRow]]:
    return Call(
        "GET", _job(job_id) + "/hosts", lambda data: [HostRow.from_json(h) for h in data["hosts"]]
    )


def tasks(job_id: str, status: str | None) -> Call[list[TaskRow]]:
    return Call(
        "GET",
        _job(job_id) + "/tasks",
        lambda data: [TaskRow.from_json(t) for t in data["tasks"]],
        _given(status=status),
    )


def rerun(job_id: str, failed_hosts_only: bool, params: Mapping[str, Any] | None) -> Call[Job]:
    body = {"failed_hosts_only": failed_hosts_only, "params": dict(params or {})}
    return Call("POST", _job(job_id) + "/rerun", Job.from_json, body=body, invalid=InvalidParams)


def cancel(job_id: str) -> Call[Job]:
    return Call("POST", _job(job_id) + "/cancel", Job.from_json)


def job_types() -> Call[list[JobType]]:
    return Call("GET", "/api/job-types", lambda data: [JobType.from_json(t) for t in data])


def health() -> Call[Health]:
    return Call("GET", "/api/health", Health.from_json)


class Deadline:
    """wait()'s clock: ``None`` waits for as long as the job runs."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    def passed(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end


class FollowState:
    """Where a follow() stands across its connections: ``cursor`` is the seq of the last
    record (or gap) delivered, sent back as ``Last-Event-ID`` so a reconnect resumes with
    no gap and no repeat. The retry window restarts whenever a connection made progress."""

    EARLY_CLOSE = "the server closed the stream before the job ended"

    def __init__(
        self,
        url: str,
        job_id: str,
        after: int,
        level: str,
        fields: Mapping[str, FieldValue] | None = None,
    ) -> None:
        self.url, self.job_id, self.level = url, job_id, level
        self.fields = field_filters(fields)
        self.path = _job(job_id) + "/logs/stream"
        self.cursor = after
        self.ended = False
        self._start = after
        self._parser = SSEParser()
        self._failing_since: float | None = None
        self._delay = _FIRST_DELAY

    def connect(self) -> tuple[dict[str, str | list[str]], dict[str, str]]:
        """The query and headers of the next connection."""
        self._start = self.cursor
        self._parser = SSEParser()  # nothing half-read carries over from the last one
        params: dict[str, str | list[str]] = {"after": str(self.cursor), "level": self.level}
        if self.fields:
            params["field"] = self.fields
        return params, {"Last-Event-ID": str(self.cursor)}

    def feed(self, line: str) -> LogRecord | Gap | None:
        """What a line of the stream gives the caller; sets ``ended`` on the job's end."""
        event = self._parser.feed(line)
        if event is None:
            return None
        if event.event == "record":
            record = LogRecord.from_json(json.loads(event.data))
            self.cursor = record.seq
            return record
        if event.event == "gap":
            gap = json.loads(event.data)
            self.cursor = int(gap["to"])
            return Gap(int(gap["from"]), int(gap["to"]))
        if event.event == "end":
            self.ended = True
        elif event.event == "shutdown":  # a restarted server would not resume this stream
            raise ServerStopping(self.url, self.job_id, json.loads(event.data)["status"])
        return None  # status events and anything newer

    def retry_delay(self, problem: str) -> float:
        """How long to wait before reconnecting after ``problem``."""
        now = time.monotonic()
        if self.cursor != self._start:  # that connection delivered: a fresh window
            self._failing_since, self._delay = None, _FIRST_DELAY
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since > FOLLOW_RETRY_SECONDS:
            raise ServerUnavailable(
                f"lost the log stream of {self.job_id} at {self.url} for "
                f"{FOLLOW_RETRY_SECONDS:g}s: {problem}"
            )
        delay, self._delay = self._delay, min(self._delay * 2, _MAX_DELAY)
        return delay
