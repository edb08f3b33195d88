"""Last words: a job's process that dies hard (SIGKILL, ``os._exit``, a segfault) right after
logging keeps every line it logged, in order, in both modes (worker/spool.py; the pool and
the RQ worker read the dead process's spool before they record its end)."""

from __future__ import annotations

import multiprocessing
import os
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobtrail.worker import spool
from jobtrail.worker.spool import HandedFd, Spool
from support.live import Live, live_server
from support.live import server_config as make_config
from support.redis_server import redis_server, workers

pytestmark = pytest.mark.timeout(600)

DEATHS = {
    "sigkill": "killed by SIGKILL",
    "os_exit": "exited with code 3",
    "segfault": "killed by SIGSEGV",
}


def _bursts(count: int, seed: int) -> list[dict[str, Any]]:
    """Random burst sizes (1 to 5,000, most small), every 4th from 3 threads, every 5th
    while a child process prints; every 6th (not those) also prints lines itself and every
    10th lets a child print some (the last without a newline) and exit, right before the
    death."""
    rng = random.Random(seed)
    more = random.Random(seed + 1)
    bursts: list[dict[str, Any]] = [
        {
            "records": int(10 ** rng.uniform(0, 3.7)),
            "threads": 3 if i % 4 == 0 else 1,
            "child": i % 5 == 0,
        }
        for i in range(count)
    ]
    for i, burst in enumerate(bursts):
        if i % 6 == 3 and not burst["child"]:  # its unbuffered prints would split the lines
            burst["printed"] = int(10 ** more.uniform(0, 3.5))
        if i % 10 == 7:
            burst["child_lines"] = int(10 ** more.uniform(0, 3.7))
    return bursts


CHILD_PRINTED = [
    {"records": 1, "child_lines": 1},
    {"records": 0, "child_lines": 20_000},
    {"records": 300, "child_lines": 3000, "printed": 3000, "threads": 3},
]


def _check_every_line_kept(live: Live, job_id: str, params: dict[str, Any], how: str) -> None:
    job = live.job(job_id)
    assert job["status"] == "failed", job
    assert DEATHS[how] in job["error"], job["error"]
    records = live.all_records(job_id)
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(1, len(records) + 1)), f"{job_id}: seqs not gap-free"
    threads = params.get("threads", 1)
    per_thread: dict[int, list[int]] = {t: [] for t in range(threads)}
    for record in records:
        words = record["message"].split()
        if len(words) == 3 and words[0] == "lw":
            per_thread[int(words[1])].append(int(words[2]))
    total = params["records"]
    for t in range(threads):
        want = total // threads + (t < total % threads)
        assert per_thread[t] == list(range(want)), (
            f"{job_id} ({params}, {how}): thread {t} kept {len(per_thread[t])} of {want} lines"
            " (lost or out of order)"
        )
    for tag, key in (("pw", "printed"), ("cw", "child_lines")):  # through fd 1's pipe
        printed = [
            int(r["message"].split()[1])
            for r in records
            if r["logger"] == "stdout" and r["message"].startswith(tag + " ")
        ]
        want = params.get(key, 0)
        assert printed == list(range(want)), (
            f"{job_id} ({params}, {how}): kept {len(printed)} of {want} {tag} lines printed"
        )


def _run_deaths(live: Live, bursts: list[dict[str, Any]], how: str = "sigkill") -> None:
    jobs = [(live.submit("last_words", how=how, **params), params) for params in bursts]
    for job, params in jobs:
        live.wait(job["job_id"], timeout=120)
        _check_every_line_kept(live, job["job_id"], params, how)


def _serves_on(live: Live) -> None:
    job = live.submit("sleep", seconds=0, steps=1)
    assert live.wait(job["job_id"])["status"] == "completed"


# -- local mode ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_server(make_config(tmp_path_factory.mktemp("home"))) as running:
        yield running


def test_two_hundred_self_kills_lose_nothing(local: Live) -> None:
    _run_deaths(local, _bursts(200, seed=16))
    _serves_on(local)
    assert local.server.health().workers_alive == 2


def test_what_a_child_printed_before_the_death_is_kept(local: Live) -> None:
    """The job's child prints (the last line without a newline) and exits, and the job
    SIGKILLs itself at once: what its readers had not turned into lines yet, and what was
    still in the pipe, is in the log (the pool keeps the pipes' read ends)."""
    _run_deaths(local, CHILD_PRINTED)


@pytest.mark.parametrize("how", ["os_exit", "segfault"])
def test_os_exit_and_a_segfault_lose_nothing(local: Live, how: str) -> None:
    _run_deaths(local, [{"records": 1}, {"records": 3000, "threads": 3}, {"records": 200}], how)
    _serves_on(local)


def test_the_spool_is_private_and_gone_with_its_worker(local: Live) -> None:
    folder = local.server.config.home / "spool"
    assert folder.stat().st_mode & 0o777 == 0o700
    spools = sorted(folder.iterdir())
    assert len(spools) == 2, "one per live worker: a dead worker's spool is removed"
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in spools)


def _spool_in_child(handed: HandedFd) -> None:
    """A child that maps the spool from the fd it was handed and logs two lines into it."""
    spool = Spool.from_fd(handed.fd)
    spool.begin("handed")
    spool.write(1, b"one\n")
    spool.write(2, b"two\n")


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_the_spool_reaches_a_worker_as_an_fd(tmp_path: Path, method: str) -> None:
    """Handed over as an open fd (issue 19: a job's process may not reach the spool's
    folder): the path is gone before the child starts and it still spools."""
    path = tmp_path / "w.spool"
    fd = spool.create_fd(path, capacity=4 * 1024 * 1024)
    try:
        path.unlink()
        process = multiprocessing.get_context(method).Process(
            target=_spool_in_child, args=(HandedFd(fd),)
        )
        process.start()
        process.join(60)
        assert process.exitcode == 0
        assert spool.read_unsent(fd, "handed") == [(1, b"one\n"), (2, b"two\n")]
    finally:
        os.close(fd)


# -- distributed mode ---------------------------------------------------------------------------
def test_self_kills_lose_nothing_in_distributed_mode(tmp_path: Path) -> None:
    """Fewer bursts than in local mode (each horse's death is also an RQ job failure), and
    what a child printed right before the death."""
    with (
        redis_server(tmp_path / "redis") as rs,
        workers(rs.url, count=2),
        live_server(replace(make_config(tmp_path / "home"), backend=rs.url)) as live,
    ):
        _run_deaths(live, _bursts(40, seed=61))
        _run_deaths(live, CHILD_PRINTED)  # the RQ worker keeps the job's pipes
        for how in ("os_exit", "segfault"):
            _run_deaths(live, [{"records": 2000, "threads": 3}, {"records": 5}], how)
        _serves_on(live)
