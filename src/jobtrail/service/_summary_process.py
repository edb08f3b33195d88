"""The summary keeper's process: every job's digest folded from the store's files and saved
next to its log, told by the server which jobs have new lines (``service.summaries``).

::

    server ── stdin: "a JOB" new lines · "c JOB" the job ended · "d JOB" deleted · EOF: stop
           ──> SummaryKeeper.note ──> its thread folds and saves (logstore/summary.py)
    server <── stdout: "s JOB SEQ" saved up to SEQ (the server then loads it, not folds it)

It runs at NICE, between the server and its jobs, in the server's session: under autogroup it
then shares the server's CPU share, and keeps pace with the listener as the in-server thread
did. In a session of its own (a share apart) it fell behind under the parallel suite's load,
far enough for rotation to delete lines it had not read (``tests/test_summary.py``). The fold
does well over half a million lines a second a core; a request to the server never waits.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from jobtrail.logstore import JobLogStore, SummaryKeeper
from jobtrail.service import playbook
from jobtrail.service._helper_process import read_commands, report_stream

NICE = 5  # below the server's requests, above the jobs (nice 10 by default) it summarises
VERBS = {"a": "append", "c": "close", "d": "delete"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="jobtrail's summary keeper process")
    parser.add_argument("root", type=Path, help="the server's log directory")
    args = parser.parse_args(argv)
    # The server's stop is the pipe closing: a Ctrl-C or a SIGTERM to the process group
    # must not end the keeper before it saved the server's last lines.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.nice(NICE)
    except OSError:  # pragma: no cover - not allowed here: it still keeps the summaries
        pass
    reports = report_stream()
    lock = threading.Lock()  # saves come from the keeper's thread, and at the stop from here

    def on_save(job_id: str, seq: int) -> None:
        with lock:
            reports.write(f"s {job_id} {seq}\n")
            reports.flush()

    keeper = SummaryKeeper(JobLogStore(args.root))  # read only: the listener is the writer
    playbook.add_folds(keeper)
    keeper.on_save = on_save
    keeper.pace = 0.0  # no event loop here to leave the GIL to

    def command(line: str) -> None:
        verb, _, job_id = line.partition(" ")
        if verb in VERBS and job_id:
            keeper.note(job_id, VERBS[verb])

    keeper.start()
    read_commands(command)
    keeper.stop()  # folds and saves what is pending
    return 0


if __name__ == "__main__":
    sys.exit(main())
