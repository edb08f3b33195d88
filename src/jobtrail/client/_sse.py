"""Server-Sent Events, read line by line as the HTML standard says
(https://html.spec.whatwg.org/#event-stream-interpretation).

The parser does no I/O: the sync and async clients (and tests) feed it the lines they read,
so one parser serves both. It keeps the last ``id:`` seen, which is what a reconnect sends
back as ``Last-Event-ID``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SSEvent:
    """One dispatched event: its name (``message`` when none was sent), data and last id."""

    event: str = "message"
    data: str = ""
    id: str | None = None


class SSEParser:
    """``feed`` each line without its line ending; a blank line completes an event."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SSEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SSEvent(self._event or "message", "\n".join(self._data), self.last_id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):  # a comment, such as the server's keep-alive ``: ping``
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None
