"""The hot reads of Redis mode, done on the API's event loop with ``redis.asyncio``.

Why: in Redis mode a job's record and the health counts are a network away, so the routes
handed them to a thread. With 4 clients, the thread hops, and the GIL handed between the
loop and the threads, held ``/api/health``'s p50 at 5.6 ms and its p99 at 15 ms on an idle
2-core machine (``benchmarks/api_latency.py --mode clients --backend redis``). Awaited on the
loop, a request costs its round trip and nothing else waits for it.

One client per event loop (an asyncio connection belongs to the loop that opened it; the
tests serve one service from more than one); ``close`` closes the running loop's. A Redis
error here is not the answer: the caller returns None, and the route asks again in a thread,
where the backend's retries and errors apply.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis
import redis.asyncio
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from jobtrail.backends.redis import keys as b
from jobtrail.models import Health

# health: the workers of jobtrail's queue (as rq's Worker.count), pending and running jobs
HEALTH_KEYS = (WORKERS_BY_QUEUE_KEY % b.QUEUE, b.STATUS + "pending", b.STATUS + "running")


def health_from(counts: list[Any]) -> Health:
    workers, pending, running = (int(n) for n in counts)
    return Health(workers=workers, workers_alive=workers, pending=pending, running=running)


def ask_health(pipe: Any) -> None:
    """Queue the three counts on ``pipe`` (sync or async): one round trip."""
    workers, pending, running = HEALTH_KEYS
    pipe.scard(workers)
    pipe.zcard(pending)
    pipe.zcard(running)


class LoopReads:
    """A ``redis.asyncio`` client for each event loop that reads through it."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._clients: dict[asyncio.AbstractEventLoop, redis.asyncio.Redis] = {}

    def _client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for gone in [other for other in self._clients if other.is_closed()]:
                del self._clients[gone]  # its connections went with it
            client = self._clients[loop] = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=10.0, socket_connect_timeout=5.0
            )
        return client

    async def job_hash(self, job_id: str) -> dict[bytes, bytes] | None:
        """The job's hash (empty if there is none); None if Redis did not answer."""
        try:
            raw: dict[bytes, bytes] = await self._client().hgetall(b.job_key(job_id))  # type: ignore[assignment]
        except (redis.RedisError, OSError):
            return None
        return raw

    async def health(self) -> Health | None:
        try:
            async with self._client().pipeline(transaction=False) as pipe:
                ask_health(pipe)
                counts = await pipe.execute()
        except (redis.RedisError, OSError):
            return None
        return health_from(counts)

    async def close(self) -> None:
        """Close the running loop's client (the server's lifespan ends)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await client.aclose()
