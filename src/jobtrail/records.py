"""The one line format every log record takes, from the worker that renders it to the API.

A record is one JSON object on one line (JSONL), keys in a fixed order::

    {"seq":7,"timestamp":"2026-11-25T12:00:00.123456Z","level":"INFO","logger":"app",
     "message":"...","thread":"MainThread", ...extra keys such as "exc_text", "host",
     "fields":{"attempt":3,"user":"ann"}}

``fields`` holds what job code passed with ``extra=`` (``render_fields``: JSON scalars as
they are, other values as their ``repr``, bounded), encoded compactly like every value.

The worker renders the whole line (so nothing unpicklable ever crosses a process boundary
and the listener only appends bytes); the store parses lines only when a reader asks.
Because JSON escapes every quote inside a string, the byte pattern ``"level":"ERROR"``
can only ever be the record's own level key: readers use that to filter without parsing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone, tzinfo
from typing import Any

from jobtrail.secrets import MASK, looks_secret

LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LEVEL_NUMBERS: dict[str, int] = {
    "DEBUG": 10,
    "INFO": 20,
    "WARNING": 30,
    "ERROR": 40,
    "CRITICAL": 50,
}
# One bit per standard level, so a batch can say which levels it holds in one small integer.
LEVEL_BITS: dict[str, int] = {name: 1 << i for i, name in enumerate(LEVELS)}

MAX_LINE_BYTES = 64 * 1024
CUT_MARKER = " …[cut: {} more bytes]"

# Bounds of a record's ``fields`` (the ``extra=`` attributes job code passes): a job logging
# a whole object per record must not turn each line into a megabyte.
MAX_FIELDS = 32
MAX_FIELD_BYTES = 1024  # one value's text (a key: MAX_FIELD_KEY_BYTES)
MAX_FIELD_KEY_BYTES = 128
MAX_FIELDS_BYTES = 8 * 1024  # all of them together
FIELDS_CUT_KEY = "…"
FIELDS_CUT = "{} more fields cut"
_INT_BOUND = 2**63  # larger ints become text: JSON readers lose them, and str() may refuse

_encode_str = json.encoder.encode_basestring
_encode_value = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def level_name(levelno: int) -> str:
    """Map any level number (custom levels included) onto the standard level at or below it."""
    if levelno >= 50:
        return "CRITICAL"
    if levelno >= 40:
        return "ERROR"
    if levelno >= 30:
        return "WARNING"
    if levelno >= 20:
        return "INFO"
    return "DEBUG"


def levels_at_or_above(name: str) -> int:
    """The bit mask of every standard level at or above ``name``."""
    mask = 0
    for level in LEVELS[LEVELS.index(name) :]:
        mask |= LEVEL_BITS[level]
    return mask


def _terminal_line(line: str) -> str:
    """What a terminal would show for a line with carriage returns: the last overwrite."""
    parts = [p for p in line.split("\r") if p]
    return parts[-1] if parts else ""


def clean_text(text: str) -> str:
    """Make job output safe to serve: no ANSI codes, no stray CR, no control characters.

    Control characters other than newline and tab are shown escaped (``\\x07``) rather than
    dropped, so the text says something was there. Newlines stay: a multi-line message is one
    record. A message longer than MAX_LINE_BYTES (UTF-8) is cut with a visible marker.
    """
    if _CONTROL.search(text) is not None:
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        if "\r" in text:
            text = "\n".join(
                _terminal_line(line) for line in text.replace("\r\n", "\n").split("\n")
            )
        text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if len(text) > MAX_LINE_BYTES // 4:
        raw = text.encode("utf-8", "replace")
        if len(raw) > MAX_LINE_BYTES:
            kept = raw[:MAX_LINE_BYTES].decode("utf-8", "ignore")
            text = kept + CUT_MARKER.format(len(raw) - len(kept.encode("utf-8")))
    return text


def _cut(text: str, limit: int) -> str:
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    kept = raw[:limit].decode("utf-8", "ignore")
    return kept + CUT_MARKER.format(len(raw) - len(kept.encode("utf-8")))


def field_value(value: Any, redact: Callable[[str], str] | None = None) -> Any:
    """A field's value as stored: a JSON scalar as it is, anything else as its ``repr``;
    text is cleaned, then ``redact``-ed (before the cut, so no half secret survives it), then
    cut to MAX_FIELD_BYTES. So any object a job passes can be kept, unpicklable ones too."""
    kind = type(value)
    if value is None or kind is bool:
        return value
    if kind is int:
        return value if -_INT_BOUND < value < _INT_BOUND else f"<int of {value.bit_length()} bits>"
    if kind is float:
        return value if value == value and abs(value) != float("inf") else repr(value)
    if kind is not str:
        try:
            value = repr(value)
        except Exception as exc:  # any user __repr__
            value = f"<{kind.__name__} object: repr failed: {exc!r}>"
    value = clean_text(value)
    if redact is not None:
        value = redact(value)
    return _cut(value, MAX_FIELD_BYTES) if len(value) > MAX_FIELD_BYTES // 4 else value


def field_text(value: Any) -> str:
    """The text a ``field=KEY:VALUE`` filter compares with: a string as it is, any other
    scalar as its JSON (``3``, ``true``, ``null``), so ``attempt:3`` matches 3 and "3"."""
    return value if isinstance(value, str) else _encode_value(value)


def _field_name(key: Any) -> tuple[str, bool]:
    """(the key as stored, whether its value is secret by name); memoised, since a job logs
    the same few keys over and over."""
    known = _FIELD_NAMES.get(key)
    if known is None:
        name = key if type(key) is str else str(key)
        if len(name) > MAX_FIELD_KEY_BYTES // 4:
            name = _cut(name, MAX_FIELD_KEY_BYTES)
        name = clean_text(name)
        known = (name, looks_secret(name))
        if len(_FIELD_NAMES) >= _FIELD_NAMES_KEPT:
            _FIELD_NAMES.clear()
        if type(key) is str:
            _FIELD_NAMES[key] = known
    return known


_FIELD_NAMES: dict[Any, tuple[str, bool]] = {}
_FIELD_NAMES_KEPT = 4096


def render_fields(
    items: Iterable[tuple[Any, Any]], redact: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """A record's ``fields``: at most MAX_FIELDS, about MAX_FIELDS_BYTES in all, then one
    marker key ``"…": "N more fields cut"``. ``redact`` masks secrets in every text value; a
    value under a secret-looking key is masked whole (``extra={"password": "hunter2"}``)."""
    fields: dict[str, Any] = {}
    size = cut = 0
    for key, raw in items:
        name, secret = _field_name(key)
        if secret and raw is not None and not (type(raw) is str and not raw):  # as params
            value: Any = MASK  # the key says it is a secret, whatever its value looks like
        else:
            value = field_value(raw, redact)
        # the encoded size, without encoding: text as long as it is (it is escaped already,
        # but for quotes), any other scalar at most 24 characters
        grown = size + len(name) + (len(value) if type(value) is str else 24) + 6
        if len(fields) >= MAX_FIELDS or grown > MAX_FIELDS_BYTES:
            cut += 1
            continue
        fields[name] = value
        size = grown
    if cut:
        fields[FIELDS_CUT_KEY] = FIELDS_CUT.format(cut)
    return fields


class TimestampFormatter:
    """ISO 8601 UTC timestamps; the per-second prefix is cached because records come in bursts."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1_000_000):06d}Z"


def encode_record(
    seq: int,
    timestamp: str,
    level: str,
    logger: str,
    message: str,
    thread: str,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Render one record as a JSONL line (with its newline). Strings must already be cleaned."""
    line = (
        f'{{"seq":{seq},"timestamp":"{timestamp}","level":"{level}",'
        f'"logger":{_encode_str(logger)},"message":{_encode_str(message)},'
        f'"thread":{_encode_str(thread)}'
    )
    if extra:
        for key, value in extra.items():
            if isinstance(value, str):
                line += f",{_encode_str(key)}:{_encode_str(value)}"
            else:  # compact, as field filters' byte checks expect (``"k":3``)
                line += f",{_encode_str(key)}:{_encode_value(value)}"
    return line + "}\n"


def decode_record(line: bytes | str) -> dict[str, Any] | None:
    """Parse one stored line; None for a torn or corrupt line (e.g. the last one after a crash)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        return None
    return record


def display_time(timestamp: str, tz: tzinfo | None = timezone.utc) -> str:
    """A record's or job's ISO 8601 UTC time as a person reads it, always with its zone:
    ``2026-11-25 12:00:01Z`` in UTC, else converted with its offset
    (``2026-11-25 13:00:01+01:00``); ``tz=None`` is the system's local time, as for
    ``datetime.astimezone``, so each instant gets its own daylight-saving offset."""
    if tz is timezone.utc and timestamp.endswith("Z"):
        return timestamp[:19].replace("T", " ") + "Z"  # the stored form: no parsing
    try:
        when = datetime.fromisoformat(timestamp[:19]).replace(tzinfo=timezone.utc)
    except ValueError:
        return timestamp
    if tz is timezone.utc:
        return f"{when:%Y-%m-%d %H:%M:%S}Z"
    return when.astimezone(tz).isoformat(" ", "seconds")


def text_line(record: Mapping[str, Any], tz: tzinfo | None = timezone.utc) -> str:
    """``[YYYY-mm-dd HH:MM:SSZ] LEVEL: message``; continuation lines are indented.

    The time says its zone: UTC (``Z``) unless ``tz`` asks for another (see
    ``display_time``). The indent means a message holding a newline followed by a fake
    ``[time] LEVEL:`` prefix can never pass for a record of its own in the text format.
    """
    ts = display_time(str(record.get("timestamp", "")), tz)
    message = str(record.get("message", ""))
    exc = record.get("exc_text")
    if exc:
        message = f"{message}\n{exc}"
    return f"[{ts}] {record.get('level', 'INFO')}: {message.replace(chr(10), chr(10) + '    ')}"
