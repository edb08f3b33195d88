"""The context budget: no tool answer is over 16 KB of text nor 16 KB of structured content,
whatever it is asked, and every answer says what it left out and how to get it.

A model reads the text; a program reads the structured content. Both are built here, so no
tool can forget the limit: a tool adds lines to a ``Reply`` until it is full, says where the
rest is (``leave_out``), and ``Reply.result`` cuts the structured content to fit as well.
Long lines are cut with a marker, and runs of records of one message shape are one line
with their count (a multiplication sign and ``1,200``), so a flood of one message cannot
crowd out the one that matters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mcp_types import CallToolResult, TextContent

from jobtrail.client import LogRecord

TEXT_LIMIT = 16 * 1024  # bytes of UTF-8 text in one answer
STRUCTURED_LIMIT = 16 * 1024  # bytes of the structured content, as compact JSON
LINE_LIMIT = 400  # characters of one line of text; the rest is cut with a marker
MESSAGE_LIMIT = 1000  # characters of one message in the structured content
FOOTER_ROOM = 1536  # kept free for what was left out and how to get it
TIMES = "\u00d7"  # the multiplication sign before a count
RUN_MIN = 3  # records of one shape in a row that are shown as one line with a count

_SHAPE = re.compile(r"0x[0-9a-fA-F]+|[0-9a-fA-F]{8,}|\d+(?:\.\d+)?")


def size(text: str) -> int:
    return len(text.encode())


def cut(text: str, limit: int = LINE_LIMIT) -> str:
    """One line: newlines shown as ``⏎``, and past ``limit`` characters a cut marker."""
    flat = text.replace("\r", "").replace("\n", " ⏎ ")
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]}…[cut {len(flat) - limit:,} chars]"


def shape(message: str) -> str:
    """A message with its numbers and ids as ``#``: the lines a loop logs share one shape."""
    return _SHAPE.sub("#", message.split("\n", 1)[0])[:200]


def record_line(record: LogRecord) -> str:
    raw = record.raw
    where = " ".join(f"{key}={raw[key]}" for key in ("host", "task") if raw.get(key))
    prefix = f"#{record.seq} {record.timestamp:%H:%M:%S} {record.level}"
    return cut(f"{prefix} [{where}] {record.message}" if where else f"{prefix} {record.message}")


def record_data(record: LogRecord) -> dict[str, Any]:
    """A record for programs: its keys as the server sent them, its message cut to fit."""
    data = {key: value for key, value in record.raw.items() if key != "message"}
    data["message"] = cut(record.message, MESSAGE_LIMIT)
    return data


@dataclass(frozen=True)
class Run:
    """Records in a row whose messages have one shape (a run of one is a single record)."""

    records: tuple[LogRecord, ...]

    @property
    def first(self) -> LogRecord:
        return self.records[0]

    def lines(self) -> list[str]:
        if len(self.records) < RUN_MIN:
            return [record_line(r) for r in self.records]
        last = self.records[-1]
        return [
            record_line(self.first),
            f"  {TIMES}{len(self.records) - 1:,} more of this shape, "
            f"#{self.records[1].seq}-#{last.seq} (last: {cut(last.message, 120)})",
        ]


def runs(records: Iterable[LogRecord]) -> Iterator[Run]:
    group: list[LogRecord] = []
    for record in records:
        if group and (record.level, shape(record.message)) != (
            group[0].level,
            shape(group[0].message),
        ):
            yield Run(tuple(group))
            group = []
        group.append(record)
    if group:
        yield Run(tuple(group))


@dataclass
class Reply:
    """One tool answer under construction: text for the model, data for programs."""

    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    full: bool = False
    _used: int = 0

    def add(self, line: str) -> bool:
        """Add a line if it fits (keeping room for the footer); False once the reply is full."""
        line = cut(line, LINE_LIMIT * 2) if len(line) > LINE_LIMIT * 2 else line
        cost = size(line) + 1
        if self.full or self._used + cost > TEXT_LIMIT - FOOTER_ROOM:
            self.full = True
            return False
        self.lines.append(line)
        self._used += cost
        return True

    def add_all(self, lines: Sequence[str]) -> bool:
        """All of ``lines`` or none of them (a run and its count stay together)."""
        cost = sum(size(line) + 1 for line in lines)
        if self.full or self._used + cost > TEXT_LIMIT - FOOTER_ROOM:
            self.full = True
            return False
        for line in lines:
            self.add(line)
        return True

    def leave_out(self, what: str) -> None:
        """Say what this answer does not hold and which call gets it."""
        self.left_out.append(what)

    def text(self) -> str:
        body = "\n".join(self.lines)
        if self.left_out:
            body += "\n\nLeft out: " + " ".join(self.left_out)
        if size(body) > TEXT_LIMIT:  # a footer past its room: the limit still holds
            body = body.encode()[: TEXT_LIMIT - 40].decode(errors="ignore") + "\n…[answer cut]"
        return body

    def result(self) -> CallToolResult:
        data = dict(self.data)
        if self.left_out:
            data["left_out"] = [cut(item, 300) for item in self.left_out]
        return CallToolResult(
            content=[TextContent(type="text", text=self.text())],
            structured_content=fit(data),
        )


def _json_size(data: Any) -> int:
    return size(json.dumps(data, separators=(",", ":"), default=str))


def fit(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` within STRUCTURED_LIMIT: its longest lists lose items from the end (their
    number is recorded under ``omitted``) until it fits."""
    data = dict(data)
    omitted: dict[str, int] = {}
    while _json_size(data) > STRUCTURED_LIMIT:
        lists = [(len(value), key) for key, value in data.items() if isinstance(value, list)]
        lists = [(n, key) for n, key in lists if n > 0]
        if not lists:  # no list left to shorten: keep the keys that are small
            small = {k: v for k, v in data.items() if _json_size(v) < 1024}
            small["omitted"] = {**omitted, "fields": "too large for the structured content"}
            return small
        n, key = max(lists)
        keep = n // 2
        omitted[key] = omitted.get(key, 0) + n - keep
        data[key] = data[key][:keep]
        data["omitted"] = dict(omitted)
    return data
