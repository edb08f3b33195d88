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
copy of the log files. ``backend`` holds the key names and the connection helper,
``redis_db`` the job state, ``dispatch`` the RQ side of the server, ``ingest`` the stream
reader, ``server`` the ``JobServer`` of this mode, ``horse`` what runs in RQ's work-horse,
``worker`` the ``jobtrail worker`` process and ``command`` its options (importable without
rq or redis, for the CLI).
"""
