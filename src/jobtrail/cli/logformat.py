"""How ``serve`` and ``worker`` write their own log lines on stderr: text for a person, or
one JSON object per line for a log shipper (journald's JSON, Loki's promtail, a container runtime).

uvicorn's own lines go the same way: with ``--log-format json`` it gets no logging config of
its own (``log_config=None``), so its loggers propagate to the root handler set up here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from jobtrail.cli.output import stderr_logging

LOG_FORMATS = ("text", "json")


class JsonLineFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, plus ``exc`` (the traceback text) when the
    record has one. JSON escapes newlines, so a traceback stays on its record's line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


def _utc(created: float) -> str:
    """2026-12-01T11:03:02.123Z: ISO 8601 in UTC, to the millisecond."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def add_log_format_argument(parser: argparse.ArgumentParser, whose: str) -> None:
    """--log-format, for ``worker`` as for ``serve``."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help=f"{whose} own log lines on stderr: text, or json (one object a line: time, "
        "level, logger, message) for a log shipper",
    )


def logs_json() -> bool:
    """Whether stderr holds JSON lines only (``server_logging("json")``): a line meant for a
    person is then logged instead of printed."""
    return any(isinstance(h.formatter, JsonLineFormatter) for h in logging.getLogger().handlers)


def server_logging(log_format: str) -> None:
    """Set up the root logger for ``serve`` and ``worker``; ``json`` also routes ``warnings``
    through it, so no line on stderr is anything but JSON. A ``worker``'s RQ processes are
    forked, so they log the same way (RQ adds no handler of its own when the root has one)."""
    if log_format != "json":
        stderr_logging()
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)
