"""Job code inside a package, failing two calls down."""

from __future__ import annotations


def load(url: str) -> list[str]:
    return _query(url)


def _query(url: str) -> list[str]:
    raise LookupError(f"no inventory table at {url}")  # the frame test_failure expects
