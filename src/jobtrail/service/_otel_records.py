"""One stored line as an OpenTelemetry log record, and the resource that names the sender.

Runs in the exporter process (``_otel_exporter``): the decode and the attribute building are
most of the export's cost per record, which is why they are kept out of the server.
"""

from __future__ import annotations

import calendar
import json
import socket
import time
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk.resources import Resource

from jobtrail.records import decode_record

SERVICE_NAME = "jobtrail"  # unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one

SEVERITY = {
    "DEBUG": SeverityNumber.DEBUG,
    "INFO": SeverityNumber.INFO,
    "WARNING": SeverityNumber.WARN,
    "ERROR": SeverityNumber.ERROR,
    "CRITICAL": SeverityNumber.FATAL,
}
# A record's own keys; any other top-level key is one of the Ansible fields (host, task...)
_OWN_KEYS = frozenset(
    ("seq", "timestamp", "level", "logger", "message", "thread", "exc_text", "fields")
)


def resource() -> Resource:
    """service.name (jobtrail unless the environment names it), its version, the host."""
    try:
        from importlib.metadata import version

        attributes: dict[str, Any] = {"service.version": version("jobtrail")}
    except Exception:  # run from a source tree: no version to name
        attributes = {}
    attributes["host.name"] = socket.gethostname()
    found = Resource.create(attributes)
    if str(found.attributes.get("service.name", "")).startswith("unknown_service"):
        found = found.merge(Resource({"service.name": SERVICE_NAME}))
    return found


def _value(value: Any) -> Any:
    """An attribute value: JSON scalars as they are, objects and lists as their JSON text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return "null" if value is None else value
    return json.dumps(value, separators=(",", ":"), default=str)


class _Clock:
    """Nanoseconds since the epoch of a stored timestamp (``2026-11-25T12:00:00.123456Z``);
    the second's part is cached because records come in bursts."""

    def __init__(self) -> None:
        self._prefix = ""
        self._seconds = 0

    def __call__(self, stamp: str) -> int:
        prefix = stamp[:19]
        if prefix != self._prefix:
            self._seconds = calendar.timegm(time.strptime(prefix, "%Y-%m-%dT%H:%M:%S"))
            self._prefix = prefix
        micros = int(stamp[20:26]) if len(stamp) >= 26 else 0
        return (self._seconds * 1_000_000 + micros) * 1000


class RecordConverter:
    """Stored lines to OTel log records: the message as the body, the level as severity, and
    the rest as attributes (the job's own names win over a field's)."""

    def __init__(self) -> None:
        self._clock = _Clock()

    def __call__(self, job_id: str, job_type: str, line: bytes) -> LogRecord | None:
        found = decode_record(line)
        if found is None:
            return None
        attributes: dict[str, Any] = {}
        fields = found.get("fields")
        if isinstance(fields, dict):
            for key, value in fields.items():
                attributes[str(key)] = _value(value)
        for key, value in found.items():
            if key not in _OWN_KEYS:
                attributes[f"ansible.{key}"] = _value(value)
        if isinstance(found.get("exc_text"), str):
            attributes["exception.stacktrace"] = found["exc_text"]
        attributes["jobtrail.job_id"] = job_id
        attributes["jobtrail.job_type"] = job_type
        attributes["jobtrail.seq"] = found["seq"]
        attributes["code.namespace"] = str(found.get("logger", ""))
        attributes["thread.name"] = str(found.get("thread", ""))
        level = str(found.get("level", "INFO"))
        stamp = found.get("timestamp")
        return LogRecord(
            timestamp=self._clock(stamp) if isinstance(stamp, str) else None,
            observed_timestamp=time.time_ns(),
            severity_text=level,
            severity_number=SEVERITY.get(level, SeverityNumber.INFO),
            body=str(found.get("message", "")),
            attributes=attributes,
        )
