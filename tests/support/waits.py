"""Polling with a deadline instead of sleeping, and the small checks tests poll for."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import psutil


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def epoch(iso: str) -> float:
    """An API timestamp as seconds (Python 3.10's fromisoformat does not take a 'Z')."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
