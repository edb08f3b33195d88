"""deploy/: the systemd unit and the container file, tested as far as a machine without
systemd as PID 1 and without a container engine allows.

* The unit: ``systemd-analyze verify`` and ``security --offline``, the sysusers file through
  ``systemd-sysusers --root``, and ``jobtrail serve`` run the way the unit runs it: its
  ExecStart and Environment, as a user of its own with the state directory as its home, in a
  mount namespace that does what ProtectSystem=strict, ProtectHome=yes and PrivateTmp=yes do,
  with NoNewPrivileges, an empty capability bounding set and the unit's UMask. The rest of
  the sandbox (system call filter, address families, PrivateDevices, the Protect* of kernel
  and cgroups) needs systemd to apply it and is verified only as configuration.
* The container file: the files it COPYs build jobtrail's wheel with the web files in it,
  and its ENTRYPOINT (tini and all) serves with its ENV as a non-root user, the token read
  from a secret file mounted where the engine puts it, in no process's environment; the
  image build itself needs an engine.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from jobtrail.cli.logformat import JsonLineFormatter
from support.live import free_port
from support.sandbox import (
    as_user,
    free_uid,
    hide_root,
    json_lines,
    keep_reachable,
    need,
    wait_serving,
)
from support.waits import wait_until

pytestmark = pytest.mark.timeout(120)

DEPLOY = Path(__file__).parents[1] / "deploy"
UNIT = DEPLOY / "jobtrail.service"
VENV_BIN = Path(sys.executable).parent
SERVER_STOPPED = "the server stopped while the job was running"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unit_options(path: Path = UNIT) -> dict[str, str]:
    """The [Service] section's settings (a later setting of a key replaces an earlier one)."""
    options: dict[str, str] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            options[key] = value
    return options


def test_unit_verifies_and_is_sandboxed(tmp_path: Path) -> None:
    need("systemd-analyze", package="systemd")
    # verify checks that ExecStart's program exists: point it at this venv's jobtrail
    unit = tmp_path / "jobtrail.service"
    unit.write_text(UNIT.read_text().replace("/opt/jobtrail/bin/", f"{VENV_BIN}/"))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and verify.stderr == "" and verify.stdout == "", verify
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert security.returncode == 0, security.stdout[-2000:]
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert exposure and float(exposure.group(1)) <= 2.5, security.stdout[-500:]

    options = unit_options()
    assert options["User"] == "jobtrail" and options["StateDirectory"] == "jobtrail"
    assert options["Restart"] == "on-failure" and options["RestartPreventExitStatus"] == "2"
    # a SIGTERM to every process at once would read as a cancel in each job
    assert options["KillMode"] == "mixed"


def test_sysusers_adds_the_service_user(tmp_path: Path) -> None:
    need("systemd-sysusers", package="systemd")
    (tmp_path / "etc").mkdir()
    subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(DEPLOY / "jobtrail.sysusers")],
        check=True,
        capture_output=True,
        timeout=30,
    )
    user = [
        line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
        if line.startswith("jobtrail:")
    ]
    assert user and user[0][5:] == ["/var/lib/jobtrail", "/usr/sbin/nologin"]
    assert int(user[0][2]) < 1000  # a system user


def _sandbox_script(state: Path, uid: int, options: dict[str, str]) -> str:
    """Shell run as root in a new mount namespace: the unit's file system sandbox, then
    ``exec setpriv`` into its user and privileges and ``exec "$@"`` (the ExecStart)."""
    assert options["ProtectSystem"] == "strict" and options["ProtectHome"] == "yes"
    assert options["PrivateTmp"] == "yes" and options["NoNewPrivileges"] == "yes"
    assert options["CapabilityBoundingSet"] == ""
    home = f"/var/lib/{options['StateDirectory']}"
    stage, put_back = keep_reachable(tmp_covered=True)
    steps = [
        "set -e",
        "mount -n --make-rprivate /",
        # StateDirectory=: a writable, private home; the test's folder, seen at its path
        "mount -n -t tmpfs -o mode=0755 tmpfs /var/lib",
        f"mkdir -p {home}",
        f"mount -n --bind {shlex.quote(str(state))} {home}",
        # ProtectSystem=strict: everything read-only but /proc, /sys, /dev and the state
        "findmnt -rno TARGET | while read -r t; do case $t in "
        f"/proc|/proc/*|/sys|/sys/*|/dev|/dev/*|{home}) ;; "
        '*) mount -n -o remount,bind,ro "$t" ;; esac; done',
        # ProtectHome=yes: /root (and /home, /run/user) empty and read-only
        *hide_root(),
        "for d in /home /run/user; do [ -d $d ] && mount -n -t tmpfs -o ro tmpfs $d; done",
        "mount -n -o remount,ro /root",
        *stage,
        # PrivateTmp=yes
        "mount -n -t tmpfs -o mode=1777 tmpfs /tmp",
        "mount -n -t tmpfs -o mode=1777 tmpfs /var/tmp",
        *put_back,  # this test's venv and checkout, where /opt/jobtrail would be
        f"umask {options['UMask']}",
        f"cd {home}",
        f"exec setpriv --reuid={uid} --regid={uid} --clear-groups --no-new-privs "
        '--bounding-set=-all --inh-caps=-all -- "$@"',
    ]
    return "\n".join(steps)


class UnitRun:
    """``jobtrail serve`` started as deploy/jobtrail.service starts it."""

    def __init__(self, state: Path, uid: int, serve_args: str) -> None:
        options = unit_options()
        env = dict(kv.split("=", 1) for kv in shlex.split(options["Environment"]))
        env["JOBTRAIL_SERVE_ARGS"] = serve_args
        env["PATH"] = SYSTEMD_PATH
        exec_start = [
            word.replace("/opt/jobtrail/bin/", f"{VENV_BIN}/")
            for word in shlex.split(options["ExecStart"])
        ]
        command: list[str] = []
        for word in exec_start:  # systemd's $VAR: the value split at whitespace
            command += env[word[1:]].split() if word.startswith("$") else [word]
        script = _sandbox_script(state, uid, options)
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--", "sh", "-c", script, "sh", "env", "-i"]
            + [f"{k}={v}" for k, v in env.items()]
            + command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self, timeout: float) -> tuple[int, str]:
        """SIGTERM to the main process only (KillMode=mixed), then its exit code and stderr."""
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=10)


def _job(url: str, job_id: str) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()
    return answer


def _status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    need("unshare", "setpriv", "findmnt", package="util-linux mount")
    uid = free_uid()
    home = tmp_path / "state"
    home.mkdir(mode=0o700)
    os.chown(home, uid, uid)  # as StateDirectory= leaves it: the service user's
    yield home, uid


def test_serves_as_the_unit_runs_it_and_stops_gracefully(state: tuple[Path, int]) -> None:
    home, uid = state
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve_args = f"--port {port} --workers 1 --log-format json"
    run = UnitRun(home, uid, serve_args)
    try:
        wait_serving(url, run.process)
        status = _status_fields(run.process.pid)
        assert status["Uid"].split()[0] == str(uid) and status["NoNewPrivs"] == "1"
        assert int(status["CapBnd"], 16) == 0

        done = httpx.post(f"{url}/api/jobs", json={"type": "demo", "params": {"delay": 0.01}})
        done_id = done.json()["job_id"]
        wait_until(lambda: _job(url, done_id)["status"] == "completed", 30, "the demo job")
        # UMask=0077: nothing the service writes is readable by another user
        for path in home.rglob("*"):
            assert path.lstat().st_uid == uid, path
            assert path.is_symlink() or path.lstat().st_mode & 0o077 == 0, path

        # one job running (workers=1) and one pending when SIGTERM comes
        running = httpx.post(f"{url}/api/jobs", json={"type": "sleep", "params": {"seconds": 60}})
        running_id = running.json()["job_id"]
        wait_until(lambda: _job(url, running_id)["status"] == "running", 30, "the sleep job")
        pending = httpx.post(f"{url}/api/jobs", json={"type": "sleep", "params": {"seconds": 0.1}})
        pending_id = pending.json()["job_id"]
        started = time.monotonic()
        code, err = run.stop(timeout=float(unit_options()["TimeoutStopSec"]))
        stop_seconds = time.monotonic() - started
        # uvicorn re-raises the SIGTERM once it has stopped: systemd counts that a clean
        # exit (so Restart=on-failure does not restart it)
        assert code == -signal.SIGTERM, err
        entries = json_lines(err)
        assert entries[-1]["message"].startswith("Finished server process")
        assert stop_seconds < 15
    finally:
        run.kill()

    again = UnitRun(home, uid, serve_args)
    try:
        wait_serving(url, again.process)
        interrupted = _job(url, running_id)
        assert interrupted["status"] == "failed" and interrupted["error"] == SERVER_STOPPED
        recent = interrupted["recent_logs"]
        assert isinstance(recent, list)
        assert "job stopped: the server is shutting down" in [r["message"] for r in recent]
        # the pending job was kept and runs on the next start
        wait_until(lambda: _job(url, pending_id)["status"] == "completed", 30, "the pending job")
        code, err = again.stop(timeout=30)
        assert code == -signal.SIGTERM and json_lines(err)
    finally:
        again.kill()


# -- the container file ---------------------------------------------------------------------
def containerfile() -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Its instructions (continuations joined) and its ENV."""
    text = (DEPLOY / "Containerfile").read_text().replace("\\\n", " ")
    instructions = []
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            instructions.append((word, rest.strip()))
            if word == "ENV":
                env.update(kv.partition("=")[::2] for kv in shlex.split(rest))
    return instructions, env


def test_containerfile_copies_what_builds_jobtrail(tmp_path: Path) -> None:
    instructions, _ = containerfile()
    root = Path(__file__).parents[1]
    context = tmp_path / "image"
    for word, rest in instructions:
        if word == "COPY":
            *sources, target = rest.split()
            dest = context / target.lstrip("/")
            for source in sources:
                if target.endswith("/"):
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy(root / source, dest / Path(source).name)
                else:
                    shutil.copytree(
                        root / source, dest, ignore=shutil.ignore_patterns("__pycache__")
                    )
    built = subprocess.run(
        # as the image's `pip install /src` builds it: setuptools from the index (or pip's cache)
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(context / "src"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("jobtrail-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    installed = Path(__file__).parents[1] / "src"
    wanted = {  # the package's files as the checkout has them: web page, demo playbook, code
        p.relative_to(installed).as_posix()
        for p in installed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
    }
    assert wanted <= set(names), sorted(wanted - set(names))


def test_container_entrypoint_serves_as_its_user(state: tuple[Path, int]) -> None:
    need("tini", package="tini")
    home, uid = state
    instructions, env = containerfile()
    (entrypoint,) = [json.loads(rest) for word, rest in instructions if word == "ENTRYPOINT"]
    assert ("USER", "jobtrail") in instructions
    assert entrypoint[entrypoint.index("--home") + 1] == env["JOBTRAIL_HOME"]
    assert ("VOLUME", env["JOBTRAIL_HOME"]) in instructions
    assert ("WORKDIR", env["JOBTRAIL_HOME"]) in instructions
    port = free_port()
    command = list(entrypoint)  # on the port picked here: tests run side by side
    command[command.index("--port") + 1] = str(port)
    base = {"PATH": f"{VENV_BIN}:{SYSTEMD_PATH}", **env}
    base["TINI_SUBREAPER"] = "1"  # tini is not PID 1 here: it reaps as a subreaper instead
    user = as_user(uid, home, env["JOBTRAIL_HOME"])
    secret = entrypoint[entrypoint.index("--token-file") + 1]

    refused = subprocess.run(user + command, env=base, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2  # no secret mounted
    assert f"cannot read --token-file {secret}" in json_lines(refused.stderr)[-1]["message"]

    token = home.with_name("token")  # as `podman run --secret ...,uid=UID,mode=0400` mounts it
    token.write_text("s3cret-token\n")
    os.chown(token, uid, uid)
    token.chmod(0o400)
    process = subprocess.Popen(
        _with_secret(token, secret) + user + command,
        env=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, process)
        assert httpx.get(f"{url}/api/jobs", timeout=10).status_code == 401
        ok = httpx.get(
            f"{url}/api/jobs", headers={"Authorization": "Bearer s3cret-token"}, timeout=10
        )
        assert ok.status_code == 200
        # PID 1 (tini, here the process started) and the server hold no copy in /proc
        tree = [process.pid, *(p.pid for p in psutil.Process(process.pid).children(True))]
        assert not [pid for pid in tree if b"s3cret-token" in _environ(pid)], tree
        process.send_signal(signal.SIGTERM)  # to tini, which passes it on
        _, err = process.communicate(timeout=30)
        assert process.returncode == 128 + signal.SIGTERM, err  # tini: jobtrail's SIGTERM
        assert any(e["logger"] == "jobtrail.serve" for e in json_lines(err))
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def _with_secret(token: Path, target: str) -> list[str]:
    """The command that follows, in a mount namespace with ``token`` at ``target``, as the
    engine mounts a secret (on a tmpfs of the namespace's own over the folder's parent: the
    host's /run is left as it is), then ``as_user``'s namespace below it."""
    folder = Path(target).parent
    script = "\n".join(
        [
            "set -e",
            "mount -n --make-rprivate /",
            f"mount -n -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(folder.parent))}",
            f"mkdir {shlex.quote(str(folder))} && touch {shlex.quote(target)}",
            f"mount -n --bind {shlex.quote(str(token))} {shlex.quote(target)}",
            'exec "$@"',
        ]
    )
    return ["unshare", "--mount", "--", "sh", "-c", script, "sh"]


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # it ended meanwhile
        return b""


def test_json_log_line_keeps_a_traceback_on_its_line() -> None:
    record = logging.LogRecord(
        "jobtrail.x", logging.ERROR, __file__, 1, "failed: %s", ("db",), None
    )
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    line = JsonLineFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed: db" and entry["level"] == "ERROR"
    assert entry["logger"] == "jobtrail.x" and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]
    )
    assert entry["exc"].startswith("Traceback") and "RuntimeError: boom" in entry["exc"]
