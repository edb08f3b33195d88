"""Stored lines as they are served: checked and cut on their bytes, never re-encoded.

A stored line is already the JSON of its record (``records.encode_record``), so an answer
that holds records can splice the lines between its own bytes. What a reader must know
first is that a line is whole, valid JSON with the record's own keys: ``msgspec`` checks
that about ten times faster than ``json.loads`` builds the dict, and builds nothing it is
not asked for. A line ``json.loads`` takes but strict JSON refuses (a ``NaN``) is served
re-encoded, so every answer stays valid JSON.

``recent_logs`` (the job's JSON) shows only a record's head, its first five keys, which the
worker always writes first: the head is the line cut before ``,"thread":``, checked to be
exactly those keys in that order.
"""

from __future__ import annotations

from typing import Any

import msgspec

from jobtrail.records import decode_record

Record = dict[str, Any]


class Head(msgspec.Struct):
    """The keys every record has, in the order they are stored (and shown)."""

    seq: int
    timestamp: str
    level: str
    logger: str
    message: str


class _ExactHead(Head, forbid_unknown_fields=True):
    pass


_head = msgspec.json.Decoder(Head)
_exact_head = msgspec.json.Decoder(_ExactHead)
_record = msgspec.json.Decoder(dict[str, Any])
encode = msgspec.json.Encoder().encode
_THREAD = b',"thread":'
_KEYS = (b',"timestamp":', b',"level":', b',"logger":', b',"message":')  # after "seq"


def decode(line: bytes) -> tuple[bytes, Record] | None:
    """(the line to serve, its record) for a stored line; None for a torn or corrupt one
    (as ``records.decode_record`` says)."""
    try:
        record = _record.decode(line)
    except msgspec.DecodeError:
        found = decode_record(line)  # json.loads takes NaN and Infinity, strict JSON not
        return None if found is None else (encode(found), found)
    if not isinstance(record.get("seq"), int):
        return None
    return line, record


def head(line: bytes) -> bytes | None:
    """The JSON of the record's head (seq, timestamp, level, logger, message); None if the
    line is not a whole record with them."""
    try:
        found = _head.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    end = head_end(line)
    if end is not None:
        return line[:end] + b"}"
    return encode(found)  # stored in another shape: the head encoded in its order


def head_end(line: bytes) -> int | None:
    """Where the head ends in a whole record's line, the worker's shape (``line[:end] + b"}"``
    is the head's JSON, and ``line[end:]`` the other keys from ``,"thread":`` on); None for
    a line stored in another shape."""
    cut = line.find(_THREAD)
    if cut > 0 and _in_order(line[:cut] + b"}"):
        return cut
    return None


def _in_order(shown: bytes) -> bool:
    """``shown`` is the five keys' object, in their order. Each key's bytes (``,"level":``)
    can only be that key: inside a string every quote is escaped, and no value nests."""
    try:
        _exact_head.decode(shown)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    pos = 0
    for key in _KEYS:
        pos = shown.find(key, pos)
        if pos < 0:
            return False
    return shown.startswith(b'{"seq":')


def array(items: list[bytes]) -> bytes:
    """A JSON array of JSON values given as bytes."""
    return b"[" + b",".join(items) + b"]"
