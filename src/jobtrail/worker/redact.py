"""Masks secrets a job logs by accident, in the worker, before a record is rendered.

Two nets (``jobtrail.secrets`` decides what is secret): the values of the running job's own
secret-looking params (exact matches, the surest catch), and well-known shapes
(``password=…``, ``Authorization: Bearer …``, credentials in URLs). Extra patterns come from
``--redact REGEX``: the whole match of a pattern without groups is masked, or each of its
groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from jobtrail.secrets import SHAPES, Masker, mask_groups, may_hold_secret


class Redactor:
    def __init__(self, extra_patterns: Iterable[str] = (), *, defaults: bool = True) -> None:
        self._defaults = [re.compile(p) for p in SHAPES] if defaults else []
        self._extra = [re.compile(p) for p in extra_patterns]
        self._values = Masker()

    def set_secrets(self, values: Iterable[str]) -> None:
        """The running job's secret param values; called at each job start."""
        self._values = Masker(values)

    def __call__(self, text: str) -> str:
        text = self._values(text)
        for pattern in self._extra:
            text = pattern.sub(mask_groups, text)
        if self._defaults and may_hold_secret(text):  # rare: most lines skip this
            for pattern in self._defaults:
                text = pattern.sub(mask_groups, text)
        return text
