"""Stream windows: the bytes a stream reader took from its pipe but has not yet turned into lines.

A reader thread of the job's process (``streams.py``) reads fd 1's or fd 2's pipe straight
into its window, a region of the spool (``spool.py``). How far it has turned bytes into
lines is a stream offset that each spooled line of the stream carries in its entry's
header (its tag, written in the same store as the rest of the header: a line is never
spooled without it, nor counted without being spooled); the window records the spool's
head when a chunk's lines began (``since``: the survivor reads tags from there) and the
offset once they all went (``consumed``). If the process dies, the survivor rebuilds the
tail: the window's bytes past the furthest offset (a partial line, the rest of the chunk
being split), then whatever is still in the pipe, whose read end it kept
(``streams.stream_tail``)::

    region: slot 0 | slot 1 | consumed u64 | since u64 | ... | area 0 | area 1
    slot:   count u64, base u64, filled u32, area u32, reading u32, check u32

``base`` is the stream offset of the current area's first byte and ``filled`` how many of
its bytes hold data. Slots are written in turn with a check word (integer mixing, not a
CRC: three slot writes a read are on the stdout path), so one of them is whole even if the
process died writing the other; the tags, not ``consumed``, make a line count exactly once.
The kernel copies a read into the shared area itself: no byte taken from the pipe is only
in this process's memory. Until the read's length is recorded the slot says ``reading``,
and since the area past ``filled`` is kept zeroed, the survivor takes the unrecorded read
as the non-zero bytes there (a read ending in NUL bytes loses those, in that window only).
When too little room is left for a read, the partial line moves to the other (zeroed)
area, the slot switches to it, and the old one is zeroed.
"""

from __future__ import annotations

import os
import struct

from jobtrail.records import MAX_LINE_BYTES

READ_SIZE = 64 * 1024  # one read from the pipe, at most
AREA = READ_SIZE + MAX_LINE_BYTES  # a partial line (at most MAX_LINE_BYTES) and one read
_CHECKED = struct.Struct("<QQIIII")
_RECORDED = struct.Struct("<QQ")  # consumed, since
_RECORDED_AT = 64
_AREAS_AT = 4096
SIZE = _AREAS_AT + 2 * AREA  # one stream's region in the spool
_ZEROS = memoryview(bytes(AREA))  # sliced without copying


def _check(count: int, base: int, filled: int, area: int, reading: int) -> int:
    """A slot's check word: integer mixing, not a CRC (three slots are written per read,
    on the stdout path); a slot torn between two writes matches it only by chance."""
    mixed = (count * 0x9E3779B1) ^ (base * 0x85EBCA77) ^ (filled << 3) ^ (area << 1) ^ reading
    return (mixed ^ (mixed >> 32)) & 0xFFFFFFFF


class StreamWindow:
    """The writing side, used by one reader thread only; ``view`` is its region (``SIZE``
    bytes, zeroed): the spool's, or private memory when there is no spool."""

    def __init__(self, view: memoryview) -> None:
        assert len(view) >= SIZE
        self._view = view
        self._areas = (view[_AREAS_AT : _AREAS_AT + AREA], view[_AREAS_AT + AREA : SIZE])
        self._count = 0
        self._area = 0
        self._base = 0
        self._filled = 0
        self.consumed = 0
        self._write_slot(0)

    def _write_slot(self, reading: int) -> None:
        self._count = count = self._count + 1
        base, filled, area = self._base, self._filled, self._area
        _CHECKED.pack_into(
            self._view,
            (count & 1) * _CHECKED.size,
            count,
            base,
            filled,
            area,
            reading,
            _check(count, base, filled, area, reading),
        )

    def read_from(self, fd: int) -> int:
        """One read from ``fd`` into the window (0 at EOF)."""
        area = self._areas[self._area]
        self._write_slot(1)
        n = os.readv(fd, [area[self._filled : self._filled + READ_SIZE]])
        self._filled += n
        self._write_slot(0)
        return n

    def unconsumed(self) -> bytes:
        """The bytes not yet turned into lines: the last partial line and the new read."""
        return bytes(self._areas[self._area][self.consumed - self._base : self._filled])

    def lines_from(self, since: int) -> None:
        """The chunk's lines go to the batcher now; the spool's head is at ``since``."""
        _RECORDED.pack_into(self._view, _RECORDED_AT, self.consumed, since)

    def consumed_to(self, consumed: int, since: int) -> None:
        """Every line up to ``consumed`` went (its tags say so too); head at ``since``."""
        self.consumed = consumed
        _RECORDED.pack_into(self._view, _RECORDED_AT, consumed, since)

    def settle(self) -> None:
        """After a read's lines were handled: keep the area past ``filled`` zeroed and room
        for a whole read."""
        area, filled = self._areas[self._area], self._filled
        left = self._base + filled - self.consumed
        if left == 0:  # the usual case: the read ended with a newline
            area[:filled] = _ZEROS[:filled]  # before the slot: nothing is unconsumed either way
            self._base, self._filled = self.consumed, 0
            self._write_slot(0)
        elif AREA - filled < READ_SIZE:
            start = self.consumed - self._base
            self._area ^= 1
            self._areas[self._area][:left] = area[start:filled]
            self._base, self._filled = self.consumed, left
            self._write_slot(0)
            area[:filled] = _ZEROS[:filled]


def recorded(region: bytes | memoryview) -> tuple[int, int]:
    """(consumed, since) as the reader last recorded them."""
    consumed, since = _RECORDED.unpack_from(region, _RECORDED_AT)
    return consumed, since


def unconsumed(region: bytes | memoryview, consumed: int) -> bytes:
    """The survivor's side: what a dead reader took from its pipe and never turned into
    lines (past stream offset ``consumed``), from a copy of its region."""
    slots = []
    for i in range(2):
        *fields, check = _CHECKED.unpack_from(region, i * _CHECKED.size)
        if fields[0] and check == _check(*fields):
            slots.append(fields)
    if not slots:
        return b""
    _, base, filled, index, reading = max(slots)
    area = bytes(region[_AREAS_AT + index * AREA : _AREAS_AT + (index + 1) * AREA])
    start = min(max(consumed - base, 0), filled)
    tail = area[start:filled]
    if reading:  # it died in a read, or before recording its length: the non-zero bytes
        tail += area[filled : filled + READ_SIZE].rstrip(b"\0")
    return tail
