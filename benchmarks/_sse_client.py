"""Cheap Server-Sent-Events followers for followers.py, run in their own process.

During the run a follower does next to nothing per byte: a raw asyncio ``BufferedProtocol``
on one loopback connection sends a hand-written HTTP/1.1 request, has the socket read
straight into one big buffer allocated (and its pages touched) before the job starts, and
per read only notes (time.time(), bytes so far). It stops at the chunked terminator or when
the server closes. Afterwards ``analyse`` de-chunks the response, splits it into events,
checks them and computes each record's lag: the time of the read that delivered the record
event's final byte minus the emit stamp in its message.

Why the preallocated buffer: keeping each read as a new ``bytes`` object made the kernel
fault in fresh pages for every read (100 followers at full speed: ~450k page faults, ~5 s of
system CPU on a 2-core VM, more than the server spent), which slowed the very stream the
lag measures.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import traceback
from array import array
from collections.abc import Sequence
from multiprocessing.queues import Queue
from typing import Any

END = b"\r\n0\r\n\r\n"  # the last chunk's CRLF, then the zero-size chunk and an empty trailer
STAMP = re.compile(rb'"message": ?"stamp ([0-9.]+) ([0-9]+)"')
CONNECT_TIMEOUT = 60.0
READ_MIN = 64 * 1024  # a read gets at least this much room; less left: the buffer grows


class Follower(asyncio.BufferedProtocol):
    """One stream connection: the socket reads into ``buf``; per read only the arrival time
    and the bytes received so far are noted; nothing is parsed."""

    def __init__(self, request: bytes, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.request = request
        self.buf = bytearray(size)  # zero-filled now: its pages are faulted in before the run
        self.size = 0  # bytes received
        self.grown = 0  # times ``buf`` had to grow during the run (should stay 0)
        self.times: list[float] = []
        self.ends: list[int] = []  # ``size`` after each read
        self.waiting = True  # for the status event, which the server sends on connect
        self.connected: asyncio.Future[float] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buf) - self.size < READ_MIN:
            self.buf.extend(bytes(len(self.buf)))
            self.grown += 1
        return memoryview(self.buf)[self.size :]

    def buffer_updated(self, nbytes: int) -> None:
        now = time.time()
        size = self.size = self.size + nbytes
        self.times.append(now)
        self.ends.append(size)
        if self.buf[size - 7 : size] == END and self.transport is not None:
            self.transport.close()
        if self.waiting and self.buf.find(b"event: status", 0, size) >= 0:
            self.waiting = False
            self.connected.set_result(now)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.error = repr(exc)
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed before connecting: {exc!r}"))
        if not self.finished.done():
            self.finished.set_result(None)


def request_bytes(host: str, port: int, path: str, token: str | None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Accept: text/event-stream",
        "Connection: close",  # so a close marks the end of any response, chunked or not
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def analyse(
    raw: bytes | bytearray,
    times: Sequence[float],
    ends: Sequence[int],
    records: int,
    t_ready: float,
) -> tuple[dict[str, Any], array[float]]:
    """Check one follower's received bytes; (summary, lags in seconds).

    ``raw``: the whole response as received; read i ended at ``times[i]`` with ``ends[i]``
    bytes of it received.

    A follower is ``in_order`` when its record ids are exactly 1..records (no gap event, no
    repeat, no skip, each record's message numbered as its id) and ``ended`` when an ``end``
    event came last and the chunked body was terminated. Lags: records stamped at or after
    ``t_ready`` (every follower connected)."""
    lags: array[float] = array("d")
    out: dict[str, Any] = {
        "status_code": None,
        "received": 0,
        "in_order": False,
        "ended": False,
        "end_status": None,
        "gaps": 0,
        "problems": [],
        "first_stamp": None,
        "last_stamp": None,
        "last_time": times[-1] if times else None,
        "bytes": len(raw),
        "reads": len(ends),
    }
    problems: list[str] = out["problems"]
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        problems.append("no complete response head")
        return out, lags
    status_line, *header_lines = raw[:head_end].decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    out["status_code"] = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if out["status_code"] != 200:
        problems.append(f"{status_line!r}: {raw[head_end + 4 : head_end + 300]!r}")
        return out, lags
    if headers.get("transfer-encoding", "").lower() != "chunked":
        problems.append(f"not chunked: {headers}")
        return out, lags

    # De-chunk, remembering where each chunk's data lies in the raw stream and in the body.
    seg_raw: list[int] = []
    seg_body: list[int] = []
    pieces: list[bytes] = []
    body_len = 0
    terminated = False
    pos = head_end + 4
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            problems.append("body cut short (no chunk size line)")
            break
        try:
            size = int(raw[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            problems.append(f"bad chunk size line {raw[pos:eol][:40]!r}")
            break
        start = eol + 2
        if size == 0:
            terminated = raw[start:] == b"\r\n"
            if not terminated:
                problems.append(f"bytes after the last chunk: {raw[start : start + 40]!r}")
            break
        if raw[start + size : start + size + 2] != b"\r\n":
            problems.append("body cut short (chunk incomplete)")
            break
        seg_raw.append(start)
        seg_body.append(body_len)
        pieces.append(raw[start : start + size])
        body_len += size
        pos = start + size + 2
    body = b"".join(pieces)
    del pieces

    # body_end[i]: how many body bytes had arrived by the end of read i
    body_end: list[int] = []
    seg = -1
    for raw_end in ends:
        while seg + 1 < len(seg_raw) and seg_raw[seg + 1] <= raw_end:
            seg += 1
        if seg < 0:
            body_end.append(0)
        else:
            seg_len = (seg_body[seg + 1] if seg + 1 < len(seg_body) else body_len) - seg_body[seg]
            body_end.append(seg_body[seg] + min(raw_end - seg_raw[seg], seg_len))

    events = body.split(b"\n\n")
    if events.pop():
        problems.append("the body ends inside an event")
    in_order = True
    ended = False
    last = 0
    received = 0
    first_stamp: float | None = None
    last_stamp = 0.0
    offset = 0  # body offset just past the current event
    read = 0  # index of the read that completed the current event
    for event in events:
        offset += len(event) + 2
        if ended:
            ended = False
            problems.append(f"an event after end: {event[:60]!r}")
        if event.startswith(b"event: record\n"):
            lines = event.split(b"\n")
            if len(lines) != 3 or lines[1][:4] != b"id: " or lines[2][:6] != b"data: ":
                in_order = False
                problems.append(f"malformed record event {event[:80]!r}")
                continue
            seq = int(lines[1][4:])
            if seq != last + 1:
                in_order = False
                if len(problems) < 5:
                    problems.append(f"record {seq} after {last}")
            last = seq
            received += 1
            match = STAMP.search(lines[2])
            if match is None or int(match[2]) != seq:
                in_order = False
                if len(problems) < 5:
                    problems.append(f"record {seq}'s data is not stamp #{seq}: {lines[2][:120]!r}")
                continue
            stamp = float(match[1])
            if first_stamp is None:
                first_stamp = stamp
            last_stamp = stamp
            if stamp >= t_ready:
                while body_end[read] < offset:
                    read += 1
                lags.append(times[read] - stamp)
        elif event.startswith(b"event: end\n"):
            ended = True
            data = event.split(b"\ndata: ", 1)
            if len(data) == 2:
                out["end_status"] = json.loads(data[1]).get("status")
        elif event.startswith(b"event: gap\n"):
            out["gaps"] += 1
            in_order = False
            problems.append(f"gap event {event[:120]!r}")
        elif not event.startswith((b"event: status\n", b"retry:", b":")):
            problems.append(f"unexpected event {event[:80]!r}")
    if last != records or received != records:
        in_order = False
        problems.append(f"{received} records, the last {last}; expected {records}")
    if not terminated:
        ended = False
    elif not ended:
        problems.append("no end event last")
    out.update(
        received=received,
        in_order=in_order,
        ended=ended,
        first_stamp=first_stamp,
        last_stamp=last_stamp if first_stamp is not None else None,
    )
    return out, lags


async def _follow_all(
    host: str,
    port: int,
    followers: list[Follower],
    records: int,
    results: Queue[Any],
    timeout: float,
) -> None:
    loop = asyncio.get_running_loop()
    t0 = time.time()
    await asyncio.gather(*(loop.create_connection(lambda f=f: f, host, port) for f in followers))
    await asyncio.wait_for(asyncio.gather(*(f.connected for f in followers)), CONNECT_TIMEOUT)
    t_ready = time.time()
    cpu0 = time.process_time()
    results.put(("ready", t_ready, t_ready - t0))

    _, pending = await asyncio.wait([f.finished for f in followers], timeout=timeout)
    for f in followers:
        if f.transport is not None and not f.finished.done():
            f.transport.abort()
            f.error = f"no end after {timeout:g} s"
    cpu = time.process_time() - cpu0
    t_end = max((f.times[-1] for f in followers if f.times), default=time.time())
    grown = sum(f.grown for f in followers)
    results.put(("finished", t_end, len(pending), cpu, grown))

    summaries = []
    lags: array[float] = array("d")
    for f in followers:
        del f.buf[f.size :]
        summary, follower_lags = analyse(f.buf, f.times, f.ends, records, t_ready)
        summary["error"] = f.error
        summaries.append(summary)
        lags.extend(follower_lags)
        f.buf, f.times, f.ends = bytearray(), [], []  # free as we go
    results.put(("results", summaries, lags))


def main(
    host: str,
    port: int,
    n: int,
    records: int,
    buffer_bytes: int,
    token: str | None,
    jobs: Queue[Any],
    results: Queue[Any],
    timeout: float,
) -> None:
    """Process entry: allocate ``n`` followers' buffers, say "started", get the stream path
    from ``jobs``, connect, then put ("ready", t_ready, connect_s), ("finished", t_end,
    timed_out, cpu_s from ready to finished, buffer growths) and ("results", summaries,
    lags); or ("error", traceback)."""
    try:
        loop = asyncio.new_event_loop()
        followers = [Follower(b"", loop, buffer_bytes) for _ in range(n)]
        results.put(("started",))
        request = request_bytes(host, port, jobs.get(), token)
        for f in followers:
            f.request = request
        loop.run_until_complete(_follow_all(host, port, followers, records, results, timeout))
        loop.close()
    except BaseException:
        results.put(("error", traceback.format_exc()))
        raise
