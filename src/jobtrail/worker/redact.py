"""Masks secrets a job logs by accident, in the worker, before a record is rendered.

Two nets: the values of the running job's own secret-looking params (exact matches, the
surest catch), and well-known shapes (``password=…``, ``Authorization: Bearer …``,
credentials in URLs). Extra patterns come from ``--redact REGEX``: the whole match of a
pattern without groups is masked, or each of its groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "********"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words and numbers

DEFAULT_PATTERNS: tuple[str, ...] = (
    # key=value and key: value for secret-looking keys; the value is group 1
    r"(?i)(?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|client[_-]?secret|credentials?)[\"']?\s*[=:]\s*[\"']?([^\s\"',;&]+)",
    # Authorization headers
    r"(?i)authorization\s*:\s*(?:bearer|basic|token)\s+([A-Za-z0-9._~+/=-]+)",
    r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)",
    # user:password@host in URLs
    r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:([^/\s@]+)@",
)
_TRIGGERS = re.compile(r"(?i)pass|secret|token|key|credential|auth|bearer|://")
_TRIGGER_WORDS = ("pass", "secret", "token", "key", "credential", "auth", "bearer", "://")


def _may_hold_secret(text: str) -> bool:
    """The cheap gate in front of the patterns; on the hot path of every record.

    For ASCII text ``str.lower`` folds exactly as ``(?i)`` does, and plain substring tests
    cost a third of the case-insensitive regex (measured: 4-5 µs → ~1 µs per message).
    """
    if text.isascii():
        low = text.lower()
        for word in _TRIGGER_WORDS:  # noqa: SIM110 - a plain loop: any() over a generator costs more
            if word in low:
                return True
        return False
    return _TRIGGERS.search(text) is not None  # Unicode case folding differs from lower()


class Redactor:
    def __init__(self, extra_patterns: Iterable[str] = (), *, defaults: bool = True) -> None:
        self._defaults = [re.compile(p) for p in DEFAULT_PATTERNS] if defaults else []
        self._extra = [re.compile(p) for p in extra_patterns]
        self._values: re.Pattern[str] | None = None

    def set_secrets(self, values: Iterable[str]) -> None:
        """The running job's secret param values; called at each job start."""
        kept = sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._values = re.compile("|".join(re.escape(v) for v in kept)) if kept else None

    def __call__(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(MASK, text)
        for pattern in self._extra:
            text = pattern.sub(_mask_groups, text)
        if self._defaults and _may_hold_secret(text):  # rare: most lines skip this
            for pattern in self._defaults:
                text = pattern.sub(_mask_groups, text)
        return text


def _mask_groups(match: re.Match[str]) -> str:
    if not match.re.groups:
        return MASK
    whole = match.group(0)
    start = match.start(0)
    out, last = [], 0
    for i in range(1, match.re.groups + 1):
        if match.start(i) < 0:
            continue
        out.append(whole[last : match.start(i) - start])
        out.append(MASK)
        last = match.end(i) - start
    out.append(whole[last:])
    return "".join(out)
