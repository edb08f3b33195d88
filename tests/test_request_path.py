"""The hot routes' bodies, spliced from the stored bytes, equal what the pydantic models gave.

``GET /api/jobs/{id}``, ``GET /api/jobs/{id}/logs`` and ``/logs/search`` no longer build
``JobOut``, ``LogsOut`` and ``SearchOut``; here each body is compared, key order included,
with the models' dump of the same service answers (the old route code), for jobs whose
records are plain, messy (control characters, bad UTF-8, 70 kB lines, tracebacks), fielded
and failed; a filtered stream and download send the stored lines themselves. ``logstore.raw``
is tested on the lines a worker never writes (torn, NaN, keys in another order).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobtrail.api.bodies import search_body
from jobtrail.api.schemas import JobOut, LogFormat, LogRecordOut, LogsOut, job_out
from jobtrail.api.schemas.search import SearchOut, search_out
from jobtrail.logstore import FieldMatch, JobLogStore, SearchMatch, SearchPage, raw
from jobtrail.records import LEVEL_BITS, encode_record, text_line
from support.bodies import old_search, ordered
from support.live import Live
from support.waits import wait_until

pytestmark = pytest.mark.timeout(120)


def _old_job(live: Live, job_id: str) -> dict[str, Any]:
    service = live.server
    job = service.get(job_id)
    recent = [] if job.logs_expired else service.recent(job_id, 50)
    return job_out(job, service.log_file(job_id), recent).model_dump(mode="json")


def _old_logs(live: Live, job_id: str, fmt: str, **query: Any) -> dict[str, Any]:
    service = live.server
    page = service.read(job_id, **query)
    records = fmt != "text"
    entries: list[Any] = (
        [LogRecordOut.model_validate(r) for r in page.records]
        if records
        else [text_line(r) for r in page.records]
    )
    return LogsOut(
        job_id=job_id,
        format=LogFormat.json if records else LogFormat.text,
        total_lines=len(entries),
        logs=entries,
        log_file=service.log_file(job_id),
        first_seq=page.first_seq,
        last_seq=page.last_seq,
        latest_seq=page.latest_seq,
        truncated_before=page.truncated_before,
        more=page.more,
    ).model_dump(mode="json")


@pytest.fixture(scope="module")
def jobs(live: Live) -> list[str]:
    submitted = [
        live.submit("levels", count=200, errors_every=7),
        live.submit("messy"),
        live.submit("output"),
        live.submit("fielded"),
        live.submit("fail_digest"),
        live.submit("crash", kind="raise"),
    ]
    ids = [job["job_id"] for job in submitted]
    for job_id in ids:
        live.wait(job_id)
    return ids


def test_job_body_equals_the_models(live: Live, jobs: list[str]) -> None:
    for job_id in jobs:
        response = live.http.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert ordered(body) == ordered(_old_job(live, job_id)), job_id
        JobOut.model_validate_json(response.content)  # the documented model holds it
    assert any(len(live.job(j)["recent_logs"]) == 50 for j in jobs)


def test_job_body_of_a_running_job(live: Live, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    running = live.submit("wait_for_file", path=str(gate))["job_id"]
    live.wait(running, statuses=("running",))
    # its one line ("waiting for …") logged, or the two bodies may straddle it
    wait_until(lambda: live.job(running)["recent_logs"], what="the job's first line")
    body, old = live.job(running), _old_job(live, running)
    assert body["duration_s"] <= old["duration_s"], "so far: it grows"
    body["duration_s"] = old["duration_s"]
    assert ordered(body) == ordered(old)
    gate.write_text("")
    live.wait(running)


@pytest.mark.parametrize("fmt", ["text", "json", "jsonl"])
@pytest.mark.parametrize(
    "query",
    [
        {},
        {"tail": 1},
        {"tail": 10000},
        {"level": "ERROR"},
        {"after": 0, "tail": 50},
        {"after": 150, "tail": 10},
        {"since": "2000-01-01T00:00:00Z", "tail": 5},
    ],
    ids=repr,
)
def test_logs_body_equals_the_models(
    live: Live, jobs: list[str], fmt: str, query: dict[str, Any]
) -> None:
    for job_id in jobs:
        response = live.http.get(f"/api/jobs/{job_id}/logs", params={"format": fmt, **query})
        assert response.status_code == 200, response.text
        store_query = {("min_level" if k == "level" else k): v for k, v in query.items()}
        old = _old_logs(live, job_id, fmt, **store_query)
        assert ordered(response.json()) == ordered(old), (job_id, query)
        LogsOut.model_validate_json(response.content)


def test_logs_body_with_field_filters(live: Live, jobs: list[str]) -> None:
    fielded = jobs[3]
    response = live.http.get(
        f"/api/jobs/{fielded}/logs", params={"format": "json", "field": ["attempt:3"]}
    )
    old = _old_logs(live, fielded, "json", fields=FieldMatch.parse(["attempt:3"]))
    assert ordered(response.json()) == ordered(old)
    assert response.json()["logs"], "the filter matched records"


# -- logstore.raw: lines a worker never writes -------------------------------------------------
HEAD = b'{"seq":3,"timestamp":"2026-11-25T12:00:00.000001Z","level":"INFO","logger":"a","message":'


def test_head_is_the_line_cut_before_thread() -> None:
    line = HEAD + b'"x,\\"thread\\":1","thread":"MainThread","fields":{"a":1}}'
    assert raw.head(line) == HEAD + b'"x,\\"thread\\":1"}'


def test_head_of_lines_in_another_shape() -> None:
    # no top-level thread, but a nested one: cutting there would break the JSON
    nested = HEAD + b'"m","fields":{"a":1,"thread":2}}'
    assert json.loads(raw.head(nested) or b"") == json.loads(HEAD + b'"m"}')
    reordered = b'{"message":"m","seq":3,"level":"INFO","timestamp":"t","logger":"a","thread":"x"}'
    assert list(json.loads(raw.head(reordered) or b"")) == [
        "seq",
        "timestamp",
        "level",
        "logger",
        "message",
    ]
    assert raw.head(HEAD + b'"m","thread":"T"') is None, "torn"
    assert raw.head(b'{"seq":3,"message":"no timestamp"}') is None
    assert raw.head(b"not json") is None


def test_decode_agrees_with_json_loads() -> None:
    plain = HEAD + b'"m","thread":"T"}'
    assert raw.decode(plain) == (plain, json.loads(plain))
    assert raw.decode(HEAD + b'"m"') is None
    assert raw.decode(b'{"seq":"3"}') is None
    assert raw.decode(b"[1]") is None
    nan = HEAD + b'"m","ratio":NaN}'
    served, record = raw.decode(nan) or (b"", {})
    assert math.isnan(record["ratio"])
    assert json.loads(served)["ratio"] is None, "served as strict JSON"


def test_recent_heads_are_recents_records_cut(tmp_path: Path) -> None:
    store = JobLogStore(tmp_path / "logs")
    try:
        lines = [
            HEAD.replace(b'"seq":3', b'"seq":%d' % i) + b'"m %d","thread":"T","x":1}' % i
            for i in range(1, 6)
        ]
        payload = b"\n".join([*lines[:3], b'{"seq":4,"torn', *lines[4:]]) + b"\n"
        store.append("j-00000000000a", payload, 1, 5, LEVEL_BITS["INFO"])
        heads = [json.loads(h) for h in store.recent_heads("j-00000000000a", 3)]
        keys = ("seq", "timestamp", "level", "logger", "message")
        old = [{k: r[k] for k in keys} for r in store.recent("j-00000000000a", 3)]
        assert heads == old and [h["seq"] for h in heads] == [5, 3, 2]
    finally:
        store.close()


# -- search, the filtered stream and the filtered download: stored lines, spliced ----------
SEARCHES = [
    {"q": "e"},
    {"q": "record", "context": 5, "max": 1000},
    {"q": ".", "regex": True, "max": 3, "context": 0},
    {"q": "error", "ignore_case": True, "level": "ERROR", "context": 20},
]


@pytest.mark.parametrize("query", SEARCHES, ids=repr)
def test_search_body_equals_the_models(live: Live, jobs: list[str], query: dict[str, Any]) -> None:
    found = 0
    for job_id in jobs:
        response = live.http.get(f"/api/jobs/{job_id}/logs/search", params=query)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert ordered(response.json()) == ordered(old_search(live, job_id, **query)), job_id
        found += len(SearchOut.model_validate_json(response.content).matches)
    assert found, "something matched"


def test_search_matches_of_lines_in_other_shapes() -> None:
    before = [HEAD + b'"b","thread":"T"}', HEAD.replace(b":3,", b":4,") + b'"c"}']
    shapes = [
        HEAD + b'"m","thread":"T","fields":{"a":1}}',  # the worker's
        b'{"message":"m","seq":3,"level":"INFO","timestamp":"t","logger":"a","thread":"x"}',
        HEAD + b'"m"}',  # no thread
        HEAD + b'"m","thread":"T","before":1,"after":{"x":2}}',  # keys the context replaces
    ]
    for line in shapes:
        match = SearchMatch(json.loads(line), [json.loads(b) for b in before], [], line, before)
        page = SearchPage([match], 1, False, None, 4, 1)
        body = json.loads(search_body("j", "m", False, False, page))
        old = search_out("j", "m", False, False, page).model_dump(mode="json")
        assert ordered(body) == ordered(old), line


def _records_sent(text: str) -> list[str]:
    """The data of each ``record`` event of a Server-Sent Events body."""
    out = []
    for frame in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if fields.get("event") == "record":
            out.append(fields["data"])
    return out


def test_a_filtered_stream_and_download_send_the_stored_lines(live: Live, jobs: list[str]) -> None:
    sent = 0
    for job_id in jobs:
        page = live.server.read(job_id, tail=10000, after=0, min_level="WARNING")
        lines = [line.decode() for line in page.lines]
        stream = live.http.get(f"/api/jobs/{job_id}/logs/stream", params={"level": "WARNING"})
        assert _records_sent(stream.text) == lines, job_id
        assert [json.loads(x) for x in lines] == page.records
        params = {"level": "WARNING", "format": "jsonl"}
        download = live.http.get(f"/api/jobs/{job_id}/logs/download", params=params)
        assert download.text.splitlines() == lines, job_id
        sent += len(lines)
    assert sent, "the filter let records through"


def test_ended_jobs_are_kept_for_peek_and_every_change_drops_them(tmp_path: Path) -> None:
    """``LocalJobRecords.peek`` (what lets GET /api/jobs/{id} answer on the event loop) has
    an ended job only once ``get`` read it, never a stale one after a change, and never
    waits for the lock a write holds."""
    from jobtrail.backends.local.records import LocalJobRecords
    from jobtrail.models import Job, JobStatus

    records = LocalJobRecords(tmp_path / "jobs.db")
    try:
        job = Job(job_id="sleep-0123456789ab", job_type="sleep", params={}, created_at=1.0)
        records.insert(job)
        assert records.peek(job.job_id) is not None  # pending: in memory
        assert records.transition(job.job_id, ("pending",), status="completed", completed_at=2.0)
        assert records.peek(job.job_id) is None  # ended: SQLite's until read
        read = records.get(job.job_id)
        assert read is not None and records.peek(job.job_id) == read
        records.link_rerun(job.job_id, "sleep-ba9876543210")
        assert records.peek(job.job_id) is None
        again = records.get(job.job_id)
        assert again is not None and again.extra["reruns"] == ["sleep-ba9876543210"]
        assert records.peek(job.job_id) == again
        records.mark_expired(job.job_id)
        assert records.peek(job.job_id) is None
        expired = records.get(job.job_id)
        assert expired is not None and expired.logs_expired
        assert records.transition(job.job_id, (), extra={"note": 1})
        assert records.peek(job.job_id) is None
        assert records.get(job.job_id) is not None and records.peek(job.job_id) is not None
        records.insert(replace(job, job_id="sleep-00000000000f"))
        with records._lock:  # a write in progress: peek does not wait for it
            assert records.peek("sleep-00000000000f") is None
        assert records.peek("sleep-00000000000f") is not None
        assert JobStatus.PENDING is records.get("sleep-00000000000f").status  # type: ignore[union-attr]
    finally:
        records.close()


def _batches(store: JobLogStore, job_id: str, first: int, count: int, per: int = 30) -> None:
    for start in range(first, first + count, per):
        seqs = range(start, min(start + per, first + count))
        levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
        lines = [
            encode_record(s, f"2026-12-01T10:00:00.{s:06d}Z", levels[s % 4], "app", f"m {s}", "t")
            for s in seqs
        ]
        mask = 0
        for s in seqs:
            mask |= LEVEL_BITS[levels[s % 4]]
        store.append(job_id, "".join(lines).encode(), seqs[0], len(seqs), mask)


@pytest.mark.parametrize("written", [7, 100, 250])
def test_a_tail_at_once_equals_the_files_answer(tmp_path: Path, written: int) -> None:
    """``tail_at_once`` (a plain tail served on the event loop) answers exactly what ``read``
    answers from the files, while the job is written and once it is closed; it declines
    (None) when rotation removed lines or the store did not write the job itself."""
    store = JobLogStore(tmp_path / "logs")
    job_id = "flood-0123456789ab"
    _batches(store, job_id, 1, written)
    for step in ("written", "more written", "closed"):
        if step == "more written":  # the kept view of the ring is made anew
            _batches(store, job_id, written + 1, 3)
        if step == "closed":
            store.close_job(job_id)
        for tail in (1, 50, 100):
            got = store.tail_at_once(job_id, tail)
            assert got is not None and got.texts == [text_line(r) for r in got.records]
            assert replace(got, texts=None) == store.read(job_id, tail=tail), (step, tail)
            heads = store.recent_heads_at_once(job_id, tail)
            assert heads == store.recent_heads(job_id, tail), (step, tail)
        assert store.tail_at_once(job_id, 101) is None  # more than the ring holds
    store.close()
    assert JobLogStore(tmp_path / "logs").tail_at_once(job_id, 10) is None  # a new server's

    small = JobLogStore(tmp_path / "small", max_segment_bytes=4000, max_segments=2)
    _batches(small, job_id, 1, 400)
    assert small.read(job_id, tail=10).truncated_before > 1
    assert small.tail_at_once(job_id, 10) is None
    small.close_job(job_id)
    assert small.tail_at_once(job_id, 10) is None
