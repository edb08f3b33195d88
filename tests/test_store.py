"""JobLogStore against real files: round trips, filters, rotation, recovery, limits, threads."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobtrail.logstore import store as store_module
from jobtrail.logstore.search import search_query
from jobtrail.logstore.store import JobLogStore
from jobtrail.records import LEVEL_BITS, LEVELS, TimestampFormatter, encode_record

JOB = "build-0123456789ab"
BASE = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def render(
    first: int,
    count: int,
    level: Callable[[int], str] = lambda seq: "INFO",
    extra: Callable[[int], dict[str, Any] | None] = lambda seq: None,
    ts: Callable[[int], float] = lambda seq: BASE + seq * 0.001,
) -> tuple[bytes, int]:
    """A batch as the worker renders it: payload bytes and the OR of its level bits."""
    fmt = TimestampFormatter()
    out, mask = [], 0
    for seq in range(first, first + count):
        name = level(seq)
        mask |= LEVEL_BITS[name]
        out.append(encode_record(seq, fmt(ts(seq)), name, "app", f"m{seq}", "Main", extra(seq)))
    return "".join(out).encode(), mask


def fill(store: JobLogStore, job: str, total: int, batch: int = 100, start: int = 1, **kw: Any):
    for first in range(start, start + total, batch):
        count = min(batch, start + total - first)
        payload, mask = render(first, count, **kw)
        store.append(job, payload, first, count, mask)


def seqs(records: list[dict[str, Any]]) -> list[int]:
    return [r["seq"] for r in records]


def page_all(store: JobLogStore, job: str, tail: int, **kw: Any) -> list[int]:
    """Every seq reachable by paging with the after cursor."""
    out: list[int] = []
    after = 0
    while True:
        page = store.read(job, tail=tail, after=after, **kw)
        out += seqs(page.records)
        assert len(page.records) <= tail
        if not page.more:
            return out
        assert page.last_seq is not None
        after = page.last_seq


def lines_all(store: JobLogStore, job: str, limit: int, after: int = 0) -> list[int]:
    """Every seq reachable by paging ``read_lines``; each line must be the record ``read``
    returns for its seq, byte for byte as JSON, and seqs must only grow."""
    out: list[int] = []
    while True:
        page = store.read_lines(job, after=after, limit=limit)
        assert len(page.seqs) == len(page.lines)
        assert len(page.lines) < limit + 100  # whole batches: at most one batch over
        for seq, line in zip(page.seqs, page.lines, strict=True):
            assert seq > after and not line.endswith(b"\n")
            assert json.loads(line)["seq"] == seq
            after = seq
        out += page.seqs
        if not page.more:
            assert page.latest_seq >= after
            return out


@pytest.fixture
def store(tmp_path: Path):
    s = JobLogStore(tmp_path / "logs")
    yield s
    s.close()


def test_round_trip(store: JobLogStore) -> None:
    fill(store, JOB, 10, extra=lambda seq: {"host": "web1", "rc": seq})
    page = store.read(JOB)
    assert seqs(page.records) == list(range(1, 11))
    first = page.records[0]
    assert first["message"] == "m1" and first["host"] == "web1" and first["rc"] == 1
    assert first["timestamp"].startswith("2027-01-15T08:00:00.00")
    assert (page.first_seq, page.last_seq, page.latest_seq) == (1, 10, 10)
    assert page.truncated_before == 1 and not page.more
    assert seqs(store.recent(JOB, 3)) == [10, 9, 8]
    assert store.exists(JOB)
    assert store.log_path(JOB) == store.log_path(JOB).parent / JOB
    st = store.stats(JOB)
    assert (st.segments, st.first_seq, st.last_seq, st.dropped, st.cut_reason) == (
        1,
        1,
        10,
        0,
        None,
    )
    assert st.bytes == sum(p.stat().st_size for p in store.log_path(JOB).iterdir())


def test_missing_job(store: JobLogStore) -> None:
    assert store.read_lines(JOB, after=0) == store_module.LinePage([], [], 0, 1, False)
    page = store.read(JOB, after=5)
    assert page.records == [] and page.latest_seq == 0 and page.last_seq == 5
    assert store.read(JOB).last_seq is None
    assert store.recent(JOB) == []
    assert not store.exists(JOB)
    assert store.stats(JOB).bytes == 0
    assert store.delete(JOB) == 0


def test_tail_counts_matching_records_oldest_first(store: JobLogStore) -> None:
    fill(store, JOB, 1000, level=lambda seq: "ERROR" if seq % 7 == 0 else "INFO")
    page = store.read(JOB, tail=5, min_level="ERROR")
    assert seqs(page.records) == [966, 973, 980, 987, 994]
    assert page.latest_seq == 1000
    assert seqs(store.read(JOB, tail=3).records) == [998, 999, 1000]
    assert len(store.read(JOB, tail=10000).records) == 1000


def test_level_is_a_minimum(store: JobLogStore) -> None:
    fill(store, JOB, 100, batch=7, level=lambda seq: LEVELS[seq % 5])
    records = store.read(JOB, tail=1000, min_level="WARNING").records
    assert {r["level"] for r in records} == {"WARNING", "ERROR", "CRITICAL"}
    assert len(records) == 60
    assert {r["level"] for r in store.read(JOB, min_level="CRITICAL").records} == {"CRITICAL"}
    with pytest.raises(ValueError):
        store.read(JOB, min_level="WARN")
    for bad in (0, 10001):
        with pytest.raises(ValueError):
            store.read(JOB, tail=bad)


def test_message_that_looks_like_a_level_is_not_one(store: JobLogStore) -> None:
    payload = encode_record(1, "2027-01-15T08:00:00.000000Z", "INFO", "a", '"level":"ERROR"', "t")
    store.append(JOB, payload.encode(), 1, 1, LEVEL_BITS["INFO"] | LEVEL_BITS["ERROR"])
    assert store.read(JOB, min_level="ERROR").records == []


def test_rotation(tmp_path: Path) -> None:
    s = JobLogStore(tmp_path, max_segment_bytes=5000, max_segments=3)
    fill(s, JOB, 2000, batch=10)
    names = sorted(p.name for p in s.log_path(JOB).iterdir())
    newest = int(names[-1][:8])
    assert names == sorted(
        f"{n:08d}.{ext}" for n in range(newest - 2, newest + 1) for ext in ("idx", "jsonl")
    )
    assert all(p.stat().st_size <= 5000 for p in s.log_path(JOB).glob("*.jsonl"))
    page = s.read(JOB, tail=10000)
    assert page.truncated_before > 1 and page.truncated_before == page.first_seq
    assert seqs(page.records) == list(range(page.truncated_before, 2001))
    assert lines_all(s, JOB, limit=50) == list(range(page.truncated_before, 2001))
    assert s.read_lines(JOB, after=0, limit=1).truncated_before == page.truncated_before
    assert s.stats(JOB).segments == 3 and s.stats(JOB).first_seq == page.truncated_before
    # A batch bigger than the cap goes whole into a fresh segment.
    big, mask = render(2001, 100)
    assert len(big) > 5000
    s.append(JOB, big, 2001, 100, mask)
    newest = max(s.log_path(JOB).glob("*.jsonl"))
    assert newest.read_bytes() == big
    assert seqs(s.read(JOB, tail=100).records) == list(range(2001, 2101))
    s.close()


def test_after_paging_covers_every_seq_once(tmp_path: Path) -> None:
    s = JobLogStore(tmp_path, max_segment_bytes=20_000, max_segments=1000)
    fill(s, JOB, 3000, batch=33, level=lambda seq: "ERROR" if seq % 10 == 0 else "DEBUG")
    assert s.stats(JOB).segments > 10
    assert page_all(s, JOB, tail=37) == list(range(1, 3001))
    assert page_all(s, JOB, tail=1)[:3] == [1, 2, 3]
    assert lines_all(s, JOB, limit=37) == list(range(1, 3001))
    assert lines_all(s, JOB, limit=1, after=2990) == list(range(2991, 3001))
    assert s.read_lines(JOB, after=3000).seqs == []
    assert page_all(s, JOB, tail=7, min_level="ERROR") == list(range(10, 3001, 10))
    last = s.read(JOB, after=3000)
    assert last.records == [] and last.last_seq == 3000 and not last.more
    # A cursor below what rotation kept starts at the oldest record left.
    assert seqs(s.read(JOB, after=1500, tail=2).records) == [1501, 1502]
    s.close()


def test_since(store: JobLogStore) -> None:
    fill(store, JOB, 1000, batch=50, ts=lambda seq: BASE + seq)  # one record a second
    page = store.read(JOB, since="2027-01-15T08:08:20Z", tail=3)
    assert seqs(page.records) == [500, 501, 502] and page.more
    assert page.records[0]["timestamp"] == "2027-01-15T08:08:20.000000Z"
    assert seqs(store.read(JOB, since="2027-01-15T09:08:20+01:00", tail=1).records) == [500]
    assert seqs(store.read(JOB, since="2027-01-15T08:08:20.5", tail=1).records) == [501]
    assert seqs(store.read(JOB, since="2027-01-15T08:08:20Z", after=700, tail=1).records) == [701]
    assert seqs(store.read(JOB, since="2027-01-15T07:00:00Z", tail=1).records) == [1]
    assert store.read(JOB, since="2027-01-15T09:00:00Z").records == []
    with pytest.raises(ValueError, match=r"since must be an ISO 8601 time.*got 'yesterday'"):
        store.read(JOB, since="yesterday")


def test_match_with_level_and_tail(store: JobLogStore) -> None:
    def extra(seq: int) -> dict[str, Any]:
        return {"host": f"web{seq % 3}", "event": "failed" if seq % 2 else "ok", "rc": seq % 4}

    fill(store, JOB, 600, level=lambda seq: "ERROR" if seq % 5 == 0 else "INFO", extra=extra)
    page = store.read(JOB, tail=4, min_level="ERROR", match={"host": "web1", "event": "failed"})
    want = [s for s in range(1, 601) if s % 5 == 0 and s % 3 == 1 and s % 2 == 1][-4:]
    assert seqs(page.records) == want
    assert seqs(store.read(JOB, tail=2, match={"rc": "3"}).records) == [595, 599]
    assert store.read(JOB, match={"nokey": "x"}).records == []
    assert seqs(store.read(JOB, match={"nokey": "None"}, tail=1).records) == [600]
    after = store.read(JOB, after=0, tail=2, match={"host": "web0"})
    assert seqs(after.records) == [3, 6] and after.more


def test_torn_last_line_is_skipped_and_appends_continue(tmp_path: Path) -> None:
    s = JobLogStore(tmp_path)
    fill(s, JOB, 10)
    s.close()
    segment = tmp_path / JOB / "00000001.jsonl"
    with segment.open("ab") as f:
        f.write(b'{"seq":11,"timestamp":"2027-01-')  # crash mid-write
    with (tmp_path / JOB / "00000001.idx").open("ab") as f:
        f.write(b"\x01" * 13)  # and a torn index entry
    s = JobLogStore(tmp_path)
    assert seqs(s.read(JOB).records) == list(range(1, 11))
    assert s.read(JOB).latest_seq == 10
    fill(s, JOB, 10, start=11)
    assert seqs(s.read(JOB).records) == list(range(1, 21))
    assert page_all(s, JOB, tail=3) == list(range(1, 21))
    assert lines_all(s, JOB, limit=3) == list(range(1, 21))  # never the fragment
    lines = segment.read_bytes().split(b"\n")
    assert b'{"seq":11,"timestamp":"2027-01-' in lines  # the fragment is its own line
    assert (tmp_path / JOB / "00000001.idx").stat().st_size % 32 == 0
    s.close()


def test_unindexed_and_overrun_data_recovered(tmp_path: Path) -> None:
    s = JobLogStore(tmp_path)
    fill(s, JOB, 10)
    s.close()
    segment = tmp_path / JOB / "00000001.jsonl"
    extra, _ = render(11, 5)  # crash after the data write, before the index write
    with segment.open("ab") as f:
        f.write(extra)
    s = JobLogStore(tmp_path)
    fill(s, JOB, 5, start=16)
    assert seqs(s.read(JOB, tail=100).records) == list(range(1, 21))
    assert page_all(s, JOB, tail=4) == list(range(1, 21))
    assert lines_all(s, JOB, limit=4) == list(range(1, 21))  # re-indexed lines are parsed
    s.close()
    # Data cut short under an index entry: read what exists, skip the rest, no exception.
    data = segment.read_bytes()
    os.truncate(segment, len(data) - 50)
    s = JobLogStore(tmp_path)
    assert seqs(s.read(JOB, tail=100).records) == list(range(1, 20))
    assert s.read(JOB).latest_seq == 19
    fill(s, JOB, 3, start=21)
    assert seqs(s.read(JOB, tail=100).records) == [*range(1, 20), 21, 22, 23]
    assert lines_all(s, JOB, limit=5) == [*range(1, 20), 21, 22, 23]  # a hole: counted, not read
    s.close()


def test_restart_recovers_state(tmp_path: Path) -> None:
    s = JobLogStore(tmp_path, max_segment_bytes=10_000, max_segments=100)
    fill(s, JOB, 500, batch=20)
    s.close()
    before = sorted(p.name for p in (tmp_path / JOB).iterdir())
    s = JobLogStore(tmp_path, max_segment_bytes=10_000, max_segments=100)
    assert s.read(JOB).latest_seq == 500
    assert seqs(s.recent(JOB, 3)) == [500, 499, 498]  # rebuilt from the files
    fill(s, JOB, 5, start=501)
    assert sorted(p.name for p in (tmp_path / JOB).iterdir()) == before  # same newest segment
    assert seqs(s.recent(JOB, 2)) == [505, 504]
    assert page_all(s, JOB, tail=64) == list(range(1, 506))
    s.close_job(JOB)
    assert seqs(s.recent(JOB, 1)) == [505]  # the ring outlives the job
    assert s.read(JOB).latest_seq == 505
    s.close()


def test_ring_buffer_bound_and_lru(tmp_path: Path) -> None:
    s = JobLogStore(tmp_path, ring_size=5, ring_jobs=2)
    jobs = [f"job{i}-0123456789ab" for i in range(3)]
    for job in jobs:
        fill(s, job, 20, batch=3)
    read0 = s.bytes_read
    assert seqs(s.recent(jobs[2], 100)) == [20, 19, 18, 17, 16]  # ring_size bounds it
    assert seqs(s.recent(jobs[1], 2)) == [20, 19]
    assert s.bytes_read == read0  # both served from memory
    assert seqs(s.recent(jobs[0], 100)) == [20, 19, 18, 17, 16]  # evicted: rebuilt from disk
    read1 = s.bytes_read
    assert read1 > read0
    assert seqs(s.recent(jobs[0], 1)) == [20]
    assert s.bytes_read == read1  # now cached again
    s.recent(jobs[2], 1)  # jobs[1] is now the least recently used ...
    read2 = s.bytes_read
    assert read2 > read1  # ... jobs[2] had been evicted by jobs[0]'s rebuild
    s.recent(jobs[1], 1)
    assert s.bytes_read > read2
    s.close()


@pytest.mark.parametrize(
    "bad",
    ["../x", "a/b", "Build-0123456789ab", "", "build-0123456789ab\n", "build-0123456789AB",
     "build-0123456789a", "/etc-0123456789ab", "9build-0123456789ab", "a" * 49 + "-0123456789ab"],
)  # fmt: skip
def test_invalid_job_ids(store: JobLogStore, bad: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.append(bad, b'{"seq":1}\n', 1, 1, 1),
        lambda: store.read(bad),
        lambda: store.recent(bad),
        lambda: store.stats(bad),
        lambda: store.exists(bad),
        lambda: store.log_path(bad),
        lambda: store.delete(bad),
        lambda: store.close_job(bad),
        lambda: store.count_dropped(bad, 1, "x"),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


def test_symlink_refused(tmp_path: Path) -> None:
    s = JobLogStore(tmp_path / "logs")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "logs" / JOB).symlink_to(target)
    payload, mask = render(1, 1)
    for call in (
        lambda: s.append(JOB, payload, 1, 1, mask),
        lambda: s.read(JOB),
        lambda: s.recent(JOB),
        lambda: s.exists(JOB),
        lambda: s.delete(JOB),
    ):
        with pytest.raises(ValueError):
            call()
    assert list(target.iterdir()) == []
    s.close()


def test_file_modes(tmp_path: Path) -> None:
    s = JobLogStore(tmp_path / "logs", max_segment_bytes=2000)
    fill(s, JOB, 100, batch=10)
    assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
    assert stat.S_IMODE(s.log_path(JOB).stat().st_mode) == 0o700
    files = list(s.log_path(JOB).iterdir())
    assert len(files) > 2
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    s.close()


def test_big_batch_is_split_into_index_entries(store: JobLogStore) -> None:
    payload, mask = render(1, 70_000, ts=lambda seq: BASE + seq)
    store.append(JOB, payload, 1, 70_000, mask)
    assert (store.log_path(JOB) / "00000001.idx").stat().st_size == 64
    page = store.read(JOB, after=65_534, tail=3)
    assert seqs(page.records) == [65_535, 65_536, 65_537]
    assert seqs(store.read(JOB, since="2027-01-15T08:00:00Z", after=69_998).records) == [
        69_999,
        70_000,
    ]
    assert len(store.recent(JOB, 1000)) == 100
    assert store.read_lines(JOB, after=69_998).seqs == [69_999, 70_000]


def test_delete_and_count_dropped(store: JobLogStore) -> None:
    fill(store, JOB, 50)
    store.count_dropped(JOB, 7, "pipe overflow")
    st = store.stats(JOB)
    assert (st.dropped, st.cut_reason) == (7, "pipe overflow")
    freed = store.delete(JOB)
    assert freed == st.bytes > 0
    assert not store.exists(JOB) and store.recent(JOB) == [] and store.read(JOB).latest_seq == 0
    assert store.stats(JOB).expired
    fill(store, JOB, 5)  # the id is written again: a fresh log
    assert seqs(store.read(JOB).records) == [1, 2, 3, 4, 5]


_DISK_FULL = """
import json, resource, signal, sys
from pathlib import Path
from jobtrail.logstore.search import search_query
from jobtrail.logstore.store import JobLogStore
from jobtrail.records import decode_record, encode_record

JOB = "build-0123456789ab"

def render(first):
    lines = [encode_record(seq, "2027-01-15T08:00:00.000000Z", "INFO", "app", "m" * 50, "t")
             for seq in range(first, first + 10)]
    return "".join(lines).encode()

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past the limit fails with EFBIG
s = JobLogStore(Path(sys.argv[1]))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
for first in range(1, 301, 10):
    s.append(JOB, render(first), first, 10, 2)
full = s.stats(JOB)
newest = s.recent(JOB, 1)[0]["seq"]
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
s.append(JOB, render(301), 301, 10, 2)
page = s.read(JOB, tail=10000)
data = (Path(sys.argv[1]) / JOB / "00000001.jsonl").read_bytes()
torn = [x for x in data.split(b"\\n") if x and decode_record(x) is None]
print(json.dumps({"dropped": full.dropped, "reason": full.cut_reason, "newest": newest,
                  "seqs": [r["seq"] for r in page.records], "torn": len(torn)}))
"""


def test_disk_full_drops_and_recovers(tmp_path: Path) -> None:
    src = str(Path(store_module.__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    kept = [s for s in out["seqs"] if s <= 300]
    assert out["dropped"] == 300 - len(kept) > 0
    assert out["reason"] == "write failed (File too large)"
    assert out["newest"] == 300  # the ring buffer still has the dropped records
    assert kept == list(range(1, len(kept) + 1))
    assert out["seqs"][-10:] == list(range(301, 311))  # writing works again
    assert out["torn"] == 0  # the failed partial write was cut back


def test_error_tail_cost_does_not_grow_with_log_size(tmp_path: Path) -> None:
    def error_every_1000(seq: int) -> str:
        return "ERROR" if seq % 1000 == 0 else "INFO"

    small = JobLogStore(tmp_path / "small")
    fill(small, JOB, 20_000, batch=256, level=error_every_1000)
    large = JobLogStore(tmp_path / "large", max_segment_bytes=3_000_000, max_segments=5)
    fill(large, JOB, 120_000, batch=256, level=error_every_1000)
    assert small.stats(JOB).segments == 1 and large.stats(JOB).segments == 5
    costs = []
    for s, last in ((small, 20_000), (large, 120_000)):
        before = s.bytes_read
        page = s.read(JOB, tail=10, min_level="ERROR")
        assert seqs(page.records) == list(range(last - 9000, last + 1, 1000))
        costs.append(s.bytes_read - before)
    assert costs[1] < costs[0] * 1.5
    assert costs[1] < large.stats(JOB).bytes / 20
    before = large.bytes_read
    large.read(JOB, tail=100)
    assert large.bytes_read - before < 64 * 1024
    small.close()
    large.close()


def test_reader_thread_while_writer_appends(tmp_path: Path) -> None:
    s = JobLogStore(tmp_path, max_segment_bytes=200_000, max_segments=4)
    done = threading.Event()
    problems: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            pages = [
                s.read(JOB, tail=300),
                s.read(JOB, tail=200, after=max(0, s.read(JOB, tail=1).latest_seq - 500)),
                s.read(JOB, tail=50, min_level="WARNING"),
            ]
            for i, page in enumerate(pages):
                got = seqs(page.records)
                if not all(isinstance(r["message"], str) for r in page.records):
                    problems.append("bad record")
                if i < 2 and got and got != list(range(got[0], got[0] + len(got))):
                    problems.append(f"gap or disorder in page {i}: {got[:5]}...")
                if got != sorted(set(got)) or any(seq % 97 for seq in got if i == 2):
                    problems.append(f"wrong order or level in page {i}")
            s.recent(JOB, 10)
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        fill(s, JOB, 50_000, batch=20, level=lambda seq: "WARNING" if seq % 97 == 0 else "INFO")
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert reads > 0, "the reader never overlapped the writer"
    page = s.read(JOB, tail=10000)
    assert page.latest_seq == 50_000
    assert page_all(s, JOB, tail=5000) == list(range(page.truncated_before, 50_001))
    s.close()


def test_watchers_hear_of_every_append_and_the_close(store: JobLogStore) -> None:
    heard: list[str] = []
    unwatch = store.watch(JOB, lambda: heard.append("a"))
    store.watch(JOB, lambda: heard.append("b"))
    store.watch("other-0123456789ab", lambda: heard.append("other"))
    fill(store, JOB, 30, batch=10)  # 3 appends
    store.close_job(JOB)
    assert heard == ["a", "b"] * 4
    unwatch()
    heard.clear()
    fill(store, JOB, 10, start=31)
    assert heard == ["b"]
    payload, mask = render(41, 5)
    store.append("other-0123456789ab", payload, 41, 5, mask)  # no ring kept (not from seq 1)
    assert heard == ["b", "other"]


def test_a_search_answers_up_to_its_latest_seq_while_the_job_writes(tmp_path: Path) -> None:
    """Every record matches here, so a search that began at seq N finds 1..N and says N: the
    web page's Next then searches ``after`` N and misses nothing written meanwhile (when
    ``latest_seq`` was read after the scan, records written during it fell in between)."""
    s = JobLogStore(tmp_path)
    fill(s, JOB, 2000)
    stop = threading.Event()

    def write() -> None:
        first = 2001
        while not stop.is_set() and first < 12_000:
            payload, mask = render(first, 20)
            s.append(JOB, payload, first, 20, mask)
            first += 20
            time.sleep(0.0005)  # a job logging, not a loop holding the GIL

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(8):
            page = s.search(JOB, search_query("m", context=0, max_matches=20_000))
            found = [int(m.record["seq"]) for m in page.matches]
            assert found == list(range(1, page.latest_seq + 1)), (found[-1], page.latest_seq)
            assert page.total_matches == page.latest_seq
    finally:
        stop.set()
        writer.join(30)
    s.close()
