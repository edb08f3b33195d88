"""Distributed mode: API servers and workers on many hosts, meeting in one Redis.

::

    jobtrail serve --backend redis://…        jobtrail worker --backend redis://… (any host)
      submit ─► job hash + sorted sets           RQ worker ─► fork: work-horse per job
            └─► RQ queue "jobtrail" ──────────►    horse: capture (RecordBatcher) ─► XADD
      ingest thread ◄── XREAD jobtrail:log:<id> ◄──────────── one entry per batch / event
        └─► JobLogStore (own copy of the files) + job state in Redis (idempotent)
      reaper thread: a running job whose worker heartbeat expired ─► end "failed"

Job state (status, progress, result, listing) lives in Redis, so every API server shows
the same jobs; each API server reads every job's stream and is the only writer of its own
copy of the log files. ``keys`` holds the key names and the connection helper, ``records``
the job state (and the end-of-job barrier), ``dispatch`` the RQ side of the server,
``reaper`` what fails the jobs of vanished hosts, ``ingest`` the stream reader, ``horse``
what runs in RQ's work-horse, ``worker`` the ``jobtrail worker`` process and ``command``
its options. ``open_backend`` imports redis and rq only when called, so ``command`` stays
importable without them (the CLI imports it; local mode needs neither).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobtrail.logstore import JobLogStore
    from jobtrail.service.config import ServerConfig
    from jobtrail.service.home import Home
    from jobtrail.service.ports import Backend, BackendEvents


def open_backend(
    config: ServerConfig, home: Home, store: JobLogStore, events: BackendEvents
) -> Backend:
    """The service's parts in Redis mode: two connections, since the ingest blocks in XREAD,
    and the event loop's own for the hot reads (``loopreads``)."""
    from jobtrail.backends.redis import keys as b
    from jobtrail.backends.redis.dispatch import RedisDispatcher
    from jobtrail.backends.redis.ingest import StreamIngest
    from jobtrail.backends.redis.loopreads import LoopReads
    from jobtrail.backends.redis.records import RedisJobDB, RedisJobRecords
    from jobtrail.service.ports import Backend

    conn = b.connect(config.backend)
    db = RedisJobDB(conn)
    ingest = StreamIngest(b.connect(config.backend), db, store, events)
    options = {
        "redact_patterns": list(config.redact_patterns),
        "redact": config.redact_defaults,
        "level": config.capture_level,
        "nice": config.worker_nice,
        "cpu": config.worker_cpu,  # each `jobtrail worker` makes the idle group on its host
    }
    loop_reads = LoopReads(config.backend)
    dispatcher = RedisDispatcher(conn, db, options, ingest, loop_reads)
    return Backend(RedisJobRecords(db, conn, ingest, loop_reads), dispatcher, ingest)
