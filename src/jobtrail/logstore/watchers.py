"""Callbacks run after each append to a job's log, so live readers wait instead of polling."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Watchers:
    """Per-job callbacks. They run in the writer's thread and must return at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, list[Callable[[], None]]] = {}

    def watch(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Register ``callback``; returns the function that stops it."""
        with self._lock:
            self._callbacks.setdefault(job_id, []).append(callback)

        def unwatch() -> None:
            with self._lock:
                callbacks = self._callbacks.get(job_id, [])
                if callback in callbacks:
                    callbacks.remove(callback)
                if not callbacks:
                    self._callbacks.pop(job_id, None)

        return unwatch

    def notify(self, job_id: str) -> None:
        callbacks = self._callbacks.get(job_id)  # unlocked: one dict read, atomic
        if callbacks:
            for callback in tuple(callbacks):
                callback()
