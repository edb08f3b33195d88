"""What a search looks for, compiled for the stored bytes and for the decoded text.

A stored line holds a record's message JSON-escaped (``records.encode_record``), and JSON
escapes each character on its own, so text that contains ``q`` is stored as bytes that
contain ``q`` escaped: ``Pattern.raw`` looks for those bytes (both spellings JSON has: UTF-8,
and ``\\uXXXX`` as ``json.dumps`` writes), a superset test that finds candidate lines without
decoding anything, and ``Pattern.test`` decides on the decoded text. A regex is tested raw
through the longest literal every match must contain (``required_literal``); one without
such a literal leaves ``raw`` None: every line is a candidate.

Patterns are RE2 (``google-re2``): matching is linear in the text, so no pattern can hang the
server (a backtracking engine takes exponential time on ``(x+x+)+y``); in exchange there are
no backreferences or lookaround, and a pattern that uses them is refused with RE2's message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import re2

from jobtrail.logstore.queries import Record

SEARCHED_KEYS = ("message", "exc_text")  # the text a terminal shows for a record
ENGINE = "RE2 syntax, linear-time: no backreferences or lookaround"

_escape_json = json.encoder.encode_basestring  # how encode_record stores a string (UTF-8)
_escape_ascii = json.encoder.encode_basestring_ascii  # how json.dumps stores one


class BadPattern(ValueError):
    """The regex does not compile; the message quotes RE2's error."""


def _options(ignore_case: bool) -> Any:
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False  # RE2 would write each refused pattern to the server's stderr
    return options


@dataclass(frozen=True)
class Pattern:
    """What to look for, compiled twice: ``raw`` finds candidate lines in the stored bytes
    (None: every line is one), ``test`` decides on a decoded text."""

    q: str
    regex: bool
    ignore_case: bool
    raw: Any  # a compiled RE2 over bytes, or None
    test: Callable[[str], bool]
    verbatim: Any = None  # a regex without a literal, over bytes: see ``refuses``

    def matches(self, record: Record) -> bool:
        return any(isinstance(v := record.get(k), str) and self.test(v) for k in SEARCHED_KEYS)

    def refuses(self, line: bytes) -> bool:
        """True when a candidate line cannot hold a match, known without decoding it.

        For a regex without a literal, ``raw`` takes every line holding a backslash (see
        ``anchored``); most hold one only for quotes (``\\"``). With those unescaped and no
        backslash left, every string of the line reads as it was logged, so the regex not
        matching the line means it matches none of them."""
        if self.verbatim is None:
            return False
        text = line.replace(b'\\"', b'"')
        return b"\\" not in text and self.verbatim.search(text) is None


def _raw_pattern(literal: str, ignore_case: bool) -> Any:
    """RE2 over stored bytes finding ``literal`` as JSON would escape it (both spellings)."""
    variants = dict.fromkeys([_escape_json(literal)[1:-1], _escape_ascii(literal)[1:-1]])
    alternatives = b"|".join(re2.escape(v.encode()) for v in variants)
    return re2.compile(alternatives, _options(ignore_case))


def compile_pattern(q: str, regex: bool = False, ignore_case: bool = False) -> Pattern:
    """The pattern of one search, or BadPattern (a regex RE2 refuses) / ValueError."""
    if not q:
        raise ValueError("q must not be empty")
    if not regex:
        if ignore_case:
            folded = re2.compile(re2.escape(q), _options(True))
            return Pattern(q, False, True, _raw_pattern(q, True), lambda s: bool(folded.search(s)))
        return Pattern(q, False, False, _raw_pattern(q, False), lambda s: q in s)
    try:
        compiled = re2.compile(q, _options(ignore_case))
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args else str(exc)
        raise BadPattern(f"regex {q!r} does not compile: {reason} ({ENGINE})") from None
    found = required_literal(q)
    raw = verbatim = None
    if found is not None:
        raw = _raw_pattern(found[0], ignore_case or found[1])
    elif not anchored(q):
        try:
            raw = re2.compile(b"(?:" + q.encode() + rb")|\\", _options(ignore_case))
            verbatim = re2.compile(q.encode(), _options(ignore_case))
        except re2.error:  # an unterminated \Q swallowed the wrapping: decode every line
            raw = verbatim = None
    return Pattern(q, True, ignore_case, raw, lambda s: bool(compiled.search(s)), verbatim)


def anchored(pattern: str) -> bool:
    """Whether the regex uses ``^``, ``$``, ``\\A`` or ``\\z`` (outside a class), which match
    at the edges of a message but not inside the stored line that holds it.

    Without them, a regex that matches a message matches the stored line too, if the message
    is stored verbatim, which it is unless it holds a character JSON escapes (so the line
    holds a backslash). ``(?:R)|\\\\`` over the raw bytes then finds every candidate line:
    ``\\b`` and ``\\B`` hold alike, as the quotes around a stored string are not word
    characters, just as the edges of a text are not.
    """
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            i = _skip_class(pattern, i)
        elif c == "\\":
            if pattern.startswith(("\\A", "\\z"), i):
                return True
            i = _skip_escape(pattern, i)[1]
        elif c in "^$":
            return True
        else:
            i += 1
    return False


# -- the literal every match of a regex contains ------------------------------------------
_REPEAT = re.compile(r"\{(\d+)(,\d*)?\}")
_FLAGS = re.compile(r"\(\?([a-zA-Z-]*)\)")


def _quantifier(pattern: str, i: int) -> tuple[int, int] | None:
    """(minimum count, index after it) of a quantifier at ``i`` (lazy ``?`` included)."""
    if i >= len(pattern):
        return None
    least, end = {"*": (0, i + 1), "+": (1, i + 1), "?": (0, i + 1)}.get(pattern[i], (-1, i))
    if least < 0:
        m = _REPEAT.match(pattern, i)
        if m is None:
            return None
        least, end = int(m.group(1)), m.end()
    return least, end + 1 if pattern.startswith("?", end) else end


def _skip_escape(pattern: str, i: int) -> tuple[str | None, int]:
    """(the literal character, or None for a class/assertion/code, index after) at ``\\``."""
    if i + 1 >= len(pattern):
        return None, i + 1
    c = pattern[i + 1]
    if not c.isascii() or not c.isalnum():
        return c, i + 2  # an escaped punctuation character stands for itself
    if c in "pPx" and pattern.startswith("{", i + 2):
        close = pattern.find("}", i + 2)
        return None, len(pattern) if close < 0 else close + 1
    if c == "Q":  # \Q...\E: literal text, but skipped rather than parsed
        close = pattern.find("\\E", i + 2)
        return None, len(pattern) if close < 0 else close + 2
    width = {"x": 4, "p": 3, "P": 3}.get(c, 2)
    while c.isdigit() and width < 4 and pattern[i + width : i + width + 1].isdigit():
        width += 1  # octal \123
    return None, i + width


def _skip_class(pattern: str, i: int) -> int:
    """Index after the character class that starts at ``i``."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        if pattern[j] == "\\":
            j = _skip_escape(pattern, j)[1]
        elif pattern.startswith("[:", j):
            close = pattern.find(":]", j + 2)
            j = len(pattern) if close < 0 else close + 2
        else:
            j += 1
    return j + 1


def _skip_group(pattern: str, i: int) -> int:
    """Index after the group that starts at ``i`` (nested groups, classes, escapes)."""
    depth, j = 0, i
    while j < len(pattern):
        c = pattern[j]
        if c == "\\":
            j = _skip_escape(pattern, j)[1]
            continue
        if c == "[":
            j = _skip_class(pattern, j)
            continue
        depth += {"(": 1, ")": -1}.get(c, 0)
        j += 1
        if depth == 0:
            break
    return j


def required_literal(pattern: str) -> tuple[str, bool] | None:
    """(the longest literal text every match of a valid RE2 ``pattern`` contains, whether an
    inline ``(?i)`` makes it case-insensitive), or None when there is none to be sure of.

    Only the top level is read: groups, classes, ``.``, anchors and escapes such as ``\\d``
    end a literal run, a character made optional by ``?``, ``*`` or ``{0,n}`` is dropped,
    and any top-level ``|`` means no literal is required.
    """
    runs: list[str] = []
    run: list[str] = []
    fold = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        literal: str | None = None
        if c == "|":
            return None
        if c == "(":
            flags = _FLAGS.match(pattern, i)
            if flags is not None and _quantifier(pattern, flags.end()) is not None:
                return None  # RE2 applies it to what came before the flags: too odd to read
            fold = fold or (flags is not None and "i" in flags.group(1))
            end = flags.end() if flags else _skip_group(pattern, i)
        elif c == "[":
            end = _skip_class(pattern, i)
        elif c == "\\":
            literal, end = _skip_escape(pattern, i)
        elif c in ".^$":
            end = i + 1
        elif (quantified := _quantifier(pattern, i)) is not None:
            end = quantified[1]  # a quantifier on a group or class just skipped
        else:
            literal, end = c, i + 1
        quantifier = _quantifier(pattern, end)
        if quantifier is not None:
            end = quantifier[1]
            if quantifier[0] == 0:
                literal = None
        if literal is None or quantifier is not None:
            if literal is not None:  # required once, then the run ends
                run.append(literal)
            runs.append("".join(run))
            run = []
        else:
            run.append(literal)
        i = end
    runs.append("".join(run))
    best = max(runs, key=len)
    return (best, fold) if best else None
