"""Redis mode's hot reads on the event loop (``backends/redis/loopreads.py``), against a real
redis-server: they give what the thread's reads give, one client per loop, and None when
Redis does not answer (the route then asks in a thread, where the errors are the backend's)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobtrail.backends.redis import keys as b
from jobtrail.backends.redis.loopreads import LoopReads, ask_health, health_from
from jobtrail.backends.redis.records import RedisJobDB, _decode
from jobtrail.models import Job
from support.live import free_port
from support.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as running:
        yield running


def _job(n: int) -> Job:
    return Job(job_id=f"sleep-{n:012x}", job_type="sleep", params={"n": n}, created_at=time.time())


def test_the_loop_reads_give_what_the_thread_reads_give(server: RedisServer) -> None:
    conn = b.connect(server.url)
    db = RedisJobDB(conn)
    for n in range(3):
        db.insert(_job(n))
    db.transition(_job(0).job_id, ("pending",), status="running", started_at=time.time())
    conn.sadd("rq:workers:" + b.QUEUE, "rq:worker:a", "rq:worker:b")  # as RQ registers them
    reads = LoopReads(server.url)

    async def read() -> tuple[Job | None, dict[bytes, bytes] | None, object]:
        try:
            found = await reads.job_hash(_job(1).job_id)
            missing = await reads.job_hash("sleep-00000000ffff")
            return _decode(found or {}), missing, await reads.health()
        finally:
            await reads.close()

    job, missing, health = asyncio.run(read())
    assert job == db.get(_job(1).job_id) and job is not None and job.params == {"n": 1}
    assert missing == {}  # no such job: an empty hash, not a failure
    with conn.pipeline(transaction=False) as pipe:
        ask_health(pipe)
        assert health == health_from(pipe.execute())
    assert health is not None and (health.workers, health.pending, health.running) == (2, 2, 1)
    conn.delete("rq:workers:" + b.QUEUE)


def test_each_event_loop_gets_its_own_client(server: RedisServer) -> None:
    reads = LoopReads(server.url)
    seen: list[object] = []

    async def twice() -> list[object]:
        try:
            answers = [await reads.health(), await reads.health()]
            seen.append(reads._clients[asyncio.get_running_loop()])
            assert len(reads._clients) == 1  # one client for the loop's reads
            return answers
        finally:
            await reads.close()

    first = asyncio.run(twice())
    second = asyncio.run(twice())  # a new loop: a new client, not the closed loop's
    assert first == second and None not in first
    assert seen[0] is not seen[1] and reads._clients == {}  # each closed as its loop ended


def test_a_redis_that_does_not_answer_gives_none(tmp_path: Path) -> None:
    reads = LoopReads(f"redis://127.0.0.1:{free_port()}/0")

    async def read() -> tuple[object, object]:
        try:
            return await reads.job_hash(_job(1).job_id), await reads.health()
        finally:
            await reads.close()

    assert asyncio.run(read()) == (None, None)
    with pytest.raises(redis.ConnectionError):  # where the thread's read would fail
        b.connect(reads._url).ping()
