"""What runs inside a job's process: capture, and the runtime that runs the job.

A record's way from job code to the API::

    job's process (this package)                  server process
    ────────────────────────────                  ──────────────
    logger.info / print / child stdout
        │ handler.py: root-logger BatchQueueHandler (every logger, any thread)
        │ streams.py: fd 1/2 pipes read line by line (print, C code, children)
        ▼
    batcher.py: redact (redact.py), render the JSONL line, stamp job id + seq
        │ Batch messages (≤256 lines or every 20 ms; messages.py)
        ▼
    local: one pipe per worker ───────────────►  backends/local/listener.py (LogListener)
    redis: XADD to the job's stream ──────────►  backends/redis/ingest.py (StreamIngest)
                                                       │ the only writer of log files
                                                       ▼
                                                logstore: per-job JSONL segments,
                                                batch index, ring buffer of newest lines
                                                       │
                                                       ▼
                                                service → REST API: recent_logs, tail, …

``runtime.py`` sets a process up for this once, for both kinds of job process (a pool
worker, an RQ work-horse), and turns how the job ended into an ``End`` message.

Seq numbers are assigned in the job's process under one lock, so they are gap-free and keep
each thread's order; the server only appends bytes. The job's end travels down the same
channel as its records, so when the server reads it, every record before it is written.
This package never imports the service, the backends, the API or the log store.
"""
