"""jobtrail.client: every Client and AsyncClient method against a real server (conftest's),
each error class from the answer that causes it, and follow() across a dropped connection,
a rotation gap and a server that stops."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import uvicorn

from jobtrail.api.app import ApiServer, create_app
from jobtrail.client import (
    AsyncClient,
    Client,
    ClientError,
    Gap,
    InvalidParams,
    InvalidRequest,
    Job,
    JobFinished,
    JobNotFound,
    LogRecord,
    LogsExpired,
    RequestFailed,
    ServerStopping,
    ServerUnavailable,
    Unauthorized,
    WaitTimeout,
)
from jobtrail.errors import JobtrailError
from jobtrail.models import JobStatus
from support.live import Live, free_port, live_server
from support.live import server_config as make_config
from support.proxy import DroppingProxy
from support.waits import wait_until

pytestmark = pytest.mark.timeout(60)

UNKNOWN = "sleep-0123456789ab"


@pytest.fixture
def client(live: Live) -> Iterator[Client]:
    with Client(live.url) as jobtrail:
        yield jobtrail


def records_of(items: list[LogRecord | Gap]) -> list[LogRecord]:
    return [item for item in items if isinstance(item, LogRecord)]


# -- Client ---------------------------------------------------------------------------------
def test_submit_wait_and_get_job_give_typed_jobs(client: Client) -> None:
    job = client.submit("typed", {"count": 2, "name": "x"})
    assert isinstance(job, Job) and job.job_type == "typed"
    assert job.status in (JobStatus.PENDING, JobStatus.RUNNING)
    assert job.created_at.tzinfo is not None, "times are aware datetimes"
    assert abs(job.created_at.timestamp() - time.time()) < 60
    assert job.raw["job_id"] == job.job_id, "raw is the JSON as sent"

    done = client.wait(job.job_id, timeout=30)
    assert done.status is JobStatus.COMPLETED and done.status.terminal
    assert done.progress == 100 and done.error is None
    assert done.started_at is not None and done.completed_at is not None
    assert done.created_at <= done.started_at <= done.completed_at
    assert done.result is not None

    logged = client.wait(client.submit("levels", {"count": 3}).job_id, timeout=30)
    again = client.get_job(logged.job_id)
    assert again.status is JobStatus.COMPLETED
    assert again.recent_logs, "get_job carries the newest records"
    seqs = [record.seq for record in again.recent_logs]
    assert seqs == sorted(seqs, reverse=True), "newest first, as the API sends them"


def test_list_jobs_filters_by_status_type_and_limit(client: Client) -> None:
    ok = client.submit("typed", {"count": 1})
    bad = client.submit("crash", {"kind": "raise", "lines": 0})
    assert client.wait(ok.job_id, 30).status is JobStatus.COMPLETED
    assert client.wait(bad.job_id, 30).status is JobStatus.FAILED

    newest = [job.job_id for job in client.list_jobs(limit=1000)]
    assert newest.index(bad.job_id) < newest.index(ok.job_id), "newest first"
    failed = client.list_jobs(status="failed", type="crash")
    assert bad.job_id in [job.job_id for job in failed]
    assert {(job.status, job.job_type) for job in failed} == {(JobStatus.FAILED, "crash")}
    assert len(client.list_jobs(limit=1)) == 1


def test_logs_reads_pages_with_tail_level_after_and_since(client: Client) -> None:
    job = client.submit("levels", {"errors_every": 3, "count": 10})
    client.wait(job.job_id, 30)

    page = client.logs(job.job_id, tail=3, level="WARNING")
    assert [r.message for r in page.records] == ["error 3", "error 6", "error 9"]
    assert {r.level for r in page.records} == {"ERROR"}
    assert page.last_seq == page.records[-1].seq and page.first_seq == page.records[0].seq
    assert page.latest_seq >= page.last_seq and page.truncated_before == 1
    assert isinstance(page.records[0].timestamp, datetime)
    assert page.records[0].raw["logger"] == page.records[0].logger

    every = client.logs(job.job_id, tail=10000)
    assert len(every.records) == 15 and not every.more
    first = client.logs(job.job_id, after=0, tail=5)
    rest = client.logs(job.job_id, after=first.last_seq, tail=10000)
    assert [r.seq for r in first.records + rest.records] == [r.seq for r in every.records]
    assert first.more and not rest.more

    later = every.records[-1].timestamp.astimezone(timezone.utc).isoformat()
    assert client.logs(job.job_id, since=later).records[-1].seq == every.records[-1].seq
    assert client.logs(job.job_id, since="2999-01-01T00:00:00Z").records == ()
    assert client.logs(job.job_id, event="runner_on_ok").records == (), "no Ansible events"
    assert client.logs(job.job_id, host="web1").records == ()
    assert client.logs(job.job_id, task="restart app").records == ()


def test_cancel_says_what_it_did_then_409_once_ended(client: Client) -> None:
    job = client.submit("sleep", {"seconds": 30})
    wait_until(lambda: client.get_job(job.job_id).status is JobStatus.RUNNING, 20, "running")
    asked = client.cancel(job.job_id)
    assert asked.job_id == job.job_id
    assert asked.cancel_requested or asked.status is JobStatus.CANCELLED
    assert client.wait(job.job_id, 30).status is JobStatus.CANCELLED
    with pytest.raises(JobFinished) as finished:
        client.cancel(job.job_id)
    assert finished.value.status_code == 409
    assert str(finished.value) == f"job {job.job_id!r} already ended with status 'cancelled'"


def test_wait_with_a_timeout_raises_wait_timeout(client: Client) -> None:
    job = client.submit("sleep", {"seconds": 30})
    try:
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as timed_out:
            client.wait(job.job_id, timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 5
        assert isinstance(timed_out.value, TimeoutError)
        assert timed_out.value.status in ("pending", "running")
    finally:
        client.cancel(job.job_id)


def test_follow_yields_records_until_the_job_ends(client: Client, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = client.submit("ticker", {"path": str(gate), "interval": 0.02})
    seen: list[LogRecord | Gap] = []
    for item in client.follow(job.job_id):
        seen.append(item)
        if len(seen) == 20:
            gate.touch()  # the job ends: follow() ends after its last record
    got = records_of(seen)
    assert [r.seq for r in got] == list(range(1, len(got) + 1)), "in order, no gap or repeat"
    assert "ticker done" in got[-1].message
    assert client.get_job(job.job_id).status is JobStatus.COMPLETED

    warnings = records_of(list(client.follow(job.job_id, after=10, level="WARNING")))
    assert warnings and all(r.seq > 10 and r.level in ("WARNING", "ERROR") for r in warnings)


def test_follow_resumes_after_the_connection_drops(live: Live, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    proxy = DroppingProxy(live.url)
    ticks: list[int] = []
    try:
        with Client(proxy.url) as through:
            job = through.submit("ticker", {"path": str(gate), "interval": 0.02})
            for item in through.follow(job.job_id):
                if isinstance(item, LogRecord) and item.message.startswith("tick "):
                    ticks.append(int(item.message.split()[1]))
                    if len(ticks) in (10, 30):
                        proxy.drop_all()  # the connection dies under the reader
                    elif len(ticks) == 50:
                        gate.touch()
            assert through.get_job(job.job_id).status is JobStatus.COMPLETED
    finally:
        proxy.close()
    assert proxy.accepted >= 3, "a new connection after each of the two drops"
    assert ticks == list(range(len(ticks))), "no tick missed or repeated across the drops"


def test_follow_surfaces_a_gap_left_by_rotation(tmp_path: Path) -> None:
    config = make_config(tmp_path / "home", log_max_bytes=200_000, log_segments=3)
    with live_server(config) as small, Client(small.url) as jobtrail:
        job = jobtrail.submit("flood", {"records": 20_000, "payload": 80})
        jobtrail.wait(job.job_id, 60)
        items = list(jobtrail.follow(job.job_id))
    gap = items[0]
    assert isinstance(gap, Gap) and gap.first == 1 and gap.last > 1
    got = records_of(items)
    assert got[0].seq == gap.last + 1, "the records go on right after the gap"
    assert [r.seq for r in got] == list(range(gap.last + 1, gap.last + 1 + len(got)))


@contextlib.contextmanager
def stoppable_server(home: Path) -> Iterator[tuple[str, uvicorn.Server]]:
    """A server run as `jobtrail serve` runs it (ApiServer: open streams are told that it
    stops), which the test stops itself."""
    port = free_port()
    uv = ApiServer(
        uvicorn.Config(
            create_app(make_config(home)), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: uv.started or not thread.is_alive(), 30, "uvicorn started")
        yield f"http://127.0.0.1:{port}", uv
    finally:
        uv.should_exit = True
        thread.join(60)


def test_follow_ends_with_server_stopping_when_the_server_stops(tmp_path: Path) -> None:
    with stoppable_server(tmp_path / "home") as (url, uv), Client(url) as jobtrail:
        job = jobtrail.submit("ticker", {"path": str(tmp_path / "never")})
        with pytest.raises(ServerStopping) as stopping:
            for n, _ in enumerate(jobtrail.follow(job.job_id)):
                if n == 3:
                    uv.should_exit = True
        assert stopping.value.job_id == job.job_id and stopping.value.status == "running"
        assert str(stopping.value) == (
            f"the server at {url} is stopping; job {job.job_id} was still running"
        )


def test_job_types_and_health(client: Client) -> None:
    types = {job_type.name: job_type for job_type in client.job_types()}
    assert {"sleep", "typed", "demo"} <= set(types)
    assert "count" in types["typed"].params_schema["properties"]
    health = client.health()
    assert health.status == "ok" and health.workers == 2 and health.workers_alive == 2


# -- errors ---------------------------------------------------------------------------------
def test_each_refusal_is_its_own_error_with_the_servers_message(client: Client) -> None:
    with pytest.raises(JobNotFound) as missing:
        client.get_job(UNKNOWN)
    assert missing.value.status_code == 404 and str(missing.value) == f"no job with id {UNKNOWN!r}"
    for call in (client.logs, client.cancel, lambda job_id: list(client.follow(job_id))):
        with pytest.raises(JobNotFound):
            call(UNKNOWN)

    with pytest.raises(InvalidParams) as wrong:
        client.submit("typed", {"count": "abc"})
    assert wrong.value.status_code == 422
    assert str(wrong.value).startswith("invalid params for 'typed': count:")
    with pytest.raises(InvalidParams, match="unknown job type 'no_such_type'"):
        client.submit("no_such_type")

    job = client.submit("typed", {"count": 1})
    with pytest.raises(InvalidRequest) as loud:
        client.logs(job.job_id, level="LOUD")
    assert not isinstance(loud.value, InvalidParams) and "level" in str(loud.value)
    with pytest.raises(InvalidRequest):
        list(client.follow(job.job_id, level="LOUD"))
    assert issubclass(InvalidParams, InvalidRequest) and issubclass(InvalidRequest, RequestFailed)
    assert issubclass(RequestFailed, ClientError) and issubclass(ClientError, JobtrailError)


def test_expired_logs_raise_logs_expired(fresh: Live) -> None:
    with Client(fresh.url) as jobtrail:
        job = jobtrail.submit("typed", {"count": 1})
        jobtrail.wait(job.job_id, 30)
        time.sleep(0.01)
        assert fresh.server.expire_logs(older_than_hours=0) == [job.job_id]
        with pytest.raises(LogsExpired) as expired:
            jobtrail.logs(job.job_id)
        assert expired.value.status_code == 410 and "deleted by retention" in str(expired.value)
        with pytest.raises(LogsExpired):
            list(jobtrail.follow(job.job_id))
        assert jobtrail.get_job(job.job_id).logs_expired, "the job itself is kept"


def test_a_token_is_sent_and_a_missing_one_is_unauthorized(tmp_path: Path) -> None:
    with live_server(make_config(tmp_path / "home", token="s3cret-token")) as guarded:
        with Client(guarded.url) as anonymous:
            assert anonymous.health().status == "ok", "health needs no token"
            with pytest.raises(Unauthorized) as refused:
                anonymous.list_jobs()
            assert refused.value.status_code == 401 and "token" in str(refused.value)
        with Client(guarded.url, token="s3cret-token") as allowed:
            assert isinstance(allowed.list_jobs(), list)


def test_an_unreachable_server_is_server_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as nowhere:
        with pytest.raises(ServerUnavailable) as down:
            nowhere.health()
        assert str(down.value).startswith(f"cannot reach the jobtrail server at {url}: ")
        assert down.value.__cause__ is not None, "the transport error is chained"


# -- AsyncClient ----------------------------------------------------------------------------
def test_async_client_has_every_method(live: Live, tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    async def scenario() -> None:
        async with AsyncClient(live.url) as jobtrail:
            assert (await jobtrail.health()).status == "ok"
            assert "ticker" in {t.name for t in await jobtrail.job_types()}
            job = await jobtrail.submit("ticker", {"path": str(gate), "interval": 0.02})
            seen: list[LogRecord | Gap] = []
            async for item in jobtrail.follow(job.job_id):
                seen.append(item)
                if len(seen) == 10:
                    gate.touch()
            got = records_of(seen)
            assert [r.seq for r in got] == list(range(1, len(got) + 1))
            done = await jobtrail.wait(job.job_id, timeout=30)
            assert done.status is JobStatus.COMPLETED
            assert (await jobtrail.get_job(job.job_id)).recent_logs
            listed = await jobtrail.list_jobs(type="ticker", limit=1000)
            assert job.job_id in [j.job_id for j in listed]
            page = await jobtrail.logs(job.job_id, tail=2)
            assert [r.seq for r in page.records] == [got[-2].seq, got[-1].seq]

            slow = await jobtrail.submit("sleep", {"seconds": 30})
            with pytest.raises(WaitTimeout):
                await jobtrail.wait(slow.job_id, timeout=0.3)
            await jobtrail.cancel(slow.job_id)
            assert (await jobtrail.wait(slow.job_id, 30)).status is JobStatus.CANCELLED
            with pytest.raises(JobFinished):
                await jobtrail.cancel(slow.job_id)
            with pytest.raises(JobNotFound):
                await jobtrail.get_job(UNKNOWN)
            with pytest.raises(InvalidParams):
                await jobtrail.submit("typed", {"count": "abc"})
        async with AsyncClient(f"http://127.0.0.1:{free_port()}") as nowhere:
            with pytest.raises(ServerUnavailable):
                await nowhere.health()

    asyncio.run(scenario())


def test_async_follow_resumes_after_the_connection_drops(live: Live, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    proxy = DroppingProxy(live.url)

    async def scenario() -> list[int]:
        ticks: list[int] = []
        async with AsyncClient(proxy.url) as jobtrail:
            job = await jobtrail.submit("ticker", {"path": str(gate), "interval": 0.02})
            async for item in jobtrail.follow(job.job_id):
                if isinstance(item, LogRecord) and item.message.startswith("tick "):
                    ticks.append(int(item.message.split()[1]))
                    if len(ticks) == 10:
                        proxy.drop_all()
                    elif len(ticks) == 30:
                        gate.touch()
        return ticks

    try:
        ticks = asyncio.run(scenario())
    finally:
        proxy.close()
    assert proxy.accepted >= 2, "a new connection after the drop"
    assert ticks == list(range(len(ticks))), "no tick missed or repeated across the drop"
