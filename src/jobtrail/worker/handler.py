"""The root logger's handler in a job's process: every logger, any thread, rendered here.

Records are rendered in the job's process (message merged with its args, traceback text),
so nothing unpicklable ever crosses a process boundary and the server only appends bytes.
Structured fields travel on ``record.jobtrail_fields``. A forked child that logs through
the inherited handler has no batcher thread: it writes a tagged line to fd 2
(``CHILD_RECORD_PREFIX``) that ``StreamCapture`` turns back into a structured record, so
the one seq counter stays in the job's process.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import traceback
from typing import Any

from jobtrail.records import clean_text, level_name
from jobtrail.worker.batcher import RecordBatcher

CHILD_RECORD_PREFIX = "\x1ejobtrail-record\x1f"


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

    Structured fields travel on ``record.jobtrail_fields`` (a dict of JSON scalars); any
    other ``extra`` attribute is ignored, so unpicklable extras cannot break logging.
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
        fields = getattr(record, "jobtrail_fields", None)
        pid = record.process if record.process is not None else os.getpid()
        if pid != self._pid:
            self._emit_from_child(record, message, fields)
            return
        self.batcher.add(
            level_name(record.levelno),
            record.name,
            message,
            record.threadName or "-",
            record.created,
            fields if isinstance(fields, dict) else None,
        )

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
