"""Capture: how a record gets from job code to the API.

::

    worker process                                server process
    ──────────────                                ──────────────
    logger.info / print / child stdout
        │ root-logger BatchQueueHandler,
        │ fd 1/2 pipes read line by line
        ▼
    render JSONL line, stamp job id + seq
        │ batches (≤256 lines or every 20 ms)
        ▼
    one pipe per worker  ──────────────────────►  LogListener (one thread)
    (bounded: a full pipe blocks the sender)           │ only writer of log files
                                                       ▼
                                                JobLogStore: per-job JSONL segments,
                                                batch index, ring buffer of newest lines
                                                       │
                                                       ▼
                                                REST API: recent_logs, tail, level, after

Seq numbers are assigned in the worker under one lock, so they are gap-free and keep each
thread's order; the listener only appends bytes. Job end travels down the same pipe as the
job's records, so when the listener sees it, every record before it is written.
"""
