"""GET /api/jobs/{id}/summary: the whole log at a glance, kept as records are written.

The summary is compared with the log itself (every record read back through /logs), in
both modes; rotation must not lose what the keeper already folded (the first error of a
log whose first segments are gone), a new server on the same home must answer the same
summary, and a large log must answer at once.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobtrail.logstore.shapes import ShapeCache, ShapeTable, shape_text
from jobtrail.logstore.summary import SUMMARY_FILE
from jobtrail.records import encode_record
from support.live import Live, live_server
from support.live import server_config as make_config
from support.modes import MODES, serve_in_mode
from support.redis_server import redis_server, workers

pytestmark = pytest.mark.timeout(180)

ERRORS = ("ERROR", "CRITICAL")


@pytest.fixture(scope="module", params=MODES)
def both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("home")
    with serve_in_mode(request.param, make_config(home), tmp_path_factory) as live:
        yield live


def summary(live: Live, job_id: str) -> dict[str, Any]:
    response = live.http.get(f"/api/jobs/{job_id}/summary")
    assert response.status_code == 200, response.text
    return dict(response.json())


def shapes(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["shape"]: row for row in found["repeated"]}


# -- the shapes, on their own --------------------------------------------------------------
def line(seq: int, message: str, level: str = "INFO") -> bytes:
    stamp = f"2026-11-25T12:00:00.{seq:06d}Z"
    return encode_record(seq, stamp, level, "app", message, "MainThread").encode().rstrip(b"\n")


def test_shapes_normalise_numbers_hex_uuids_ids_and_quoted_strings() -> None:
    messages = [
        'fetched "item 7" for 1f2e3d4c-aaaa-bbbb-cccc-0123456789ab in 0.25 s',
        'fetched "it\'s other" for 9e8d7c6b-1111-2222-3333-abcdefabcdef in 12 s',
        "job demo-5f0c2a9e41b7 at 0x7f3a done; user's 'quoted' file",
        "job demo-a1b2c3d4e5f6 at 0xdeadbeef done; user's 'other one' file",
        "first line 3\nsecond line is not part of the shape",
        "address 10.0.0.1 version 1.2.3",
    ]
    blob = b"\n".join(line(i, m) for i, m in enumerate(messages))
    got = [shape_text(s) for s, _ in ShapeCache().kinds(blob)]
    assert got[0] == got[1] == 'fetched "<str>" for <uuid> in <n> s'
    assert got[2] == got[3] == "job demo-<hex> at <hex> done; user's '<str>' file"
    assert got[4] == "first line <n>"
    assert got[5] == "address <n> version <n>"


def test_messages_that_differ_only_in_digits_share_a_cached_shape() -> None:
    cache = ShapeCache()
    lines = [line(i, f"retry {i} of {i * 31}") for i in range(1, 1001)]
    kinds = cache.kinds(b"\n".join(lines))
    assert {(shape_text(s), level) for s, level in kinds} == {("retry <n> of <n>", "INFO")}


def test_the_shape_table_is_bounded_and_keeps_the_frequent_ones_exact() -> None:
    table = ShapeTable(keep=10)
    for seq in range(1, 5001):
        if seq % 2:
            table.add(b"frequent", 1, seq, seq, b"{}")
        else:
            table.add(b"rare %d" % seq, 1, seq, seq, b"{}")
        assert len(table.shapes) <= 20
    top = table.top(3, min_count=1)
    assert top[0][0] == b"frequent" and top[0][1].count == 2500
    assert (top[0][1].first_seq, top[0][1].last_seq) == (1, 4999)
    assert table.forgotten > 0  # the rare ones were dropped, and that is counted


# -- through a server, both modes ------------------------------------------------------------
def test_the_summary_equals_the_log(both: Live) -> None:
    job = both.submit("summary_mix", count=500)
    both.wait(job["job_id"])
    job_id = job["job_id"]
    records = both.all_records(job_id)
    found = summary(both, job_id)

    assert found["job_id"] == job_id
    assert found["records"] == len(records) == found["summarised_to_seq"] == records[-1]["seq"]
    counted = Counter(r["level"] for r in records)
    assert found["levels"] == {lvl: counted.get(lvl, 0) for lvl in found["levels"]}
    assert set(found["levels"]) == {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    errors = [r for r in records if r["level"] in ERRORS]
    assert found["first_error"] == errors[0] and found["first_error"]["seq"] == 1
    assert found["last_error"] == errors[-1]
    assert found["first_timestamp"] == records[0]["timestamp"]
    assert found["last_timestamp"] == records[-1]["timestamp"]
    assert found["span_s"] is not None and found["span_s"] >= 0
    segments = both.server.store.log_path(job_id)
    data = sum(p.stat().st_size for p in Path(segments).glob("*.jsonl"))
    assert found["bytes"] == data
    assert (found["gap"], found["truncated_before"], found["records_dropped"]) == (0, 1, 0)
    assert found["hosts"] is None

    by_shape = shapes(found)
    chatty = by_shape["chatty <n> " + "y" * 100]
    assert chatty["count"] == 500 and found["repeated"][0] == chatty  # the most frequent
    fetched = by_shape['fetched "<str>" for request <uuid>']
    slow = by_shape["slow response from host <hex> after <n> s"]
    assert fetched["count"] == slow["count"] == 30
    reach = by_shape["could not reach db-<n> at <n>"]
    assert (reach["count"], reach["first_seq"], reach["last_seq"]) == (2, 1, records[-1]["seq"])
    assert reach["example"] == records[0]
    assert fetched["first_seq"] == 2 and fetched["last_seq"] == 60
    assert all(row["count"] >= 2 for row in found["repeated"])  # "disk <str> is full": once


def test_a_running_job_has_a_summary_that_grows(both: Live) -> None:
    job = both.submit("summary_mix", count=2000, burst=100, pause=0.05)
    job_id = job["job_id"]
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while both.job(job_id)["status"] in ("pending", "running") and time.monotonic() < deadline:
        response = both.http.get(f"/api/jobs/{job_id}/summary")
        if response.status_code == 200:
            seen.append(response.json()["records"])
        time.sleep(0.1)
    both.wait(job_id)
    assert any(0 < n < 2000 for n in seen), seen  # answered mid-run, with part of the log
    assert seen == sorted(seen)
    assert summary(both, job_id)["records"] == both.logs(job_id, tail=1)["latest_seq"]


def test_unknown_and_malformed_ids_are_404(both: Live) -> None:
    for job_id in ("sleep-000000000000", "not an id"):
        response = both.http.get(f"/api/jobs/{job_id}/summary")
        assert response.status_code == 404, response.text


# -- rotation and restart ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["local", "redis"])
def test_rotation_keeps_the_first_error_and_a_new_server_answers_the_same(
    mode: str, tmp_path: Path
) -> None:
    """400 kB segments, 2 kept: the first error's segment is deleted long before the end."""
    config = make_config(tmp_path / "home", log_max_bytes=400_000, log_segments=2)
    with contextlib.ExitStack() as stack:
        if mode == "redis":
            rs = stack.enter_context(redis_server(tmp_path / "redis"))
            stack.enter_context(workers(rs.url, count=2))
            config = replace(config, backend=rs.url)
        with live_server(config) as live:
            job = live.submit("summary_mix", count=12_000, burst=200, pause=0.02)
            job_id = job["job_id"]
            live.wait(job_id, timeout=120)
            before = summary(live, job_id)
            latest = live.logs(job_id, tail=1)["latest_seq"]
            first_kept = live.logs(job_id, after=0, tail=1, format="json")["logs"][0]["seq"]
            saved = Path(live.server.store.log_path(job_id)) / SUMMARY_FILE
        assert first_kept > 1  # rotation deleted the start of the log
        assert before["truncated_before"] == first_kept
        assert before["first_error"]["seq"] == 1 and before["first_error"]["level"] == "ERROR"
        assert "could not reach db-1" in before["first_error"]["message"]
        assert before["records"] == before["summarised_to_seq"] == latest
        assert before["levels"]["INFO"] == 12_000 + 30 and before["gap"] == 0
        assert shapes(before)["chatty <n> " + "y" * 100]["count"] == 12_000
        assert saved.stat().st_mode & 0o777 == 0o600

        with live_server(config) as again:  # a new server on the same home
            assert summary(again, job_id) == before


def test_a_saved_summary_that_is_unreadable_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    config = make_config(tmp_path / "home")
    with live_server(config) as live:
        job_id = live.submit("summary_mix", count=100)["job_id"]
        live.wait(job_id)
        before = summary(live, job_id)
        saved = Path(live.server.store.log_path(job_id)) / SUMMARY_FILE
    saved.write_bytes(b'{"version": 1, "records": ')  # torn
    with live_server(config) as again:
        assert summary(again, job_id) == before


def test_retention_removes_the_summary_with_the_log(fresh: Live) -> None:
    job_id = fresh.submit("summary_mix", count=10)["job_id"]
    fresh.wait(job_id)
    assert summary(fresh, job_id)["records"] > 0
    folder = Path(fresh.server.store.log_path(job_id))
    deadline = time.monotonic() + 10
    while not (folder / SUMMARY_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (folder / SUMMARY_FILE).exists()
    assert fresh.server.expire_logs(older_than_hours=0) == [job_id]
    assert not folder.exists()
    assert fresh.http.get(f"/api/jobs/{job_id}/summary").status_code == 410
    time.sleep(1.5)  # the keeper's next save time: it must not bring the folder back
    assert not folder.exists()


def test_a_50k_record_log_answers_at_once(fresh: Live) -> None:
    job_id = fresh.submit("flood", records=50_000, payload=150)["job_id"]
    fresh.wait(job_id, timeout=120)
    latest = fresh.logs(job_id, tail=1)["latest_seq"]
    times = []
    for _ in range(20):
        started = time.perf_counter()
        found = summary(fresh, job_id)
        times.append(time.perf_counter() - started)
    assert found["records"] == latest >= 50_000
    assert shapes(found)["flood <n> " + "x" * 150]["count"] == 50_000
    assert statistics.median(times) < 0.05, times
    assert max(times) < 0.5, times
    assert os.path.exists(Path(fresh.server.store.log_path(job_id)) / SUMMARY_FILE)
