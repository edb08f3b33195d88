"""The token and a Redis password out of every job's reach (issue 19, jobtrail.secrecy).

Real ``jobtrail serve`` and ``jobtrail worker`` processes, started as a user starts them
(the token from the environment, the command line or a file; the Redis URL with a password
from the command line, the environment or a file), run the hostile job of
tests/jobpkg/hostile.py. It must find no secret in any ``/proc/*/environ`` or ``cmdline``
(the server's, its forkserver's, resource tracker's and pool worker's, the RQ workers'),
nor in its own environment, and can neither read the memory of the processes that hold
them nor ptrace them. The servers run without CAP_SYS_PTRACE (hostile's
``drop_ptrace_capability``), so that their jobs meet them as same-user jobs do: root with
that capability reads any process whatever it does.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis
from jobpkg.hostile import drop_ptrace_capability

from jobtrail import secrecy
from support.live import free_port
from support.redis_server import TESTS
from support.requirements import missing

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "jobtrail.cli"]
JOBTRAIL = str(Path(sys.executable).with_name("jobtrail"))  # the console script
TOKEN = f"tok-{secrets.token_hex(12)}"
DECOY = f"client-{secrets.token_hex(12)}"  # a JOBTRAIL_TOKEN the server does not use
PASSWORD = f"pw{secrets.token_hex(12)}"
WARNING = "on the command line is visible to every user of this host"


@dataclass
class Started:
    proc: subprocess.Popen[str]
    stderr: Path

    def lines(self) -> list[str]:
        return self.stderr.read_text().splitlines()


@contextlib.contextmanager
def started(cmd: list[str], logs: Path, env: dict[str, str] | None = None) -> Iterator[Started]:
    """``cmd`` without CAP_SYS_PTRACE, its stderr in ``logs``; it and its whole tree are
    stopped after."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_")}
    full_env |= {"PYTHONPATH": TESTS, **(env or {})}
    logs.parent.mkdir(parents=True, exist_ok=True)
    with open(logs, "w") as err:
        proc = subprocess.Popen(
            cmd, env=full_env, cwd=TESTS, stderr=err, text=True, preexec_fn=drop_ptrace_capability
        )
    try:
        yield Started(proc, logs)
    finally:
        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for child in tree:
            with contextlib.suppress(psutil.Error):
                child.kill()


def serve_command(home: Path, port: int, *args: str, script: bool = False) -> list[str]:
    head = [JOBTRAIL] if script else CLI
    return [*head, "serve", "--home", str(home), "--port", str(port), "--workers", "1",
            "--jobs-module", "jobs_fixture", *args]  # fmt: skip


def wait_healthy(url: str, server: Started) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert server.proc.poll() is None, "\n".join(server.lines())
        try:
            if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def run_hostile(url: str, token: str, targets: list[int], needles: list[str]) -> dict[str, Any]:
    """The hostile job's findings, run on the server at ``url``."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        params = {"needles_hex": [n.encode().hex() for n in needles], "target_pids": targets}
        response = http.post("/api/jobs", json={"type": "hostile", "params": params})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        deadline = time.monotonic() + 60
        while (job := http.get(f"/api/jobs/{job_id}").json())["status"] not in (
            "completed",
            "failed",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
    assert job["status"] == "completed", job
    return dict(job["result"])


def assert_out_of_reach(found: dict[str, Any], holders: list[int]) -> None:
    """No needle in any /proc environ or cmdline or the job's own environment, and none of
    the ``holders`` (the processes that have the secrets) readable or traceable."""
    for attack in ("proc_environ", "proc_cmdline", "own_environ"):
        assert not found[attack]["ok"], found[attack]
    assert found["proc_mem"]["needles"] == [], found["proc_mem"]
    for attack in ("proc_mem", "ptrace"):
        assert not set(holders) & set(found[attack]["reached"]), found[attack]


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


# -- serve, local mode ------------------------------------------------------------------------
@pytest.mark.parametrize("given", ["env", "argv", "file"])
def test_a_job_finds_the_token_nowhere(given: str, tmp_path: Path) -> None:
    """The token from JOBTRAIL_TOKEN, --token (a warning, once; the console script and JSON
    logs here) or --token-file (with a client's JOBTRAIL_TOKEN beside it, also kept out)."""
    port, url = free_port(), ""
    args: list[str] = []
    env: dict[str, str] = {}
    if given == "env":
        env["JOBTRAIL_TOKEN"] = TOKEN
    elif given == "argv":
        args = ["--token", TOKEN, "--log-format", "json"]
    else:
        args = ["--token-file", str(secret_file(tmp_path / "token", TOKEN))]
        env["JOBTRAIL_TOKEN"] = DECOY
    cmd = serve_command(tmp_path / "home", port, *args, script=given == "argv")
    with started(cmd, tmp_path / "serve.err", env) as server:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server)
        found = run_hostile(url, TOKEN, [server.proc.pid], [TOKEN, DECOY])
        assert_out_of_reach(found, [server.proc.pid])
        # a pool worker started by the forkserver: nothing of the server's in its memory
        assert found["own_memory"]["detail"].startswith("read "), found["own_memory"]
        assert not found["own_memory"]["ok"], found["own_memory"]
        if given == "env":  # the client still takes its token from the environment
            listed = subprocess.run(
                [*CLI, "jobs", "--url", url], env={**os.environ, "JOBTRAIL_TOKEN": TOKEN},
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert listed.returncode == 0 and "hostile" in listed.stdout, listed.stderr
        lines = server.lines()
    warnings = [line for line in lines if WARNING in line]
    assert len(warnings) == (1 if given == "argv" else 0), lines
    if given == "argv":  # --log-format json: every line JSON, the warning too
        assert all(json.loads(line) for line in lines)
        assert "--token on the command line" in json.loads(warnings[0])["message"]


# -- distributed mode -------------------------------------------------------------------------
@contextlib.contextmanager
def redis_with_password(directory: Path) -> Iterator[str]:
    """A real redis-server that wants PASSWORD; yields its URL with the password."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not on PATH", "apt-get install -y redis-server")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
            "no", "--dir", str(directory), "--requirepass", PASSWORD]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=0.2)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "no redis-server"
                time.sleep(0.05)
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_distributed_jobs_find_neither_the_token_nor_the_redis_password(tmp_path: Path) -> None:
    """The API server with the URL on its command line and the token from a file; one
    worker with the URL in JOBTRAIL_BACKEND, one with --backend-file."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with redis_with_password(tmp_path / "redis") as backend:
        backend_file = secret_file(tmp_path / "backend", backend)
        token_file = secret_file(tmp_path / "token", TOKEN)
        worker = [*CLI, "worker", "--concurrency", "1", "--jobs-module", "jobs_fixture"]
        serve = serve_command(
            tmp_path / "home", port, "--backend", backend, "--token-file", str(token_file)
        )
        with (
            started(worker, tmp_path / "w1.err", {"JOBTRAIL_BACKEND": backend}) as w1,
            started([*worker, "--backend-file", str(backend_file)], tmp_path / "w2.err") as w2,
            started(serve, tmp_path / "serve.err") as server,
        ):
            wait_healthy(url, server)
            holders = [server.proc.pid, w1.proc.pid, w2.proc.pid]
            for _ in range(2):  # either worker may take a job
                found = run_hostile(url, TOKEN, holders, [TOKEN, PASSWORD])
                assert_out_of_reach(found, holders)
                # the RQ worker above the job's horse holds the connection: out of reach too
                assert found["proc_mem"]["reached"] == found["ptrace"]["reached"] == []
                # the job's process is a fresh image: nothing of the horse's Redis in its memory
                assert found["own_memory"]["detail"].startswith("read "), found["own_memory"]
                assert found["own_memory"]["needles"] == [], found["own_memory"]
            assert sum(WARNING in line for line in server.lines()) == 1
            assert not any(WARNING in line for w in (w1, w2) for line in w.lines())


# -- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (None, "cannot read --token-file {path}: No such file or directory"),
        (0o644, "--token-file {path}: permissions 0644 are too open (group or others may "
                "read or change it); chmod 600 {path}"),
        (0o640, "--token-file {path}: permissions 0640 are too open"),
        (0o400, None),  # read-only for its owner is fine: refused below for being empty
    ],
)  # fmt: skip
def test_a_token_file_others_can_read_is_refused(
    mode: int | None, message: str | None, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    if mode is not None:
        secret_file(path, "" if message is None else TOKEN, mode)
    done = subprocess.run(
        [*CLI, "serve", "--home", str(tmp_path / "home"), "--port", "0", "--token-file",
         str(path)], capture_output=True, text=True, timeout=60, cwd=TESTS,
    )  # fmt: skip
    expected = message or "--token-file {path} is empty"
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"jobtrail: {expected.format(path=path)}"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_a_secret_given_twice_or_badly_is_refused(tmp_path: Path) -> None:
    token = secret_file(tmp_path / "token", TOKEN)
    both = subprocess.run(
        [*CLI, "serve", "--port", "0", "--token", TOKEN, "--token-file", str(token)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert both.returncode == 2 and both.stderr == (
        "jobtrail: give --token or --token-file, not both\n"
    ), both.stderr
    backend = secret_file(tmp_path / "backend", "redis://:pw@127.0.0.1:1/0", 0o604)
    worker = subprocess.run(
        [*CLI, "worker", "--backend-file", str(backend)], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert worker.returncode == 2, worker.stderr
    assert worker.stderr == (
        f"jobtrail worker: --backend-file {backend}: permissions 0604 are too open (group or "
        f"others may read or change it); chmod 600 {backend}\n"
    )


# -- the pieces -------------------------------------------------------------------------------
def test_url_password_and_argv_cleaning() -> None:
    assert secrecy.url_password("redis://:s3cret@host:6379/0") == "s3cret"
    assert secrecy.url_password("redis://user:s3cret@host/0") == "s3cret"
    assert secrecy.url_password("redis://host/0?password=s3cret") == "s3cret"
    assert secrecy.url_password("redis://host:6379/0") is None
    argv = ["serve", "--token", "T", "--port", "1", "--token=T", "--backend", "--token"]
    assert secrecy._without_option(argv, "--token", "T") == [
        "serve", "--port", "1", "--backend", "--token"
    ]  # fmt: skip
