"""``jobtrail worker``: RQ workers on any host that reaches Redis, with jobtrail's guarantees.

One ``jobtrail worker`` process starts ``--concurrency`` RQ worker processes (and starts a
new one if one dies). Each is a ``JobtrailWorker``: RQ dequeues, forks a work-horse per job
(a crash stays in that job) and keeps its own heartbeats; the horse forks the job's process
and relays its messages (``horse.py``). On top of that a watcher thread

* refreshes the job's heartbeat key (``jobtrail:hb:<job_id>``, TTL 10 s) every second, which
  is how API servers notice a host that vanished;
* polls the job's cancel key and stops the job's whole process tree (the horse's child and
  its descendants; the horse stays, to relay what they said), children first: SIGTERM (the
  job's ``finally`` blocks run), then SIGKILL after 3 s;
* watches that tree (``limits.TreeWatch``): its peak memory, published in
  ``jobtrail:usage:<job_id>`` for the job's record, and its limits (the job's, else this
  worker's ``--job-memory-mb``/``--job-timeout``): over one, the reason goes down the job's
  notes pipe (created here before the fork, read by the job's process for its log), then the
  tree is stopped as a cancel.

When the horse dies (signal, ``os._exit``; it dies as the job's process did), RQ's dead-horse
hook first sends the lines of
the horse's spool that its stream lacks (the spool is a file this worker creates for each
job, in a private temp folder, before RQ forks the horse, and unlinks at once: it is
reached through its fd only), then the job's ``end`` message
with the cause in jobtrail's words ("killed by SIGKILL", "exited with code 3").
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Any
from urllib.parse import urlsplit

import psutil
import redis
from rq import Queue, Worker
from rq.job import Job as RQJob

from jobtrail import cpu_group
from jobtrail.backends.redis import horse
from jobtrail.backends.redis import keys as b
from jobtrail.backends.redis._job_fds import JobFds
from jobtrail.backends.redis.records import RedisJobDB
from jobtrail.isolation import Isolation
from jobtrail.limits import MB, SAMPLE_EVERY, Limits, TreeWatch
from jobtrail.messages import End, Outcome
from jobtrail.processes import (
    CANCEL_GRACE,
    TreeStop,
    death_reason,
    die_with_parent,
    kill_tree,
    mark_this_process,
    processes_marked,
)
from jobtrail.registry import import_job_modules
from jobtrail.worker.runtime import PLAYBOOKS_ENV, STOP_SIGNAL, TOKEN_ENV

log = logging.getLogger("jobtrail.worker")
WATCH_EVERY = SAMPLE_EVERY  # cancel, heartbeat and the tree's memory, looked at this often
FINISH_SECONDS = 5.0  # on SIGTERM, how long a running job may take to finish by itself


class JobtrailWorker(Worker):
    """An RQ worker that heartbeats, cancels and explains deaths the jobtrail way."""

    def __init__(
        self, *args: Any, url: str, mark: str, spools: str, limits: Limits, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._jt_url = url
        self._jt_mark = mark
        self._jt_conn = b.connect(url)
        self._jt_job: str | None = None
        self._jt_cancel: TreeStop | None = None
        self._jt_ended = False
        self._jt_status: int | None = None
        self._jt_lock = threading.Lock()
        self._jt_spools = spools
        self._jt_default_limits = limits  # for jobs that come without one
        self._jt_limits = limits
        self._jt_tree: TreeWatch | None = None
        self._jt_job_pid = 0  # the job's process: the horse's child
        self._jt_fds: JobFds | None = None  # the running job's spool and pipes
        self._jt_published = 0  # the peak bytes last written to the usage key
        threading.Thread(target=self._jt_watch, name="jobtrail-watch", daemon=True).start()

    # -- RQ hooks ---------------------------------------------------------------------------
    def execute_job(self, job: RQJob, queue: Queue) -> None:
        job_id = job.id
        with self._jt_lock:
            self._jt_job, self._jt_cancel, self._jt_ended = job_id, None, False
            self._jt_status = None
            options = job.args[3] if len(job.args) > 3 else {}
            self._jt_limits = Limits.from_json(options).or_else(self._jt_default_limits)
            self._jt_tree, self._jt_published, self._jt_job_pid = None, 0, 0
        self._beat(job_id)
        params = job.args[2] if len(job.args) > 2 else {}
        self._jt_fds = fds = JobFds(self._jt_spools, params, options)  # the horse inherits them
        try:
            super().execute_job(job, queue)
        except (redis.ConnectionError, redis.TimeoutError):
            log.warning("redis unreachable while finishing job %s", job_id)
        finally:
            with self._jt_lock:
                self._jt_job = None
                ended, status = self._jt_ended, self._jt_status
            kill_tree(processes_marked(f"{self._jt_mark}/{job_id}"))  # leftovers of a dead horse
            if not ended and status not in (None, 0):
                self._send_end(job_id, status)
            self._quietly(lambda: self._jt_conn.delete(b.heartbeat_key(job_id)))
            self._quietly(lambda: self._jt_final_usage(job_id))
            fds.close()
            self._jt_fds = None

    def fork_work_horse(self, job: RQJob, queue: Queue) -> None:
        super().fork_work_horse(job, queue)
        if self._jt_fds is not None:
            self._jt_fds.forked()

    def wait_for_horse(self) -> tuple[int | None, int | None, Any]:
        job_id = self._jt_job
        watch = self._jt_tree
        if job_id and self.horse_pid and (watch is None or watch.job_id != job_id):
            # the horse's peak at once (a short job's process may be gone by the first look),
            # published before the job's end is recorded
            self._jt_tree_of(job_id, self.horse_pid)
        pid, status, rusage = super().wait_for_horse()
        if pid and job_id:
            self._jt_status = status
            watch = self._jt_tree_of(job_id, self._jt_job_pid or pid)
            if rusage is not None:  # KiB: the high-water mark of the horse and the job's process
                watch.saw(rusage.ru_maxrss * 1024)
        return pid, status, rusage

    def handle_work_horse_killed(self, job: RQJob, retpid: int, ret_val: int, rusage: Any) -> None:
        """The horse died before it finished: its end message never left. Send it, with why."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)  # type: ignore[no-untyped-call]
        self._send_end(job.id, ret_val)

    def maintain_heartbeats(self, job: RQJob, execution: Any) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except (redis.ConnectionError, redis.TimeoutError):
            log.warning("redis unreachable: RQ heartbeat of job %s skipped", job.id)

    # -- jobtrail ---------------------------------------------------------------------------
    def _send_end(self, job_id: str, wait_status: int) -> None:
        with self._jt_lock:
            if self._jt_ended:
                return
            self._jt_ended = True
        kill_tree(processes_marked(f"{self._jt_mark}/{job_id}"))
        try:  # its last words first: the end is the barrier
            sent = self._jt_fds.send_last_words(self._jt_conn, job_id) if self._jt_fds else 0
            if sent:
                log.info("job %s: %d line(s) of its last words sent", job_id, sent)
        except OSError:
            log.error("could not send the spooled lines of job %s: redis unreachable", job_id)
        code = os.waitstatus_to_exitcode(wait_status)
        watch = self._jt_tree if self._jt_tree and self._jt_tree.job_id == job_id else None
        if watch is not None and watch.error is not None:  # a limit stopped it first
            outcome = watch.died(code)
        elif self._quietly(lambda: self._jt_conn.exists(b.cancel_key(job_id))):
            outcome = Outcome.cancelled()
        elif watch is not None:  # how it died, the OOM killer named when it can be known
            outcome = watch.died(code)
        else:
            outcome = Outcome.died(death_reason(code))
        try:
            horse.StreamSender(self._jt_conn, job_id)(End(job_id, outcome))
        except OSError:
            log.error("could not report the end of job %s: redis unreachable", job_id)

    def _beat(self, job_id: str) -> None:
        self._quietly(
            lambda: self._jt_conn.set(b.heartbeat_key(job_id), self.name, ex=b.HEARTBEAT_TTL)
        )

    @staticmethod
    def _quietly(call: Any) -> Any:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            return None  # Redis restarting: the next turn tries again

    def _jt_watch(self) -> None:
        last_beat = 0.0
        while True:
            time.sleep(WATCH_EVERY)
            with self._jt_lock:
                job_id, cancel = self._jt_job, self._jt_cancel
            horse_pid = self.horse_pid
            if job_id is None or not horse_pid:
                continue
            now = time.monotonic()
            if now - last_beat >= b.HEARTBEAT_EVERY:
                self._beat(job_id)
                last_beat = now
            pid = self._jt_job_process(horse_pid)
            if not pid:
                continue  # the horse has not forked it yet (or it is gone)
            if cancel is not None:
                cancel.escalate(now)
            elif self._jt_watch_tree(job_id, pid, now):
                continue  # a limit is stopping it: a cancel now would cut its report short
            elif self._quietly(lambda j=job_id: self._jt_conn.exists(b.cancel_key(j))):
                # reparented descendants are found by the job's mark
                cancel = TreeStop(pid, mark=f"{self._jt_mark}/{job_id}")
                with self._jt_lock:
                    self._jt_cancel = cancel
                cancel.terminate()

    def _jt_job_process(self, horse_pid: int) -> int:
        """The job's process: the horse's one child (0 until the horse forked it)."""
        if not self._jt_job_pid:
            try:
                children = psutil.Process(horse_pid).children()
            except psutil.Error:
                return 0
            self._jt_job_pid = children[0].pid if children else 0
        return self._jt_job_pid

    def _jt_tree_of(self, job_id: str, pid: int) -> TreeWatch:
        """The watch of the job's process, made when its pid is first seen (just after the
        fork; the horse's until then, whose peak it keeps): sampled and published at once,
        so a job that ends within a sample has a peak when its end is recorded."""
        with self._jt_lock:
            watch = self._jt_tree
            if watch is not None and watch.pid == pid and watch.job_id == job_id:
                return watch
            mark = f"{self._jt_mark}/{job_id}"
            earlier = watch.peak_bytes if watch is not None and watch.job_id == job_id else 0
            watch = TreeWatch(job_id, pid, self._jt_limits, mark=mark)  # its clock starts
            watch.saw(earlier)
            self._jt_tree = watch
        watch.sample()
        self._jt_publish(watch)
        return watch

    def _jt_publish(self, watch: TreeWatch) -> None:
        """The job's peak (once it rose by a MB) and limits, for its record's end."""
        if watch.peak_bytes < self._jt_published + MB:
            return
        usage = {**watch.limits.to_json(), "peak_rss_mb": watch.peak_rss_mb}
        key = b.usage_key(watch.job_id)
        if self._quietly(lambda: self._jt_conn.set(key, json.dumps(usage), ex=b.STREAM_TTL)):
            self._jt_published = watch.peak_bytes

    def _jt_final_usage(self, job_id: str) -> None:
        """The peak once the horse is reaped (a job shorter than a sample has only this),
        published, and added to the job's record if its end was recorded already."""
        watch = self._jt_tree
        if watch is None or watch.job_id != job_id or not watch.peak_bytes:
            return
        usage = {**watch.limits.to_json(), "peak_rss_mb": watch.peak_rss_mb}
        self._jt_conn.set(b.usage_key(job_id), json.dumps(usage), ex=b.STREAM_TTL)
        RedisJobDB(self._jt_conn).fill_extra(
            job_id, {k: v for k, v in usage.items() if v is not None}
        )

    def _jt_watch_tree(self, job_id: str, pid: int, now: float) -> bool:
        """Sample the horse's tree, publish its peak, stop it over a limit; True while a
        limit is stopping it."""
        watch = self._jt_tree_of(job_id, pid)
        watch.sample()
        fds = self._jt_fds
        watch.check(now, fds.tell if fds is not None else lambda error: None)
        self._jt_publish(watch)
        return watch.error is not None


def _work(url: str, mark: str, index: int, limits: Limits) -> None:
    """One RQ worker process (a child of ``jobtrail worker``)."""
    die_with_parent()
    mark_this_process(mark)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    name = f"jobtrail.{socket.gethostname()}.{os.getpid()}.{index}"
    horse.WORKER.update(url=url, mark=mark, name=name)
    conn = b.connect(url)
    spools = tempfile.mkdtemp(prefix="jobtrail-spool-")  # 0700: its horses' spools
    worker = JobtrailWorker(
        [Queue(b.QUEUE, connection=conn)],
        connection=conn,
        name=name,
        url=url,
        mark=mark,
        spools=spools,
        limits=limits,
        job_monitoring_interval=5,
    )
    try:
        worker.work(logging_level="WARNING")
    finally:
        shutil.rmtree(spools, ignore_errors=True)


def run_workers(
    url: str,
    concurrency: int,
    job_modules: Sequence[str] = (),
    playbooks: str | None = None,
    limits: Limits | None = None,
    isolation: Isolation | None = None,
) -> int:
    """The ``jobtrail worker`` command: keep ``concurrency`` RQ workers alive until SIGTERM;
    ``limits`` are the defaults for jobs that come without a memory limit or timeout;
    ``isolation`` what each job's process becomes (``_pidns.job_isolation``)."""
    os.environ.pop(TOKEN_ENV, None)
    horse.ISOLATION["isolation"] = isolation or Isolation()  # every horse inherits it
    horse.JOB_MODULES[:] = job_modules  # what each job's fresh image imports
    # made here, on the worker's host; a job joins it if its server has --worker-cpu idle
    group, why = cpu_group.prepare()
    horse.CPU_GROUP["group"] = group or ""
    if group is None:
        log.info("jobs of a server with --worker-cpu idle run at their nice only here: %s", why)
    if playbooks:
        os.environ[PLAYBOOKS_ENV] = os.path.abspath(playbooks)
    import_job_modules(job_modules)  # before forking: every horse has the job types
    b.retrying(lambda: b.connect(url).ping(), 30.0, "worker start")
    mark = f"jtw-{uuid.uuid4().hex[:12]}"
    ctx = multiprocessing.get_context("fork")
    stopping = threading.Event()
    children: dict[int, BaseProcess] = {}

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    shown = url.replace(f":{password}@", ":***@") if (password := urlsplit(url).password) else url
    log.info("jobtrail worker: %d RQ worker(s) on %s", concurrency, shown)  # JSON if asked
    while not stopping.is_set():
        for index in range(concurrency):
            proc = children.get(index)
            if proc is None or not proc.is_alive():
                if proc is not None:
                    log.warning("RQ worker %d exited (%s); starting another", index, proc.exitcode)
                    kill_tree(processes_marked(f"{mark}/{index}"))
                children[index] = ctx.Process(
                    target=_work,
                    args=(url, f"{mark}/{index}", index, limits or Limits()),
                    daemon=False,
                )
                children[index].start()
        stopping.wait(0.5)
    _stop_workers(list(children.values()))
    kill_tree(processes_marked(mark), grace=1.0)
    if isolation is not None and isolation.jobs_tmp:
        shutil.rmtree(isolation.jobs_tmp, ignore_errors=True)
    return 0


def _stop_workers(workers: list[BaseProcess]) -> None:
    """RQ's warm shutdown (SIGTERM: finish the current job) for up to FINISH_SECONDS; then
    each job still running is told with STOP_SIGNAL, so it logs that the worker is shutting
    down (not that it was cancelled) and fails saying so, within CANCEL_GRACE."""
    for proc in workers:
        if proc.pid and proc.is_alive():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + FINISH_SECONDS
    for proc in workers:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in workers:
        if proc.pid and proc.is_alive():
            try:
                horses = psutil.Process(proc.pid).children()  # RQ forks one per job
            except psutil.Error:
                continue
            for horse_proc in horses:
                with contextlib.suppress(psutil.Error):
                    horse_proc.send_signal(STOP_SIGNAL)
    deadline = time.monotonic() + CANCEL_GRACE
    for proc in workers:
        proc.join(max(0.0, deadline - time.monotonic()))
