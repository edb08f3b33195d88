"""Worker-side capture pieces on their own: rendering, cleaning, batching, back-pressure."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from typing import Any

import pytest

from jobtrail.messages import Batch, End, JobMessage, Outcome, Progress
from jobtrail.models import JobStatus
from jobtrail.records import (
    LEVEL_BITS,
    MAX_LINE_BYTES,
    TimestampFormatter,
    clean_text,
    decode_record,
    encode_record,
    level_name,
    text_line,
)
from jobtrail.worker.batcher import RecordBatcher
from jobtrail.worker.handler import render_message

pytestmark = pytest.mark.timeout(60)


class Collector:
    """A `send` that keeps every message, optionally slowly (a listener that lags)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.messages: list[JobMessage] = []
        self.delay = delay

    def __call__(self, message: JobMessage) -> None:
        time.sleep(self.delay)
        self.messages.append(message)

    def records(self) -> list[dict[str, Any]]:
        out = []
        for message in self.messages:
            if isinstance(message, Batch):
                out += [json.loads(line) for line in message.payload.decode().splitlines()]
        return out

    def batches(self) -> list[Batch]:
        return [m for m in self.messages if isinstance(m, Batch)]

    def end(self) -> Outcome:
        last = self.messages[-1]
        assert isinstance(last, End), "the end message comes last"
        return last.outcome


def test_clean_text_strips_ansi_and_cr_and_escapes_controls() -> None:
    assert clean_text("\x1b[1;31mred\x1b[0m") == "red"
    assert clean_text("10%\r50%\r100%") == "100%"
    assert clean_text("line\r\n") == "line\n"
    assert clean_text("bell\x07") == "bell\\x07"
    assert clean_text("keeps\ttabs\nand newlines") == "keeps\ttabs\nand newlines"


def test_clean_text_cuts_long_lines_visibly() -> None:
    cut = clean_text("é" * MAX_LINE_BYTES)
    assert len(cut.encode()) <= MAX_LINE_BYTES + 40
    assert cut.endswith(f"…[cut: {MAX_LINE_BYTES} more bytes]")


def test_encode_decode_round_trip_and_text_line() -> None:
    ts = TimestampFormatter()(1764072000.5)
    assert ts == "2025-11-25T12:00:00.500000Z"
    line = encode_record(7, ts, "ERROR", 'log"ger', 'say "hi"\nnext', "T", {"rc": 2, "host": "h"})
    record = decode_record(line)
    assert record == {
        "seq": 7, "timestamp": ts, "level": "ERROR", "logger": 'log"ger',
        "message": 'say "hi"\nnext', "thread": "T", "rc": 2, "host": "h",
    }  # fmt: skip
    assert text_line(record) == '[2025-11-25 12:00:00Z] ERROR: say "hi"\n    next'
    assert decode_record(b'{"seq":1,"timest') is None
    assert decode_record(b"[1]") is None


def test_level_names_map_custom_levels_down() -> None:
    assert [level_name(n) for n in (5, 10, 25, 35, 45, 60)] == [
        "DEBUG", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL",
    ]  # fmt: skip


def test_render_message_survives_bad_formats_and_keeps_tracebacks() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "n=%d", ("oops",), None)
    assert "message could not be formatted" in render_message(record)
    try:
        raise KeyError("k")
    except KeyError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = render_message(record)
    assert text.startswith("failed\nTraceback") and "KeyError: 'k'" in text


def test_batcher_numbers_records_per_job_and_keeps_thread_order() -> None:
    sent = Collector()
    batcher = RecordBatcher(sent, interval=0.005)
    try:
        batcher.begin_job("job-000000000001")

        def emit(t: int) -> None:
            for n in range(2000):
                batcher.add("INFO", "t", f"{t} {n}", f"T{t}")

        threads = [threading.Thread(target=emit, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batcher.finish_job(Outcome(JobStatus.COMPLETED))
    finally:
        batcher.close()
    records = sent.records()
    assert [r["seq"] for r in records] == list(range(1, 8001))
    for t in range(4):
        assert [int(r["message"].split()[1]) for r in records if r["thread"] == f"T{t}"] == list(
            range(2000)
        )
    batches = sent.batches()
    assert all(b.line_count <= 256 for b in batches), "a batch never exceeds 256 lines"
    assert all(
        nxt.first_seq == cur.first_seq + cur.line_count for cur, nxt in itertools.pairwise(batches)
    ), "contiguous"
    end = sent.end()
    assert end.last_seq == 8000 and end.dropped == 0


def test_batch_mask_says_which_levels_it_holds() -> None:
    sent = Collector()
    batcher = RecordBatcher(sent, interval=10)
    try:
        batcher.begin_job("job-000000000001")
        batcher.add("INFO", "x", "a", "T")
        batcher.add("ERROR", "x", "b", "T")
        batcher.flush()
    finally:
        batcher.close()
    (batch,) = sent.batches()
    assert batch.level_mask == LEVEL_BITS["INFO"] | LEVEL_BITS["ERROR"]


def test_records_outside_a_job_are_not_sent() -> None:
    sent = Collector()
    batcher = RecordBatcher(sent, interval=0.005)
    try:
        batcher.add("INFO", "x", "between jobs", "T")
        batcher.flush()
    finally:
        batcher.close()
    assert sent.batches() == []


def test_a_lagging_listener_blocks_then_drops_and_says_so() -> None:
    sent = Collector(delay=0.3)  # a listener far behind
    batcher = RecordBatcher(sent, max_batch=10, interval=0.01, max_pending=20, block_seconds=0.05)
    try:
        batcher.begin_job("job-000000000001")
        for n in range(200):
            batcher.add("INFO", "x", f"r{n}", "T")
        batcher.finish_job(Outcome(JobStatus.COMPLETED))
    finally:
        batcher.close()
    records = sent.records()
    end = sent.end()
    assert end.dropped is not None and end.dropped > 0, "the sender's buffer is bounded"
    notes = [r for r in records if r["logger"] == "jobtrail" and "dropped" in r["message"]]
    assert notes and notes[0]["level"] == "WARNING"
    kept = [r for r in records if r["logger"] == "x"]
    assert len(kept) + end.dropped == 200, "every record is either written or counted"
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))


def test_progress_is_coalesced() -> None:
    sent = Collector()
    batcher = RecordBatcher(sent, interval=0.05)
    try:
        batcher.begin_job("job-000000000001")
        for pct in range(100):
            batcher.set_progress(pct, f"step {pct}")
        batcher.flush()
    finally:
        batcher.close()
    progress = [m for m in sent.messages if isinstance(m, Progress)]
    assert 1 <= len(progress) < 10
    assert (progress[-1].pct, progress[-1].step) == (99, "step 99")
