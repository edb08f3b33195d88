"""The root logger's handler in a job's process: every logger, any thread, rendered here.

Records are rendered in the job's process (message merged with its args, traceback text),
so nothing unpicklable ever crosses a process boundary and the server only appends bytes.
Attributes job code passes with ``extra=`` become the record's ``fields`` (see
``records.render_fields``); a record without any costs one ``len`` more. jobtrail's own
structured keys (Ansible's ``host``, ``task``, ...) travel on ``record.jobtrail_fields`` and
stay top-level keys. A forked child that logs through
the inherited handler has no batcher thread: it writes a tagged line to fd 2
(``CHILD_RECORD_PREFIX``) that ``StreamCapture`` turns back into a structured record, so
the one seq counter stays in the job's process.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import os
import sys
import traceback
from collections.abc import Iterable
from typing import Any

from jobtrail.records import clean_text, level_name, render_fields
from jobtrail.worker.batcher import RecordBatcher

CHILD_RECORD_PREFIX = "\x1ejobtrail-record\x1f"

_PLAIN = logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
# A record made without ``extra=`` has exactly the attributes ``LogRecord.__init__`` sets on
# this Python: more of them is the one cheap sign that it may carry fields.
_PLAIN_SIZE = len(_PLAIN)
# Attributes that are never fields: the standard ones, those logging's Formatter adds,
# jobtrail's own, and the meta keys of structlog's ``ProcessorFormatter.wrap_for_formatter``.
NOT_FIELDS = frozenset(_PLAIN) | {"message", "asctime", "jobtrail_fields", "_logger", "_name"}
_STRUCTLOG_META = frozenset({"event", "exc_info", "_record", "_from_structlog"})


def render_message(record: logging.LogRecord) -> str:
    """The record's message with args merged; a broken format string never breaks the job."""
    try:
        message = record.getMessage()
    except Exception as exc:  # any user __str__ or format error
        message = f"{record.msg!r} % {record.args!r} (message could not be formatted: {exc!r})"
    if record.exc_info:
        message = f"{message}\n{''.join(traceback.format_exception(*record.exc_info)).rstrip()}"
    elif record.exc_text:
        message = f"{message}\n{record.exc_text}"
    if record.stack_info:
        message = f"{message}\n{record.stack_info}"
    return clean_text(message)


class BatchQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler whose 'queue' is the batcher: prepare renders, enqueue batches.

    ``extra=`` attributes are rendered here into ``fields`` (JSON scalars, else their
    ``repr``), so unpicklable extras cannot break logging; ``record.jobtrail_fields`` (a
    dict of JSON scalars) become top-level keys.
    """

    def __init__(self, batcher: RecordBatcher) -> None:
        super().__init__(batcher)  # type: ignore[arg-type]
        self.batcher = batcher
        self._pid = os.getpid()

    def handle(self, record: logging.LogRecord) -> Any:
        """Without the handler lock of ``Handler.handle``: the batcher serialises what must
        be serial, and holding a lock while rendering would make the job's threads take
        turns formatting their messages."""
        result = self.filter(record)
        if isinstance(result, logging.LogRecord):  # Python 3.12+: a filter may replace it
            record = result
        if result:
            try:
                self.enqueue(record)
            except Exception:  # logging must never break the job
                self.handleError(record)
        return result

    def prepare(self, record: logging.LogRecord) -> Any:
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        message = render_message(record)
        level, name, created = record.levelno, record.name, record.created
        thread = record.threadName or "-"
        pid = record.process if record.process is not None else os.getpid()
        # Looked at last: on CPython 3.11+ asking for ``__dict__`` turns the record's inline
        # attribute values into a dict, which makes every later attribute read slower.
        attrs = record.__dict__
        extra: dict[str, Any] | None = None
        if len(attrs) > _PLAIN_SIZE:  # rare: extras, a formatter ran, a record factory
            ours = attrs.get("jobtrail_fields")
            extra = ours if isinstance(ours, dict) else None
            message, fields = self._with_fields(record, message)
            if fields:
                extra = {**extra, "fields": fields} if extra else {"fields": fields}
        if pid != self._pid:
            self._emit_from_child(record, message, extra)
            return
        self.batcher.add(level_name(level), name, message, thread, created, extra)

    def _with_fields(
        self, record: logging.LogRecord, message: str
    ) -> tuple[str, dict[str, Any] | None]:
        """(message, fields) of a record with more than the standard attributes.

        structlog through ``ProcessorFormatter.wrap_for_formatter`` logs its event dict as
        the message: its ``event`` is then the message and its other keys are fields, as the
        ``extra`` of ``render_to_log_kwargs`` are."""
        attrs = record.__dict__
        items: Iterable[tuple[Any, Any]] = [(k, v) for k, v in attrs.items() if k not in NOT_FIELDS]
        event = record.msg
        if "_logger" in attrs and isinstance(event, dict):
            shown = copy.copy(record)  # other handlers still get the record as it came
            shown.msg, shown.args = str(event.get("event", "")), ()
            if event.get("exc_info") and not record.exc_info:
                shown.exc_info = _exc_info(event["exc_info"])
            message = render_message(shown)
            items = [*((k, v) for k, v in event.items() if k not in _STRUCTLOG_META), *items]
        if not items:
            return message, None
        return message, render_fields(items, self.batcher.redact)

    def _emit_from_child(self, record: logging.LogRecord, message: str, fields: Any) -> None:
        """In a forked child the batcher's thread is gone: tag the record onto fd 2."""
        data = [
            level_name(record.levelno),
            record.name,
            message,
            record.threadName or "-",
            record.created,
        ]
        if isinstance(fields, dict):
            data.append(fields)
        line = CHILD_RECORD_PREFIX + json.dumps(data, default=str) + "\n"
        try:
            os.write(2, line.encode("utf-8", "replace"))
        except OSError:
            pass


def _exc_info(value: Any) -> Any:
    """structlog's ``exc_info`` (True, an exception, or a ``sys.exc_info()`` tuple) as
    logging's: the handler runs inside the logging call, so ``sys.exc_info()`` still holds."""
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple) and len(value) == 3:
        return value
    info = sys.exc_info()
    return info if info[0] is not None else None


def install(
    batcher: RecordBatcher,
    level: int = logging.DEBUG,
    *,
    clear_inherited: bool = False,
) -> BatchQueueHandler:
    """Install capture on the root logger of this worker process, once.

    ``clear_inherited`` removes handlers a forked child inherited from the server (uvicorn's
    stream handlers, say): in a worker they would only write the same record twice.
    """
    root = logging.getLogger()
    if clear_inherited:
        for logger in [root, *logging.root.manager.loggerDict.values()]:
            if isinstance(logger, logging.Logger):
                for handler in list(logger.handlers):
                    logger.removeHandler(handler)
    # Records carry no file, line, process or task name: skip collecting them, as the
    # logging HOWTO's "Optimization" section suggests (the caller lookup walks the stack on
    # every call). Threads stay: a record says which thread emitted it.
    logging._srcfile = None
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):
        logging.logAsyncioTasks = False
    handler = BatchQueueHandler(batcher)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler
