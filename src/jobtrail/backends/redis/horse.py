"""What runs inside RQ's work-horse (a fresh fork per job): a relay, and the job's process.

::

    RQ worker ─ fork ─► horse (run_job): Redis, and nothing of the job's code
                          │ fork; the copy execs a fresh interpreter (``_job_image.py``):
                          │ no socket, URL or password of the worker's, not even in raw memory
                          ▼
                        job's process: JobRuntime (capture, signals, mark, nice), the job
                          │ send = a pipe to the horse (``messages``)
                          ▼
                        horse: each message XADDed to the job's stream, in order (StreamSender)

The horse hands the task over after the fork, down a pipe that is the new image's fd 0.
With ``jobtrail worker --job-user USER`` the copy first enters PID, mount and IPC
namespaces of its own, as pid 1 (``_pidns.py``: a fresh /proc, its own tmpfs for TMPDIR)
and becomes USER (``isolation.py``), so the interpreter it execs runs as USER, with a
private TMPDIR/HOME per job; the horse relays its ``Started`` with its pid as the host
sees it. The image runs the same ``JobRuntime`` as a pool worker, so start, outcome, leftover
children and the end-of-job barrier behave as in the local pool; only ``send`` differs, as
there, and the horse XADDs what arrives, one entry per batch. Cancels and limits are sent to
the job's process by the RQ worker itself (its tree, not the horse's); a signal sent to the
horse is passed on to it. A limit's reason comes down a pipe the RQ worker created for the
job (``JOB_FDS["notes"]``), as the pool's ``StopNote`` does. Each line is also spooled
(``worker/spool.py``) into a file the RQ worker created before forking the horse. If the job's
process dies before its end, the horse relays what the pipe still held and then dies the same
way (signal or exit code), so the RQ worker reads the spool, sends what the stream lacks
(``send_unsent``) and the end with the cause, as for a horse that died.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any, NoReturn

import redis

from jobtrail import cpu_group
from jobtrail.backends.redis import _job_image
from jobtrail.backends.redis import keys as b
from jobtrail.backends.redis._pidns import enter_job_namespaces, new_pid_namespace
from jobtrail.isolation import JOBS_TMP_MODE, Isolation
from jobtrail.limits import LIMIT_SIGNAL
from jobtrail.messages import (
    CANCELLED_BEFORE_START,
    Batch,
    End,
    JobMessage,
    Outcome,
    Started,
    Task,
    from_fields,
    to_fields,
)
from jobtrail.models import JobStatus
from jobtrail.processes import die_with_parent, kill_tree, processes_marked
from jobtrail.worker.redact import Redactor
from jobtrail.worker.runtime import STOP_SIGNAL
from jobtrail.worker.spool import read_unsent, unsent_batches
from jobtrail.worker.streams import StreamPipes, render_tail, stream_tail

HOST = socket.gethostname()
# Set by the `jobtrail worker` process before it starts working; the horse inherits it.
WORKER: dict[str, str] = {"url": "", "mark": "", "name": ""}
# Set by `jobtrail worker`: what every job's image imports before its job runs.
JOB_MODULES: list[str] = []
# Set by the RQ worker before it forks the horse: fds it created for the job (-1: none),
# its spool and the two ends of its notes pipe; and its fd 1 and fd 2 pipes.
JOB_FDS: dict[str, int] = {"spool": -1, "notes": -1, "notes_w": -1}
JOB_PIPES: dict[str, StreamPipes | None] = {"pipes": None}
# Set by `jobtrail worker --job-user` before it starts working: what the job's process becomes.
ISOLATION: dict[str, Isolation] = {"isolation": Isolation()}
# Set by `jobtrail worker`: the idle cpu cgroup of this host (``cpu_group``), "" if none.
CPU_GROUP: dict[str, str] = {"group": ""}
FORWARDED = (signal.SIGTERM, STOP_SIGNAL, LIMIT_SIGNAL)  # the horse passes these on
LEFTOVER_DRAIN_SECONDS = 2.0  # after the job's process died: what its pipe still holds


class StreamSender:
    """The batcher's ``send``: XADD to ``jobtrail:log:<job_id>``, retried while Redis restarts.

    It runs in the flusher thread (and for start/end in the job's main thread), so a slow or
    restarting Redis makes records wait in the batcher, whose back-pressure then applies.
    """

    def __init__(self, conn: redis.Redis, job_id: str) -> None:
        self._conn = conn
        self._key = b.log_key(job_id)
        self.sent = 0

    def __call__(self, message: JobMessage) -> None:
        fields = to_fields(message)
        b.retrying(
            lambda: self._conn.xadd(
                self._key,
                fields,  # type: ignore[arg-type]
                maxlen=b.STREAM_MAXLEN,
                approximate=True,
            ),
            b.SEND_RETRY_SECONDS,
            "log stream",
        )
        self.sent += 1


def run_job(job_id: str, job_type: str, params: dict[str, Any], options: dict[str, Any]) -> str:
    """The RQ job function: returns the jobtrail status (the outcome travels on the stream)."""
    die_with_parent()  # the RQ worker is gone: nobody would read the job's end
    conn = b.connect(WORKER["url"])
    send = StreamSender(conn, job_id)
    if conn.exists(b.cancel_key(job_id)):  # cancelled between dequeue and here
        send(End(job_id, Outcome.cancelled(CANCELLED_BEFORE_START)))
        return "cancelled"
    _close(JOB_FDS.pop("notes_w", -1))  # the RQ worker's end: the job must not write notes
    relay = JobRelay(send)
    if ISOLATION["isolation"].user is not None:
        new_pid_namespace()  # the job's process is its pid 1: it sees no other job, nor us
    task = Task(job_id, job_type, params)
    task_read, task_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(task_write)
        idle = cpu_group.wanted(str(options.get("cpu")), int(options.get("nice", 0)))
        relay.become_job_process(task, task_read, CPU_GROUP["group"] if idle else "")
    os.close(task_read)
    pipes = JOB_PIPES["pipes"]
    for write_end in (pipes.stdout[1], pipes.stderr[1]) if pipes else ():
        _close(write_end.fd)  # the job's (and its children's) only
    _job_image.hand_over(task_write, relay.spec(task, options))
    end = relay.run(pid, f"{WORKER['mark']}/{job_id}")
    if end is None:  # the job's process died before its end: die as it did
        _die_like(relay.status)
    return "cancelled" if end.outcome.status is JobStatus.CANCELLED else "ended"


class JobRelay:
    """The horse's side of the job's process: its messages XADDed, signals passed on."""

    def __init__(self, send: StreamSender) -> None:
        self._send = send
        self._read, self._write = os.pipe()
        self.pid = 0
        self.status = 0  # the job's process's wait status, once reaped
        self._pending: list[int] = []  # signals that came before the fork
        for sig in FORWARDED:
            signal.signal(sig, self._forward)

    def _forward(self, signum: int, frame: Any) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)
        else:
            self._pending.append(signum)

    def become_job_process(self, task: Task, task_read: int, cpu: str = "") -> NoReturn:
        """In the fork: what needs the copy (the idle ``cpu`` group, namespaces, USER), then
        the exec of a fresh image that reads ``task`` (the horse writes it) from
        ``task_read``; never returns."""
        try:
            for sig in FORWARDED:
                signal.signal(sig, signal.SIG_DFL)  # until JobRuntime sets its own
            os.close(self._read)
            if cpu:  # while root and /sys writable: before the namespaces and USER
                cpu_group.join(cpu)
            isolation = ISOLATION["isolation"]
            if isolation.user is not None:  # still root: a /proc of its own, its own tmpfs
                enter_job_namespaces(
                    isolation.jobs_tmp,
                    JOBS_TMP_MODE,
                    isolation.sandbox,
                    isolation.hidden,
                    isolation.visible,
                    isolation.sandbox_paths(task.job_type),  # its own type's paths
                )
            isolation.enter()  # --job-user: become USER for good, before the exec
            die_with_parent()  # after the change of user, which clears it; the exec keeps it
            handed = self._handed()
            keep = {handed["channel"], handed["spool"], handed["notes"], *(handed["pipes"] or ())}
            _job_image.exec_image(task_read, keep - {-1})
        except BaseException:  # the exec failed: the worker's log
            traceback.print_exc()
        finally:
            os._exit(1)

    def _handed(self) -> dict[str, Any]:
        """The fds the job's process keeps (-1: none): its pipe to us, the spool, the notes
        pipe and fd 1's and 2's pipes (read and write ends, as ``StreamPipes``)."""
        pipes = JOB_PIPES["pipes"]
        return {
            "channel": self._write,
            "spool": JOB_FDS.get("spool", -1),
            "notes": JOB_FDS.get("notes", -1),
            "pipes": [h.fd for h in (*pipes.stdout, *pipes.stderr)] if pipes else None,
        }

    def spec(self, task: Task, options: dict[str, Any]) -> dict[str, Any]:
        """What the job's image needs, for ``_job_image.main`` (the fds are the fork's)."""
        isolation = ISOLATION["isolation"]
        return {
            "job_id": task.job_id,
            "job_type": task.job_type,
            "params": task.params,
            "options": options,
            "mark": f"{WORKER['mark']}/{task.job_id}",
            "host": HOST,
            "worker": WORKER["name"],
            "jobs_tmp": isolation.jobs_tmp,
            "dumpable": isolation.user is not None or _job_image.dumpable(),
            "job_modules": list(JOB_MODULES),
            "sys_path": list(sys.path),
            "fds": self._handed(),
        }

    def run(self, pid: int, mark: str) -> End | None:
        """Relay until the job's process ended; its End, or None if it died before one."""
        self.pid = pid
        os.close(self._write)
        for signum in self._pending:
            self._forward(signum, None)
        channel = Connection(self._read, writable=False)
        end: End | None = None
        try:
            while True:
                if channel.poll(0.2):
                    try:
                        message = channel.recv()
                    except (EOFError, OSError):  # OSError: it died writing one (torn)
                        break
                    if isinstance(message, Started):  # its pid in its namespace, maybe 1
                        message = message._replace(pid=pid)
                    self._send(message)
                    if isinstance(message, End):
                        end = message
                elif self._reaped():
                    # its children may hold the pipe: stop them, then take what is left
                    kill_tree(processes_marked(mark))
                    end = self._drain(channel) or end
                    break
            if not self.status:
                self._reap()
        finally:
            channel.close()
        return end

    def _drain(self, channel: Connection) -> End | None:
        end = None
        with contextlib.suppress(EOFError, OSError):
            while channel.poll(LEFTOVER_DRAIN_SECONDS):
                message = channel.recv()
                self._send(message)
                if isinstance(message, End):
                    end = message
        return end

    def _reaped(self) -> bool:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid:
            self.status = status
        return bool(pid)

    def _reap(self) -> None:
        with contextlib.suppress(ChildProcessError):
            self.status = os.waitpid(self.pid, 0)[1]


def _die_like(status: int) -> NoReturn:
    """End the horse as the job's process ended, so the RQ worker explains the same death."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP take none
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


def send_last_words(
    conn: redis.Redis,
    job_id: str,
    spool_fd: int,
    read_ends: tuple[int, ...],
    redact: Redactor,
) -> int:
    """After the job's process died: XADD what the job's stream lacks, in order — the lines
    of its spool the stream does not have (by seq: it may have died after an XADD, before
    it released them), then what it and its children wrote to fd 1 and 2 that its readers
    never turned into lines (``stream_tail``: the spool's windows, then what the kept
    ``read_ends`` still hold), numbered after them. Returns how many lines were sent."""
    lines = read_unsent(spool_fd, job_id) if spool_fd >= 0 else []
    last = _stream_last_seq(conn, job_id)
    batches = unsent_batches(lines, last)
    if batches:
        last = batches[-1][0] + len(batches[-1][1]) - 1
    tail = render_tail(
        stream_tail(spool_fd if spool_fd >= 0 else None, read_ends, redact), last + 1
    )
    batches += [(last + 1 + i, tail[i : i + 256]) for i in range(0, len(tail), 256)]
    send = StreamSender(conn, job_id)
    for first_seq, chunk in batches:
        # level mask 0: the store indexes the batch as holding every level
        send(Batch(job_id, first_seq, len(chunk), 0, b"".join(chunk)))
    return sum(len(chunk) for _, chunk in batches)


def _stream_last_seq(conn: redis.Redis, job_id: str) -> int:
    """The seq of the last line the job's stream holds (0 for none): its newest batch's."""
    key = b.log_key(job_id)
    newest = "+"

    def older() -> Any:
        return conn.xrevrange(key, max=newest, count=64)

    while True:
        entries = b.retrying(older, b.SEND_RETRY_SECONDS, "log stream")
        for entry_id, fields in entries:
            message = from_fields(job_id, fields)
            if isinstance(message, Batch):
                return message.first_seq + message.line_count - 1
            newest = "(" + entry_id.decode()
        if len(entries) < 64:
            return 0
