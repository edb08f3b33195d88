"""jobtrail.client: every Client and AsyncClient method against a real server (conftest's),
each error class from the answer that causes it, and follow() across a dropped connection,
a rotation gap and a server that stops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
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
    HostRow,
    InvalidParams,
    InvalidRequest,
    Job,
    JobFinished,
    JobNotFound,
    LogRecord,
    LogsExpired,
    RequestFailed,
    SearchMatch,
    SearchResult,
    ServerStopping,
    ServerUnavailable,
    Summary,
    TaskRow,
    Unauthorized,
    WaitTimeout,
)
from jobtrail.errors import JobtrailError
from jobtrail.models import JobStatus
from jobtrail.worker.runtime import PLAYBOOKS_ENV
from support.live import Live, free_port, live_server
from support.live import server_config as make_config
from support.modes import MODES, serve_in_mode
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


# -- issue 14: search, summary, fields, hosts, tasks, rerun -------------------------------------
PLAYBOOKS = Path(__file__).parent / "playbooks"


@pytest.fixture(scope="module", params=MODES)
def both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """A server of each mode: the local pool, and Redis with two `jobtrail worker`s."""
    home = tmp_path_factory.mktemp("home")
    with serve_in_mode(request.param, make_config(home), tmp_path_factory) as running:
        yield running


def test_search_gives_typed_matches_with_context_counted_past_max(client: Client) -> None:
    job = client.wait(client.submit("levels", {"errors_every": 10, "count": 100}).job_id, 30)
    found = client.search(job.job_id, "error 5", context=1, max=2)
    assert isinstance(found, SearchResult) and found.job_id == job.job_id
    assert found.q == "error 5" and not found.regex and not found.ignore_case
    assert found.total_matches == 1 and len(found.matches) == 1 and not found.more
    match = found.matches[0]
    assert isinstance(match, SearchMatch) and match.record.message == "error 50"
    assert [r.message for r in match.before] == ["info 49"]
    assert [r.message for r in match.after] == ["info 51"]
    assert match.raw["seq"] == match.record.seq and isinstance(match.record.timestamp, datetime)

    errors = client.search(job.job_id, r"^error \d+$", regex=True, context=0, max=3)
    assert errors.regex and errors.total_matches == 10, "counted past max"
    assert [m.record.message for m in errors.matches] == ["error 0", "error 10", "error 20"]
    assert errors.more and errors.next_after == errors.matches[-1].record.seq
    assert all(m.before == () and m.after == () for m in errors.matches), "context=0"
    rest = client.search(job.job_id, r"^error \d+$", regex=True, after=errors.next_after)
    seen = [m.record.message for m in errors.matches + rest.matches]
    assert seen == [f"error {i}" for i in range(0, 100, 10)] and not rest.more

    loud = client.search(job.job_id, "A CRITICAL", ignore_case=True, level="CRITICAL")
    assert [m.record.message for m in loud.matches] == ["a critical record"]
    assert client.search(job.job_id, "A CRITICAL").total_matches == 0, "case counts by default"
    with pytest.raises(InvalidRequest) as bad:
        client.search(job.job_id, "(unclosed", regex=True)
    assert bad.value.status_code == 422 and "regex" in str(bad.value).lower()
    with pytest.raises(JobNotFound):
        client.search(UNKNOWN, "x")


def test_summary_is_typed_and_agrees_with_the_log(client: Client) -> None:
    job = client.wait(client.submit("levels", {"errors_every": 10, "count": 100}).job_id, 30)
    summary = client.summary(job.job_id)
    assert isinstance(summary, Summary) and summary.job_id == job.job_id
    every = client.logs(job.job_id, tail=10000).records
    assert summary.records == len(every) and summary.bytes > 0
    counted: dict[str, int] = {}
    for record in every:
        counted[record.level] = counted.get(record.level, 0) + 1
    assert {k: v for k, v in summary.levels.items() if v} == counted
    assert summary.first_error is not None and summary.first_error.message == "a error record"
    assert summary.last_error is not None and summary.last_error.message == "error 90"
    assert summary.first_timestamp == every[0].timestamp
    assert summary.last_timestamp == every[-1].timestamp
    assert summary.span_s is not None and summary.span_s >= 0
    assert summary.hosts is None, "not a playbook"
    shapes = {shape.shape: shape for shape in summary.repeated}
    assert any(shape.count == 90 for shape in shapes.values()), shapes  # info <n>, 90 times
    with pytest.raises(JobNotFound):
        client.summary(UNKNOWN)


def test_logs_follow_and_search_filter_by_fields(client: Client) -> None:
    job = client.wait(client.submit("fielded", {}).job_id, 30)

    def messages(records: Iterable[LogRecord]) -> list[str]:
        return [r.message for r in records]

    three = ["try 2", "try 5", "try 8", "a long value"]  # 3, and the text "3", as JSON text
    assert messages(client.logs(job.job_id, fields={"attempt": 3}).records) == three
    assert messages(client.logs(job.job_id, fields={"attempt": "3"}).records) == three
    both = {"attempt": 3, "user": "u0"}
    assert messages(client.logs(job.job_id, fields=both).records) == ["try 2", "try 8"]
    assert messages(client.logs(job.job_id, fields={"ok": False}).records) == ["try 0"]
    followed = records_of(list(client.follow(job.job_id, fields=both)))
    assert messages(followed) == ["try 2", "try 8"]
    assert client.logs(job.job_id, fields=both).records[0].raw["fields"]["attempt"] == 3
    found = client.search(job.job_id, "try", fields={"attempt": 3}, context=0)
    assert [m.record.message for m in found.matches] == three[:3]
    assert client.logs(job.job_id, fields={"attempt": 3, "no_such_field": "x"}).records == ()


def test_rerun_queues_the_same_job_with_overrides_in_both_modes(both: Live) -> None:
    with Client(both.url) as jobtrail:
        first = jobtrail.wait(jobtrail.submit("typed", {"count": 2, "name": "x"}).job_id, 60)
        assert first.duration_s is not None and first.duration_s >= 0
        assert first.rerun_of is None and first.reruns == ()
        again = jobtrail.rerun(first.job_id)
        assert again.job_id != first.job_id and again.job_type == "typed"
        assert again.rerun_of == first.job_id and dict(again.params) == dict(first.params)
        changed = jobtrail.rerun(first.job_id, params={"count": 3})
        assert changed.params["count"] == 3 and changed.params["name"] == "x"
        assert jobtrail.wait(changed.job_id, 60).status is JobStatus.COMPLETED
        assert jobtrail.get_job(first.job_id).reruns == (again.job_id, changed.job_id)

        with pytest.raises(InvalidParams) as not_a_playbook:
            jobtrail.rerun(first.job_id, failed_hosts_only=True)
        assert not_a_playbook.value.status_code == 422
        with pytest.raises(InvalidParams):
            jobtrail.rerun(first.job_id, params={"count": "abc"})
        with pytest.raises(JobNotFound):
            jobtrail.rerun(UNKNOWN)


@pytest.fixture(scope="module")
def ansible_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    saved = os.environ.get(PLAYBOOKS_ENV)
    try:
        config = make_config(tmp_path_factory.mktemp("home"), playbooks=PLAYBOOKS)
        with live_server(config) as running:
            yield running
    finally:  # the service exports the dir to os.environ: don't leak it into other tests
        if saved is None:
            os.environ.pop(PLAYBOOKS_ENV, None)
        else:
            os.environ[PLAYBOOKS_ENV] = saved


@pytest.mark.timeout(180)
def test_hosts_tasks_and_rerun_of_failed_hosts_of_a_playbook(ansible_live: Live) -> None:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    with Client(ansible_live.url) as jobtrail:
        params = {"playbook": "failing.yml", "inventory": "web1,web2,", "extra_vars": local}
        job = jobtrail.wait(jobtrail.submit("ansible_playbook", params).job_id, 120)
        assert job.status is JobStatus.FAILED
        hosts = jobtrail.hosts(job.job_id)
        assert all(isinstance(row, HostRow) for row in hosts)
        assert {row.host: (row.ok, row.failed) for row in hosts} == {
            "web1": (1, 1),
            "web2": (1, 1),
        }
        tasks = jobtrail.tasks(job.job_id)
        assert all(isinstance(row, TaskRow) for row in tasks)
        rows = {(row.task, row.host): row for row in tasks}
        assert rows[("Prepare", "web1")].status == "ok"
        failed = rows[("Start the service", "web2")]
        assert failed.status == "failed" and failed.play == "Failing play"
        assert failed.started is not None and failed.ended is not None
        assert failed.duration_s is not None and failed.duration_s >= 0
        assert jobtrail.tasks(job.job_id, status="running") == [], "nothing runs any more"

        again = jobtrail.rerun(job.job_id, failed_hosts_only=True)
        assert again.rerun_of == job.job_id
        assert sorted(str(again.params["limit"]).strip(",").split(",")) == ["web1", "web2"]
        jobtrail.wait(again.job_id, 120)


def test_async_client_searches_summarises_and_reruns(live: Live) -> None:
    async def scenario() -> None:
        async with AsyncClient(live.url) as jobtrail:
            job = await jobtrail.submit("levels", {"errors_every": 10, "count": 30})
            await jobtrail.wait(job.job_id, 30)
            found = await jobtrail.search(job.job_id, "error", ignore_case=True, context=0)
            assert [m.record.message for m in found.matches][-3:] == [
                "error 0",
                "error 10",
                "error 20",
            ]
            summary = await jobtrail.summary(job.job_id)
            assert summary.records == len((await jobtrail.logs(job.job_id)).records)
            page = await jobtrail.logs(job.job_id, fields={"no_such_field": 1})
            assert page.records == ()
            again = await jobtrail.rerun(job.job_id, params={"count": 1})
            assert again.rerun_of == job.job_id and again.params["count"] == 1
            done = await jobtrail.wait(again.job_id, 30)
            assert done.duration_s is not None
            with pytest.raises(InvalidParams):
                await jobtrail.rerun(job.job_id, failed_hosts_only=True)

    asyncio.run(scenario())
