"""Message shapes: a message with its variable parts (numbers, hex, uuids, ids, quoted
strings) replaced by placeholders, so ``retry 3 of job 5f0c2a9e41b7`` and ``retry 4 of job
a1b2c3d4e5f6`` count as one ``retry <n> of job <hex>``.

The keeper shapes every record of every job in the server process, next to the listener,
so the common case must cost no Python work per record. ``ShapeCache.kinds`` keys each
stored line by its bytes with every digit deleted (one ``bytes.translate`` over a whole run
of lines, in C) and looks the keys up in a dict (``map``, in C): lines that differ only in
their digits — the same ``log.info("retry %d of %s", ...)`` call — share the shape (and
level) of the first one seen, and only a line with a new key is parsed and run through the
placeholder rules (``kind_of``). That costs about 1 µs a record when messages vary only in
their numbers, and several when every line has new letters (a uuid or a quoted string per
line). The message is taken as stored, JSON-escaped, up to its first line and
``SHAPE_CHARS`` characters; ``shape_text`` decodes it for people.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SHAPE_CHARS = 200  # of a message's first line; longer messages share a shape by their start
CACHE_KEYS = 8192  # digit-less lines remembered (all jobs); cleared when full
_DIGITS = b"0123456789"

# The record's own level and message (records.encode_record's fixed key order), the message
# as stored (escaped) up to its first escaped newline.
_MESSAGE = re.compile(
    rb'^\{"seq":\d+,"timestamp":"[^"]*","level":"([A-Z]+)","logger":"[^"\\\n]*(?:\\.[^"\\\n]*)*",'
    rb'"message":"([^"\\\n]*(?:\\[^n\n][^"\\\n]*)*)'
)

Kind = tuple[bytes, str]  # (shape, level) of a stored line

# Applied in this order: quoted strings first (their insides vary most), numbers last.
_RULES: tuple[tuple[re.Pattern[bytes], bytes], ...] = (
    (re.compile(rb'\\"[^"\n]*?\\"'), rb"\"<str>\""),  # "..." (escaped in the stored line)
    (re.compile(rb"'(?<!\w')[^'\n]*'(?!\w)"), b"'<str>'"),  # '...', but not don't
    (
        re.compile(
            rb"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        b"<uuid>",
    ),
    # 0x..., and ids: runs of 6+ hex digits mixing digits and letters (shas, job id suffixes)
    (re.compile(rb"\b0[xX][0-9a-fA-F]+\b"), b"<hex>"),
    (
        re.compile(rb"\b(?=[0-9a-fA-F]{6,}\b)(?=[a-fA-F]*[0-9])(?=[0-9]*[a-fA-F])[0-9a-fA-F]+\b"),
        b"<hex>",
    ),
    (re.compile(rb"\d+(?:\.\d+)*"), b"<n>"),  # numbers, decimals, dotted versions and IPs
)


def kind_of(line: bytes) -> Kind:
    """The shape of one stored line's message (JSON-escaped, as stored), and its level."""
    found = _MESSAGE.match(line)
    if found is None:  # not a line jobtrail wrote: no shape, and counted as INFO
        return b"", "INFO"
    shape = found.group(2)[:SHAPE_CHARS]
    for pattern, placeholder in _RULES:
        shape = pattern.sub(placeholder, shape)
    return shape, found.group(1).decode()


class ShapeCache:
    """Kinds of stored lines, computed once per digit-less line (see the module's text)."""

    def __init__(self) -> None:
        self._known: dict[bytes, Kind] = {}

    def kinds(self, blob: bytes) -> list[Kind]:
        """The (shape, level) of each line of ``blob`` (stored lines joined by newlines)."""
        keys = blob.translate(None, _DIGITS).split(b"\n")
        found: list[Kind | None] = list(map(self._known.get, keys))
        if None in found:
            if len(self._known) > CACHE_KEYS:
                self._known.clear()
            lines = blob.split(b"\n")
            for i, kind in enumerate(found):
                if kind is None:
                    kind = self._known.get(keys[i])
                    if kind is None:
                        kind = self._known[keys[i]] = kind_of(lines[i])
                    found[i] = kind
        return found  # type: ignore[return-value]  # no None is left


_PARTIAL_ESCAPE = re.compile(rb"\\(?:u[0-9a-fA-F]{0,3})?$")


def shape_text(shape: bytes) -> str:
    """A stored shape as text (it may end in half an escape where it was cut)."""
    try:
        text: str = json.loads(b'"' + _PARTIAL_ESCAPE.sub(b"", shape) + b'"')
    except ValueError:
        return shape.decode("utf-8", "replace")
    return text


@dataclass
class Shape:
    """One message shape of a job: how often, where first and last, and its first record."""

    count: int
    first_seq: int
    last_seq: int
    example: bytes  # the stored line of its first record (cut when long: see ShapeTable)


class ShapeTable:
    """A job's shapes with their counts, in bounded memory.

    At most ``2 * keep`` shapes are held; past that the table keeps the ``keep`` most
    frequent and forgets the rest (their occurrences are added to ``forgotten``). A shape
    that is ever among the ``keep`` most frequent at a prune is never forgotten, so the
    top of the table — what the summary shows — has exact counts; a forgotten shape that
    comes back counts again from there. Pruning sorts once per ``keep`` new shapes, so a
    log of ever-new messages costs O(log keep) per new shape.
    """

    def __init__(self, keep: int = 500) -> None:
        self.keep = keep
        self.shapes: dict[bytes, Shape] = {}
        self.forgotten = 0

    def add(self, shape: bytes, count: int, first_seq: int, last_seq: int, line: bytes) -> None:
        found = self.shapes.get(shape)
        if found is not None:
            found.count += count
            found.last_seq = max(found.last_seq, last_seq)
            if first_seq < found.first_seq:  # the same shape at another level, earlier
                found.first_seq, found.example = first_seq, line
            return
        self.shapes[shape] = Shape(count, first_seq, last_seq, line)
        if len(self.shapes) > 2 * self.keep:
            ranked = sorted(self.shapes.items(), key=lambda kv: (-kv[1].count, kv[1].first_seq))
            self.forgotten += sum(s.count for _, s in ranked[self.keep :])
            self.shapes = dict(ranked[: self.keep])

    def top(self, n: int, min_count: int = 2) -> list[tuple[bytes, Shape]]:
        """The ``n`` most frequent shapes seen at least ``min_count`` times, most first."""
        ranked = sorted(self.shapes.items(), key=lambda kv: (-kv[1].count, kv[1].first_seq))
        return [(k, s) for k, s in ranked[:n] if s.count >= min_count]
