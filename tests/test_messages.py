"""The messages a job's process sends keep what they carry across Redis's fields."""

from __future__ import annotations

from jobtrail.messages import Started, from_fields, to_fields


def test_started_carries_when_the_job_began_through_redis_fields() -> None:
    """``at`` is the job's own clock: a reader that is behind must not shorten a duration."""
    started = Started("j-0123456789ab", 41, "host", "w1", at=1_765_000_000.123456)
    fields = {k.encode(): str(v).encode() for k, v in to_fields(started).items()}
    assert from_fields("j-0123456789ab", fields) == started


def test_a_started_entry_from_an_older_worker_reads_without_a_time() -> None:
    fields = {b"k": b"s", b"pid": b"7", b"host": b"", b"w": b""}
    assert from_fields("j-0123456789ab", fields) == Started("j-0123456789ab", 7)
