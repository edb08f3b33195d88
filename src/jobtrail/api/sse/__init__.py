"""Live follow: a job's log as Server-Sent Events.

::

    LogListener ─► JobLogStore files ─► Hub (hub.py: one per followed running job, one
                                         asyncio task) woken by the store's appends, reads
                                         the new lines (in a thread, at most every 20 ms)
                                         and frames them once (frames.py) as blocks of SSE
                                         events (bounded: 16 MiB, or less than the files keep)
                                              │ wakes
                                              ▼
                        followers (follower.py: one generator per connection, no thread
                        each) send each new block whole, as one write, or catch up from
                        the files with cursor reads when they fell behind the window

The records on this path are never parsed: a stored line is already the JSON of its record,
and its seq is counted from its batch's index entry. Only a follower with a filter has a
block's records parsed, once per block. So 100 followers cost about what one does, plus one
write each per block.

A follower never slows the listener, the hub or another follower: it only ever blocks in
its own ``send`` (uvicorn's flow control), and what it has not read yet stays on disk, not
in a queue. If rotation removed records before a follower read them, it gets an
``event: gap`` naming the lost seq range instead of a silent hole.

Events: ``record`` (``id: <seq>``, ``data: <record JSON>``), ``status`` (status, progress,
current_step, cancel_requested), ``gap`` (``{"from": a, "to": b}``, ``id: b``), ``end``
(terminal status, error, failure; then the stream closes), ``shutdown`` (the server is
stopping while the job has not ended: its status now and ``reason``; then the stream
closes, so a follower can say so instead of waiting for the server's shutdown timeout).
``: ping`` comments every 15 s keep proxies and clients from timing out. A reconnect with
``Last-Event-ID`` (or ``after=``) resumes with no gap and no repeat.
"""

from jobtrail.api.sse.follower import follow, start_cursor
from jobtrail.api.sse.frames import RecordFilter
from jobtrail.api.sse.hub import PAGE, stop_streams

__all__ = ["PAGE", "RecordFilter", "follow", "start_cursor", "stop_streams"]
