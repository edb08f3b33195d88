"""What a job type declares for ``--sandbox`` (``SandboxPaths``), in both modes.

In a folder under /tmp (which the sandbox replaces by its own), a job type declares one
folder to read and one to write; beside them lies a folder it does not declare. Under
``serve --job-user --sandbox`` (local) and ``jobtrail worker --job-user --sandbox``
(distributed), its job reads the one and writes the other, and can neither write the
read-only one nor see the undeclared one. A type that declares nothing sees neither folder
in distributed mode (each job's namespace binds its own type's paths), and both in local
mode (a pool worker binds every type's). A path the sandbox cannot bind or the job user
cannot reach is refused at start, in one line naming the type and the path.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from jobtrail import SandboxPaths, job
from jobtrail.client import Client
from jobtrail.isolation import prepare
from jobtrail.mcp._render import type_lines
from support.live import live_server, server_config
from support.modes import MODES
from support.redis_server import TESTS, WORKER_COMMAND, Workers, redis_server
from support.sandbox import as_root_reachable, job_user, need, serve_as_root

pytestmark = pytest.mark.timeout(120)
MODULE = "sandbox_paths_jobs"
JOBS = '''
    """Job types that declare sandbox paths (written by tests/test_sandbox_paths.py)."""
    import os
    from pathlib import Path
    from jobtrail import SandboxPaths, job

    READ, WRITE, SIBLING = {read!r}, {write!r}, {sibling!r}

    def _tried(action):
        try:
            return action()
        except OSError as exc:
            return exc.strerror

    @job("declared_paths", sandbox_paths=SandboxPaths(read=(READ,), write=(WRITE,)))
    def declared_paths(name: str) -> dict:
        """Reads its read path, writes its write path, tries the rest."""
        return probe(name)

    @job("undeclared_paths")
    def undeclared_paths(name: str) -> dict:
        """Tries the same, declaring nothing."""
        return probe(name)

    def probe(name):
        return {{
            "read": _tried(lambda: Path(READ, "config").read_text()),
            "write": _tried(lambda: Path(WRITE, name).write_text("written") and "ok"),
            "write_read_only": _tried(lambda: Path(READ, name).write_text("x") and "ok"),
            "sibling": _tried(lambda: os.listdir(SIBLING)),
        }}
'''


@dataclass
class Area:
    """The folder under /tmp: ``read`` and ``write`` (both the job user's), ``sibling``, and
    the job module's folder ``jobs``."""

    base: Path

    def __getattr__(self, name: str) -> Path:
        return self.base / name


@pytest.fixture(scope="module")
def area() -> Iterator[Area]:
    need("unshare", "setpriv", package="util-linux")
    need("bwrap", package="bubblewrap")
    base = Path(tempfile.mkdtemp(prefix="jt-sandbox-paths-", dir="/tmp"))
    try:
        base.chmod(0o755)
        folders = Area(base)
        for name in ("read", "write", "sibling", "jobs"):
            (base / name).mkdir(mode=0o755)
        (folders.read / "config").write_text("from the host")
        (folders.sibling / "private").write_text("not declared")
        user = pwd.getpwnam(job_user())
        for writable in (folders.read, folders.write):  # on the host: only the sandbox stops it
            os.chown(writable, user.pw_uid, user.pw_gid)
        paths = {"read": str(folders.read), "write": str(folders.write)}
        code = JOBS.format(sibling=str(folders.sibling), **paths)
        (folders.jobs / f"{MODULE}.py").write_text(textwrap.dedent(code))
        yield folders
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class Run:
    """A sandboxed server: ``run(job type, name)`` submits a job and gives it ended."""

    url: str
    ended: Callable[[str, str], dict[str, Any]]

    def __call__(self, job_type: str, name: str) -> dict[str, Any]:
        return self.ended(job_type, name)


@pytest.fixture(scope="module", params=MODES)
def run(
    request: pytest.FixtureRequest, area: Area, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """A sandboxed server in each mode; ``run`` submits a job and waits for its end."""
    if request.param == "local":
        with _local(area, tmp_path_factory) as running:
            yield running
    else:
        with _distributed(area, tmp_path_factory) as running:
            yield running


@contextlib.contextmanager
def _local(area: Area, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    home = tmp_path_factory.mktemp("local") / "home"
    options = ["--workers", "1", "--job-user", job_user(), "--sandbox"]
    options += ["--jobs-module", MODULE, "--app-dir", str(area.jobs)]
    with serve_as_root(home, *options, cwd=Path(TESTS)) as server:

        def run(job_type: str, name: str) -> dict[str, Any]:
            return server.run(job_type, name=name)

        yield Run(server.url, run)


@contextlib.contextmanager
def _distributed(area: Area, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    sys.path.insert(0, str(area.jobs))  # the API server here imports the module too
    try:
        with redis_server(tmp_path_factory.mktemp("redis")) as rs:
            workers = Workers(rs.url, count=0)
            try:
                command = [sys.executable, "-m", *WORKER_COMMAND, "--backend", rs.url]
                command += ["--jobs-module", MODULE, "--job-user", job_user(), "--sandbox"]
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(area.jobs), *sys.path])}
                env.pop("JOBTRAIL_BACKEND", None)
                workers.procs.append(
                    subprocess.Popen([*as_root_reachable(), *command], env=env, cwd=TESTS)
                )
                workers.wait_ready(1)
                config = server_config(tmp_path_factory.mktemp("home"), job_modules=(MODULE,))
                with live_server(replace(config, backend=rs.url)) as live:

                    def run(job_type: str, name: str) -> dict[str, Any]:
                        job_id = live.submit(job_type, name=name)["job_id"]
                        return live.wait(job_id, timeout=60)

                    yield Run(live.url, run)
            finally:
                workers.stop()
    finally:
        sys.path.remove(str(area.jobs))


def test_a_job_reads_and_writes_what_its_type_declares_and_nothing_beside(
    run: Run, area: Area
) -> None:
    name = f"out-{uuid.uuid4().hex[:8]}"
    done = run("declared_paths", name)
    assert done["status"] == "completed", done
    found = done["result"]
    assert found["read"] == "from the host", found
    assert found["write"] == "ok" and (area.write / name).read_text() == "written", found
    assert found["write_read_only"] == "Read-only file system", found
    assert found["sibling"] == "No such file or directory", found  # its /tmp has no such folder
    assert not (area.read / name).exists()


def test_the_client_and_the_mcp_tool_show_what_a_type_declares(run: Run, area: Area) -> None:
    """``GET /api/job-types`` through the client, and ``list_job_types``'s lines of it."""
    with Client(run.url) as client:
        types = {t.name: t for t in client.job_types()}
    declared, read, write = types["declared_paths"], str(area.read), str(area.write)
    assert (declared.sandbox_read, declared.sandbox_write) == ((read,), (write,))
    assert types["undeclared_paths"].sandbox_read == types["undeclared_paths"].sandbox_write == ()
    assert f"  sandbox: reads {read}; writes {write}" in type_lines(declared)
    assert not any(line.startswith("  sandbox:") for line in type_lines(types["undeclared_paths"]))


def test_a_type_that_declares_nothing_gets_them_only_from_a_shared_pool_worker(
    run: Run, area: Area, request: pytest.FixtureRequest
) -> None:
    """Distributed: each job's own namespace, so only its type's paths. Local: a pool worker
    runs every type, so it binds every type's paths (the README says so)."""
    done = run("undeclared_paths", f"out-{uuid.uuid4().hex[:8]}")
    assert done["status"] == "completed", done
    found = done["result"]
    assert found["sibling"] == "No such file or directory", found
    if request.node.callspec.params["run"] == "local":
        assert (found["read"], found["write"]) == ("from the host", "ok"), found
    else:
        missing = "No such file or directory"
        assert (found["read"], found["write"]) == (missing, missing), found


# -- refused at start, in one line --------------------------------------------------------------
def _module(
    folder: Path, name: str, read: tuple[str, ...] = (), write: tuple[str, ...] = ()
) -> Path:
    """A job module, in a folder of its own, whose type ``refused`` declares these paths."""
    folder.mkdir(mode=0o755, parents=True)
    declared = f"SandboxPaths(read={read!r}, write={write!r})"
    code = "from jobtrail import SandboxPaths, job\n\n"
    code += f"@job('refused', sandbox_paths={declared})\ndef refused() -> None:\n    pass\n"
    (folder / f"{name}.py").write_text(code)
    return folder


@pytest.fixture
def refusals(area: Area) -> Iterator[Path]:
    """A folder under /tmp that the job user can enter (``area``'s is its own)."""
    folder = area.base / f"refusals-{uuid.uuid4().hex[:8]}"
    folder.mkdir(mode=0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _refused(command: list[str], cwd: Path) -> str:
    done = subprocess.run(
        [*as_root_reachable(), *command], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[-1]


def test_serve_refuses_a_path_in_its_home_and_one_the_user_cannot_write(refusals: Path) -> None:
    home = refusals / "home"
    serve = [sys.executable, "-m", "jobtrail.cli", "serve", "--home", str(home), "--port", "0"]
    serve += ["--job-user", job_user(), "--sandbox", "--jobs-module"]
    in_home = _module(refusals / "a", "in_home", read=(str(home / "logs"),))
    said = _refused([*serve, "in_home", "--app-dir", str(in_home)], Path(TESTS))
    assert f"job type 'refused': sandbox path {home / 'logs'} overlaps {home}" in said, said
    assert not home.exists(), "refused before the home was made"

    roots = refusals / "roots"  # root's, 0755: the job user may read it, not write
    roots.mkdir(mode=0o755)
    not_writable = _module(refusals / "b", "not_writable", write=(str(roots),))
    said = _refused([*serve, "not_writable", "--app-dir", str(not_writable)], Path(TESTS))
    expected = f"job type 'refused': the job user '{job_user()}' cannot write sandbox path {roots}"
    assert said.endswith(f"{expected}: make it writable for it (chown {job_user()} {roots})"), said


def test_worker_refuses_a_missing_path_and_one_the_user_cannot_reach(refusals: Path) -> None:
    worker = [sys.executable, "-m", *WORKER_COMMAND, "--backend", "redis://127.0.0.1:1/0"]
    worker += ["--job-user", job_user(), "--sandbox", "--jobs-module"]
    missing = refusals / "nowhere"
    folder = _module(refusals / "c", "missing_path", read=(str(missing),))
    said = _refused([*worker, "missing_path", "--app-dir", str(folder)], folder)
    assert said.endswith(f"job type 'refused': sandbox path {missing} does not exist"), said

    closed = refusals / "closed"  # 0700, root's: the job user cannot enter it
    (closed / "inside").mkdir(parents=True)
    closed.chmod(0o700)
    folder = _module(refusals / "d", "unreachable", read=(str(closed / "inside"),))
    said = _refused([*worker, "unreachable", "--app-dir", str(folder)], folder)
    expected = f"job type 'refused': the job user '{job_user()}' cannot read sandbox path"
    assert f"{expected} {closed / 'inside'}: open up {closed} (chmod o+x {closed})" in said, said


def test_a_declaration_is_checked_when_registered_and_ignored_outside_the_sandbox(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="job 'relative': sandbox_paths read 'srv/config' is not"):
        job("relative", sandbox_paths=SandboxPaths(read=("srv/config",)))
    with pytest.raises(ValueError, match="job 'tilde': sandbox_paths write '~/app' is not"):
        job("tilde", sandbox_paths=SandboxPaths(write=("~/app",)))
    with pytest.raises(ValueError, match="must be a tuple of paths, not the string '/srv'"):
        job("comma", sandbox_paths=SandboxPaths(read="/srv"))  # type: ignore[arg-type]
    job("nowhere", sandbox_paths=SandboxPaths(read=(str(tmp_path / "nowhere"),)))(lambda: None)
    try:  # a server without --sandbox starts as before: no path is looked at
        assert not prepare(None, False, home=tmp_path, playbooks=None, sys_path=()).active
    finally:
        from jobtrail import registry

        registry._REGISTRY.pop("nowhere", None)
