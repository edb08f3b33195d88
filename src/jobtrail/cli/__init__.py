"""The `jobtrail` command: run the server, and talk to it from a terminal.

::

    main ─► parser.build_parser ─► the verb's cmd_* ─┬─ serve.py   serve, demo (the server here)
                                                     ├─ jobs.py    submit, jobs, show, cancel,
                                                     │             rerun
                                                     ├─ logs.py    logs (-f)       } over
                                                     ├─ grep.py    logs --grep     } jobtrail
                                                     ├─ report.py  summary, hosts, } .client
                                                     │             tasks
                                                     ├─ cleanup.py cleanup (a home, no server)
                                                     └─ worker.py  worker (distributed mode)
    output.py: how jobs and records read on a terminal; exits.py: exit codes, CLIError

``main`` turns every failure into one line on stderr and an exit code, never a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

from jobtrail.cli.exits import USAGE, CLIError
from jobtrail.cli.parser import build_parser
from jobtrail.client import ClientError, RequestFailed

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # inside the try: output into a closed pipe fails here
        return code
    except CLIError as exc:
        if getattr(args, "log_format", None) == "json":  # serve: stderr holds JSON lines only
            logging.getLogger("jobtrail.cli").error("%s", exc)
        else:
            print(f"jobtrail: {exc}", file=sys.stderr)
        return exc.code
    except RequestFailed as exc:  # the server's own message says what to fix
        print(f"jobtrail: {exc.status_code}: {exc}", file=sys.stderr)
        return USAGE
    except ClientError as exc:
        print(f"jobtrail: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print("jobtrail: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`jobtrail jobs | head -1`): stop quietly, as `git log | head`
        # does. Python's "Note on SIGPIPE": point stdout at devnull, so the flush at exit
        # cannot fail again, and exit as a process ended by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
