"""How a verb ends: the one-line error and the exit codes the README promises.

0 the job completed (or the verb did what it was asked), 1 the job failed, 2 a usage or
request error, 3 the job was cancelled, or ``serve`` could not start (home or port taken,
uvicorn's code too); 130 on Ctrl-C, 141 when stdout's reader went away.
"""

from __future__ import annotations

from jobtrail.client import Job

USAGE = 2
START_FAILURE = 3


class CLIError(Exception):
    """A message for the person at the terminal; printed without a traceback."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


def exit_code(job: Job) -> int:
    """What ``--wait``, ``--follow`` and ``logs -f`` exit with once the job ended."""
    return {"completed": 0, "cancelled": 3}.get(job.status.value, 1)
