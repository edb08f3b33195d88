"""How jobs and records read on a terminal (jobtrail.cli.output), without a server."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta, timezone
from typing import Any

import pytest

from jobtrail.cli.output import Display, seconds_text
from jobtrail.records import display_time, text_line


@pytest.fixture
def paris() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Paris"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_times_say_their_zone() -> None:
    stamp = "2026-11-25T12:00:01.250000Z"
    assert display_time(stamp) == "2026-11-25 12:00:01Z"
    assert display_time("2026-11-25T12:00:01.250000+00:00") == "2026-11-25 12:00:01Z"
    india = timezone(timedelta(hours=5, minutes=30))
    assert display_time(stamp, india) == "2026-11-25 17:30:01+05:30"
    record = {"timestamp": stamp, "level": "WARNING", "message": "disk\nfull"}
    assert text_line(record) == "[2026-11-25 12:00:01Z] WARNING: disk\n    full"
    assert text_line(record, india) == "[2026-11-25 17:30:01+05:30] WARNING: disk\n    full"


def test_local_time_gets_each_instants_own_offset(paris: None) -> None:
    assert display_time("2026-01-15T12:00:00Z", None) == "2026-01-15 13:00:00+01:00"
    assert display_time("2026-07-15T12:00:00Z", None) == "2026-07-15 14:00:00+02:00"


def test_durations_are_short() -> None:
    assert [seconds_text(s) for s in (0.04, 1.25, 59.9, 184, 3599, 7500)] == [
        "0.0s",
        "1.2s",
        "59.9s",
        "3m04s",
        "59m59s",
        "2h05m",
    ]


def job(**fields: Any) -> dict[str, Any]:
    base = {
        "job_id": "sleep-0123456789ab",
        "job_type": "sleep",
        "status": "completed",
        "progress": 100.0,
        "created_at": "2026-11-25T12:00:00Z",
        "started_at": "2026-11-25T12:00:01Z",
        "completed_at": "2026-11-25T12:03:05Z",
        "error": None,
    }
    return {**base, **fields}


def test_the_error_column_is_cut_to_the_terminal_or_to_60_characters() -> None:
    jobs = [
        job(),
        job(job_id="crash-0123456789ab", status="failed", error="E" * 200 + "\nsecond line"),
        job(job_id="sleep-aaaaaaaaaaaa", status="pending", started_at=None, completed_at=None),
    ]
    header, done, failed, pending = Display().jobs_table(jobs, now=0.0)
    assert done.split() == [
        "sleep-0123456789ab",
        "sleep",
        "completed",
        "100%",
        "2026-11-25",
        "12:00:00Z",
        "3m04s",
    ]
    assert failed[header.index("ERROR") :] == "E" * 59 + "…"
    assert pending.split()[-1] == "-", "no duration before it starts"
    wide = Display(width=120).jobs_table(jobs, now=0.0)
    assert len(wide[2]) == 120 and wide[2].endswith("E…")
    narrow = Display(width=40).jobs_table(jobs, now=0.0)
    assert narrow[2].endswith("E" * 19 + "…"), "never narrower than 20"


def test_colour_does_not_move_the_columns() -> None:
    jobs = [job(), job(job_id="crash-0123456789ab", status="failed", error="boom")]
    plain = Display().jobs_table(jobs, now=0.0)
    coloured = Display(colour=True).jobs_table(jobs, now=0.0)
    assert coloured[2] != plain[2]
    assert [line.replace("\x1b[31m", "").replace("\x1b[32m", "").replace("\x1b[0m", "")
            for line in coloured] == plain  # fmt: skip
