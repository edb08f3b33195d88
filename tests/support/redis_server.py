"""A real redis-server for the tests: on a free loopback port, in a temp dir, stopped after.

No fake Redis: the distributed tests run against the binary the system packages install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import redis

from support.live import free_port
from support.requirements import missing

TESTS = str(Path(__file__).resolve().parents[1])  # where jobs_fixture is
WORKER_COMMAND = ("jobtrail.cli", "worker")


class RedisServer:
    def __init__(
        self, directory: Path, port: int | None = None, appendonly: bool = False, password: str = ""
    ) -> None:
        self.dir = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password  # requirepass, and in the URL
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing(
                "redis-server is not on PATH",
                "tests/run.sh installs it (apt-get install -y redis-server)",
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.dir)]
        args += ["--requirepass", self.password] if self.password else []
        with open(self.dir / "redis.log", "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        client = redis.Redis(
            port=self.port, password=self.password or None, socket_connect_timeout=0.2
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert self.proc.poll() is None, (self.dir / "redis.log").read_text()
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        """SIGTERM: redis-server shuts down cleanly (and writes its AOF if on)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server(
    directory: Path, appendonly: bool = False, password: str = ""
) -> Iterator[RedisServer]:
    server = RedisServer(directory, appendonly=appendonly, password=password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Workers:
    """``jobtrail worker`` processes, each standing for one host."""

    def __init__(self, url: str, count: int, concurrency: int = 1) -> None:
        self.url = url
        self.procs: list[subprocess.Popen[bytes]] = []
        for _ in range(count):
            self.add(concurrency)

    def add(self, concurrency: int = 1, *options: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}
        env.pop("JOBTRAIL_BACKEND", None)
        args = [sys.executable, "-m", *WORKER_COMMAND, "--backend", self.url]
        args += ["--concurrency", str(concurrency), "--jobs-module", "jobs_fixture", *options]
        proc = subprocess.Popen(args, env=env, cwd=TESTS)
        self.procs.append(proc)
        return proc

    def wait_ready(self, expected: int, timeout: float = 30.0) -> None:
        """Until ``expected`` RQ workers registered in Redis."""
        from rq import Worker

        client = redis.Redis.from_url(self.url)
        try:
            deadline = time.monotonic() + timeout
            while Worker.count(connection=client) < expected:
                assert time.monotonic() < deadline, "workers did not register"
                assert all(p.poll() is None for p in self.procs), "a worker exited"
                time.sleep(0.1)
        finally:
            client.close()

    def kill_host(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker process and all its children at once: a host that vanished."""
        try:
            root = psutil.Process(proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill_host(proc)


@contextlib.contextmanager
def workers(url: str, count: int, concurrency: int = 1) -> Iterator[Workers]:
    running = Workers(url, count, concurrency)
    try:
        running.wait_ready(count * concurrency)
        yield running
    finally:
        running.stop()
