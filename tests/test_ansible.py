"""The ansible_playbook job: terminal parity, failure digests, secrets, paths, cancel, filters.

Real ansible-runner and ansible-playbook against localhost (connection local). The playbooks
are in tests/playbooks; one server serves the whole module and each job runs once (cached).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import re
import stat
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from jobtrail.errors import InvalidParams
from jobtrail.jobtypes.ansible.digest import split_warnings
from jobtrail.jobtypes.ansible.events import EventTranslator, Progress, estimate_plan
from jobtrail.jobtypes.ansible.job import (
    DEMO_DIR,
    _check,
    _ini,
    _write_private,
    host_list,
    list_playbooks,
    playbooks_dir,
    playbooks_hint,
    resolve_inside,
)
from jobtrail.secrets import Masker, secret_values
from jobtrail.worker.runtime import PLAYBOOKS_ENV
from support.live import Live, live_server, server_config
from support.waits import pid_gone, wait_until

pytestmark = pytest.mark.timeout(120)

PLAYBOOKS = Path(__file__).parent / "playbooks"
VENV_BIN = Path(sys.executable).parent
SECRETS = {"db_password": "hunter2-very-secret", "api_token": "tok-5f1e9c", "db_user": "bob"}
_TIMING = re.compile(r'"(delta|start|end)": "[^"]*"')
# ansible-runner 2.4 wraps ansible-core 2.19's Display methods in its callback plugin, so
# core's deprecation "deprecator" lookup sees the wrapper's frame and prints "This feature will
# be removed in the future." where a terminal prints "... from ansible-core version 2.23.": the
# same line, with a different last sentence. Compared without that sentence.
_REMOVAL = re.compile(r"(\[DEPRECATION WARNING\]: .*?) This feature will be removed .*$")


# -- fixtures and helpers ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    saved = os.environ.get(PLAYBOOKS_ENV)
    try:
        config = server_config(tmp_path_factory.mktemp("home"), playbooks=PLAYBOOKS)
        with live_server(config) as running:
            yield running
    finally:  # the service exports the dir to os.environ: don't leak it into other modules
        if saved is None:
            os.environ.pop(PLAYBOOKS_ENV, None)
        else:
            os.environ[PLAYBOOKS_ENV] = saved


@pytest.fixture(scope="module")
def run(ans: Live) -> Callable[..., dict[str, Any]]:
    """Run a playbook as a job once per set of params; later calls get the finished job."""
    done: dict[str, dict[str, Any]] = {}

    def run_job(playbook: str, **params: Any) -> dict[str, Any]:
        key = json.dumps([playbook, params], sort_keys=True)
        if key not in done:
            job = ans.submit("ansible_playbook", playbook=playbook, **params)
            done[key] = ans.wait(job["job_id"], timeout=90)
        return done[key]

    return run_job


def terminal_output(playbook: Path, inventory: str = "localhost,") -> str:
    """What ansible-playbook prints on an 80-column terminal (a pty), colour off."""
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    command = [
        str(VENV_BIN / "ansible-playbook"),
        "-i",
        inventory,
        "-e",
        "ansible_connection=local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        str(playbook),
    ]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        command, cwd=playbook.parent, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        proc.wait(timeout=60)
    return b"".join(chunks).decode("utf-8", "replace")


def normalise(text: str) -> list[str]:
    """Lines without blank ones, whitespace runs collapsed, timing values blanked."""
    lines = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = " ".join(raw.split())
        if line:
            lines.append(_REMOVAL.sub(r"\1", _TIMING.sub(r'"\1": "…"', line)))
    return lines


def in_order(expected: list[str], got: list[str]) -> int:
    """How many of ``expected`` appear in ``got`` in the same order (greedy subsequence)."""
    found, position = 0, 0
    for line in expected:
        try:
            position = got.index(line, position) + 1
        except ValueError:
            continue
        found += 1
    return found


def job_lines(live: Live, job_id: str) -> list[str]:
    return normalise("\n".join(r["message"] for r in live.all_records(job_id)))


def messages(live: Live, job_id: str, **query: Any) -> list[dict[str, Any]]:
    return list(live.logs(job_id, format="json", tail=1000, **query)["logs"])


# -- parity ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "playbook", ["parity.yml", "failing.yml", "syntax_error.yml", "missing_role.yml"]
)
def test_job_log_holds_every_terminal_line_in_order(
    ans: Live, run: Callable[..., dict[str, Any]], playbook: str
) -> None:
    terminal = normalise(terminal_output(PLAYBOOKS / playbook))
    job = run(playbook)
    got = job_lines(ans, job["job_id"])
    found = in_order(terminal, got)
    missing = [line for line in terminal if line not in got]
    assert found == len(terminal), (
        f"{found}/{len(terminal)} terminal lines in order; missing {missing}"
    )
    assert len(terminal) >= 3
    raw = [r["message"] for r in ans.all_records(job["job_id"])]
    assert not any("\x1b" in m or "\r" in m for m in raw), "no ANSI codes, no carriage returns"


def test_parity_run_levels_fields_and_progress(
    ans: Live, run: Callable[..., dict[str, Any]]
) -> None:
    job = run("parity.yml")
    assert job["status"] == "completed", job
    assert job["progress"] == 100.0
    assert job["current_step"] == "Parity play two: Show the fact"
    assert job["result"]["stats"]["localhost"] == {
        "ok": 10,
        "changed": 2,
        "failed": 0,
        "unreachable": 0,
        "skipped": 1,
        "rescued": 0,
        "ignored": 1,
    }
    records = [r for r in ans.all_records(job["job_id"]) if r["logger"] == "ansible"]
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_event.setdefault(record["event"], []).append(record)
    assert {r["level"] for r in by_event["ok"] + by_event["changed"] + by_event["skipped"]} == {
        "INFO"
    }
    # ansible-core releases differ in the deprecation warnings they add around ours, and
    # in which event carries a task's warning: every warning is a WARNING record
    assert by_event["warning"] and {r["level"] for r in by_event["warning"]} == {"WARNING"}
    (ignored,) = by_event["failed"]
    assert (ignored["level"], ignored["rc"], ignored["ignored"]) == ("WARNING", 3, True)
    assert ignored["message"].endswith("...ignoring")
    (skipped,) = by_event["skipped"]
    assert (skipped["task"], skipped["host"], skipped["message"]) == (
        "Skip me",
        "localhost",
        "skipping: [localhost]",
    )
    multi = next(r for r in by_event["ok"] if r["task"] == "Multi-line output")
    assert multi["message"].splitlines()[0] == "ok: [localhost] => {"
    assert '"third: alpha,beta,gamma"' in multi["message"], "multi-line output stays one record"
    assert by_event["recap"][0]["message"].startswith("PLAY RECAP")


def test_event_filters_combine_with_level_and_tail(
    ans: Live, run: Callable[..., dict[str, Any]]
) -> None:
    job_id = run("parity.yml")["job_id"]
    ok = messages(ans, job_id, host="localhost", event="ok")
    assert len(ok) == 10 and all((r["host"], r["event"]) == ("localhost", "ok") for r in ok)
    loop = messages(ans, job_id, task="Loop over items", level="INFO")
    assert [r["event"] for r in loop] == ["task_start", "ok", "ok", "ok"]
    assert [r["message"].splitlines()[0] for r in loop[1:]] == [
        f"ok: [localhost] => (item={item}) => {{" for item in ("alpha", "beta", "gamma")
    ]
    assert messages(ans, job_id, event="failed", level="ERROR") == []
    (failed,) = messages(ans, job_id, event="failed", level="WARNING")
    assert failed["task"] == "Fail but ignore"
    newest = ans.logs(job_id, format="json", event="ok", host="localhost", tail=2)["logs"]
    assert [r["task"] for r in newest] == ["Set a fact", "Show the fact"]
    # Which event carries a warning's text depends on ansible-core's release and on timing
    # (warnings from a forked task worker reach the callback asynchronously): check the
    # filter, not the placement.
    warnings = messages(ans, job_id, event="warning", level="WARNING")
    assert warnings and all(r["event"] == "warning" for r in warnings)
    assert messages(ans, job_id, host="nosuchhost") == []


def test_inventory_file_tags_skip_tags_check_limit_and_verbosity_reach_ansible(
    ans: Live, run: Callable[..., dict[str, Any]]
) -> None:
    job = run(
        "groups.yml",
        inventory="inventory.ini",
        tags="show",
        skip_tags=["noisy"],
        check=True,
        limit="localhost",
        verbosity=1,
    )
    assert job["status"] == "completed", job
    ok = [r["message"] for r in messages(ans, job["job_id"], event="ok")]
    assert ok == [
        'ok: [localhost] => {\n    "msg": "localhost is in webservers"\n}',
        'ok: [localhost] => {\n    "msg": "check mode is True"\n}',
    ]
    verbose = [r["message"] for r in messages(ans, job["job_id"], event="verbose")]
    assert any("config file" in line for line in verbose), "-v prints which config it uses"
    assert job["result"]["stats"]["localhost"]["ok"] == 2


# -- failures ----------------------------------------------------------------------------------
def test_failed_task_digest_names_task_host_message_and_rc(
    ans: Live, run: Callable[..., dict[str, Any]]
) -> None:
    job = run("failing.yml")
    assert job["status"] == "failed"
    assert job["error"] == (
        'Task "Start the service" failed on localhost: Error: port 443 already in use (rc=7)'
    )
    failure = job["failure"]
    assert failure["play"] == "Failing play"
    assert failure["task"] == "Start the service"
    assert failure["host"] == "localhost"
    assert failure["message"] == "Error: port 443 already in use"
    assert failure["rc"] == 7
    assert failure["stderr"] == "Error: port 443 already in use"
    assert job["current_step"] == "Failing play: Start the service"
    (fatal,) = messages(ans, job["job_id"], event="failed", level="ERROR")
    assert (fatal["task"], fatal["host"], fatal["rc"]) == ("Start the service", "localhost", 7)
    assert "fatal: [localhost]: FAILED!" in fatal["message"]
    assert "Never reached" not in "\n".join(job_lines(ans, job["job_id"]))


@pytest.mark.parametrize(
    ("playbook", "inventory", "error"),
    [
        (
            "syntax_error.yml",
            "localhost,",
            # the wording of the parser's message differs between ansible-core releases
            r"^Syntax error in playbook syntax_error\.yml: .+ \(rc=4\)$",
        ),
        (
            "missing_role.yml",
            "localhost,",
            r"^Playbook missing_role\.yml could not run: .*the role 'no_such_role_here' was not"
            r" found.* \(rc=1\)$",
        ),
        (
            "unreachable.yml",
            "no-such-host.invalid,",
            r'^Host no-such-host\.invalid unreachable in task "Ping it": .*Could not resolve '
            r"hostname no-such-host\.invalid",
        ),
    ],
)
def test_other_failures_have_readable_digests(
    ans: Live, run: Callable[..., dict[str, Any]], playbook: str, inventory: str, error: str
) -> None:
    job = run(playbook, inventory=inventory)
    assert job["status"] == "failed"
    assert re.search(error, job["error"]), job["error"]
    assert "\n" not in job["error"]
    errors = messages(ans, job["job_id"], level="ERROR")
    assert any(r["logger"] == "ansible" for r in errors)


# -- secrets -----------------------------------------------------------------------------------
def test_no_log_and_secret_extra_vars_are_masked(
    ans: Live, run: Callable[..., dict[str, Any]]
) -> None:
    job = run("secrets.yml", extra_vars=SECRETS)
    assert job["status"] == "failed"
    assert job["error"] == 'Task "Careless failure" failed on localhost: bad token ******** (rc=2)'
    everything = json.dumps([job, ans.all_records(job["job_id"])])
    for secret in ("hunter2-very-secret", "tok-5f1e9c"):
        assert secret not in everything
    assert job["params"]["extra_vars"]["db_password"] == "********"
    debug = messages(ans, job["job_id"], task="Careless debug", event="ok")[0]["message"]
    assert '"msg": "connecting with ******** as bob"' in debug, "non-secret values stay readable"
    (quiet,) = messages(
        ans, job["job_id"], task="Use the password quietly", host="localhost", level="INFO"
    )
    assert quiet["message"] == "changed: [localhost]", "no_log shows only what the terminal shows"
    assert quiet["event"] == "changed"


def test_masker_and_private_files(tmp_path: Path) -> None:
    values = secret_values(
        {
            "password": 'p@ss"word',
            "nested": {"api_key": "abcd1234", "user": "visible"},
            "pin": "123",
        }
    )
    mask = Masker(values)
    assert mask('login p@ss"word / "p@ss\\"word" abcd1234 visible') == (
        'login ******** / "********" ******** visible'
    )
    assert mask("ok=123") == "ok=123"  # too short to be told apart from ordinary text
    path = _write_private(tmp_path / "private" / "env" / "extravars", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


# -- params ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"playbook": "../test_ansible.py"}, "resolves outside the playbooks directory"),
        ({"playbook": "../../../../../../etc/passwd"}, "resolves outside the playbooks directory"),
        ({"playbook": "/etc/passwd"}, "must be a path relative to the playbooks directory"),
        ({"playbook": "missing.yml"}, "no file 'missing.yml' in the playbooks directory"),
        ({"playbook": "parity.yml", "inventory": "ok-host,bad host,"}, "not a host name"),
        ({"playbook": "parity.yml", "inventory": "../conftest.py"}, "resolves outside"),
        ({"playbook": "parity.yml", "verbosity": 5}, "verbosity"),
    ],
)
def test_bad_params_are_refused_before_queuing(
    ans: Live, params: dict[str, Any], problem: str
) -> None:
    before = len(ans.server.list(job_type="ansible_playbook", limit=1000))
    response = ans.http.post("/api/jobs", json={"type": "ansible_playbook", "params": params})
    assert response.status_code == 422, response.text
    assert problem in response.text
    assert len(ans.server.list(job_type="ansible_playbook", limit=1000)) == before


BOOKS_HERE = (
    "failing.yml, fleet.yml, gated.yml, groups.yml, missing_role.yml, parity.yml, results.yml, "
    "secrets.yml, slow.yml, syntax_error.yml, unreachable.yml"
)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({}, "playbook: required parameter is missing"),
        ({"playbook": "site.yml"}, "playbook: no file 'site.yml' in the playbooks directory"),
    ],
)
def test_a_missing_or_unknown_playbook_is_answered_with_those_that_exist(
    ans: Live, params: dict[str, Any], problem: str
) -> None:
    response = ans.http.post("/api/jobs", json={"type": "ansible_playbook", "params": params})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert problem in detail
    assert detail.endswith(f"; playbooks in {PLAYBOOKS.resolve()}: {BOOKS_HERE}"), detail


def test_playbook_is_required_in_the_params_schema(ans: Live) -> None:
    types = {t["name"]: t for t in ans.http.get("/api/job-types").json()}
    schema = types["ansible_playbook"]["params_schema"]
    assert "playbook" in schema["required"] and "default" not in schema["properties"]["playbook"]


def test_get_playbooks_lists_the_directory(ans: Live) -> None:
    found = ans.http.get("/api/playbooks")
    assert found.status_code == 200
    assert found.json() == {"playbooks": BOOKS_HERE.split(", "), "directory": str(PLAYBOOKS)}


def test_playbook_listing_skips_what_is_not_a_playbook_and_is_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "books"
    for name in ("roles/web/tasks/main.yml", "group_vars/all.yml", ".git/x.yml"):
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text("- name: a task list, not a playbook\n")
    (base / "inventory.yml").write_text("all:\n  hosts: {web1: {}}\n")
    (base / "notes.txt").write_text("- not yaml\n")
    (base / "deploy").mkdir()
    (base / "deploy" / "app.yaml").write_text("---\n# deploy\n\n- hosts: all\n")
    assert list_playbooks(base) == ["deploy/app.yaml"]
    for i in range(25):
        (base / f"site{i:02d}.yml").write_text("- hosts: all\n")
    monkeypatch.setenv(PLAYBOOKS_ENV, str(base))
    hint = playbooks_hint()
    shown = ", ".join(["deploy/app.yaml", *(f"site{i:02d}.yml" for i in range(19))])
    assert hint == f"playbooks in {base.resolve()}: {shown} and 6 more"
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(PLAYBOOKS_ENV, str(empty))
    assert playbooks_hint() == f"there are no playbooks in {empty.resolve()}"


def test_paths_and_hosts_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "books"
    base.mkdir()
    (base / "ok.yml").write_text("- hosts: all\n")
    (tmp_path / "outside.yml").write_text("- hosts: all\n")
    (base / "escape.yml").symlink_to(tmp_path / "outside.yml")
    assert resolve_inside(base, "ok.yml", "playbook") == (base / "ok.yml").resolve()
    with pytest.raises(ValueError, match="outside"):
        resolve_inside(base, "escape.yml", "playbook")
    assert host_list("localhost,") == ["localhost"]
    assert host_list("web1, web2:2222,") == ["web1", "web2:2222"]
    assert host_list("hosts.ini") is None
    with pytest.raises(ValueError, match="not a host name"):
        host_list("web1 ansible_connection=local,")
    assert _ini(["localhost", "web1"]).splitlines() == [
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}",
        "web1",
    ]
    monkeypatch.delenv(PLAYBOOKS_ENV, raising=False)
    assert playbooks_dir() == DEMO_DIR
    values = {"playbook": "demo.yml", "inventory": "localhost,"}
    assert _check(values) == values
    with pytest.raises(InvalidParams, match="no file"):
        _check({"playbook": "parity.yml", "inventory": "localhost,"})


def test_module_imports_and_fails_readably_without_ansible_runner() -> None:
    code = (
        "import sys; sys.modules['ansible_runner'] = None\n"
        "import jobtrail.jobtypes.ansible.job as a\n"
        "from jobtrail.errors import JobFailed\n"
        "try:\n    a.ansible_playbook('demo.yml')\nexcept JobFailed as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "ansible-runner, which is not installed" in out.stdout
    assert "pip install 'jobtrail[ansible]'" in out.stdout


# -- cancel ------------------------------------------------------------------------------------
def test_cancel_stops_ansible_playbook_and_all_it_started(ans: Live) -> None:
    job = ans.submit("ansible_playbook", playbook="slow.yml", extra_vars=SECRETS)
    job_id = job["job_id"]
    wait_until(
        lambda: messages(ans, job_id, task="Sleep for a long time", event="task_start"),
        timeout=60,
        what="the long task started",
    )
    worker = psutil.Process(ans.server.execution.running_pids()[job_id])

    def tree() -> list[psutil.Process]:
        return list(worker.children(recursive=True))

    def cmdline(proc: psutil.Process) -> list[str]:
        """Its command line; none for one that exited meanwhile (a zombie has none to read)."""
        try:
            return list(proc.cmdline())
        except psutil.Error:
            return []

    wait_until(
        lambda: any(cmdline(p)[:2] == ["sleep", "60"] for p in tree()),
        timeout=30,
        what="sleep 60 running",
    )
    procs = tree()
    playbooks = [p for p in procs if any("ansible-playbook" in part for part in cmdline(p))]
    assert playbooks, "ansible-playbook runs as a descendant of the worker"
    argv = playbooks[0].cmdline()
    assert not any(secret in " ".join(argv) for secret in SECRETS.values() if len(secret) > 3)
    extravars = Path(next(a[1:] for a in argv if a.startswith("@") and a.endswith("extravars")))
    assert stat.S_IMODE(extravars.stat().st_mode) == 0o600
    assert stat.S_IMODE(extravars.parent.parent.stat().st_mode) == 0o700
    running = ans.job(job_id)
    assert running["current_step"] == "Slow play: Sleep for a long time"
    assert 0 < running["progress"] < 100

    started = time.monotonic()
    assert ans.http.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    assert ans.wait(job_id, timeout=30)["status"] == "cancelled"
    for proc in [*procs, worker]:
        wait_until(lambda proc=proc: pid_gone(proc.pid), timeout=15, what=f"pid {proc.pid} gone")
    assert time.monotonic() - started < 15
    assert not extravars.parent.parent.exists(), "the private data dir is removed"
    wait_until(lambda: ans.server.health().workers_alive == 2, what="pool back to full size")


# -- the bundled demo --------------------------------------------------------------------------
def test_bundled_demo_playbook_runs_with_terminal_parity(tmp_path: Path) -> None:
    saved = os.environ.get(PLAYBOOKS_ENV)
    try:
        with live_server(server_config(tmp_path / "home", playbooks=DEMO_DIR)) as live:
            job = live.submit("ansible_playbook", playbook="demo.yml")  # as `jobtrail demo`
            terminal = normalise(terminal_output(DEMO_DIR / "demo.yml"))
            done = live.wait(job["job_id"], timeout=90)
            assert done["status"] == "completed", done
            got = job_lines(live, done["job_id"])
            assert in_order(terminal, got) == len(terminal)
            assert [r["message"] for r in messages(live, done["job_id"], level="WARNING")] == [
                "[WARNING]: Could not match supplied host pattern, ignoring: webservers"
            ]
            handler = messages(live, done["job_id"], task="Count the files", event="ok")
            assert "3 files were written" in handler[0]["message"]
            assert len(messages(live, done["job_id"], event="changed")) == 5  # 1 + 3 items + 1
    finally:
        if saved is None:
            os.environ.pop(PLAYBOOKS_ENV, None)
        else:
            os.environ[PLAYBOOKS_ENV] = saved


# -- units: events to records ------------------------------------------------------------------
def test_warning_blocks_are_split_off_in_place() -> None:
    text = (
        "[WARNING]: first\n[DEPRECATION WARNING]: old.\nOrigin: x.yml:3:1\n\n3 when: x\n"
        "  ^ column 1\n\nok: [localhost] => {\n}\n[WARNING]: trailing"
    )
    assert split_warnings(text) == [
        (
            True,
            "[WARNING]: first\n[DEPRECATION WARNING]: old.\nOrigin: x.yml:3:1\n\n"
            "3 when: x\n  ^ column 1",
        ),
        (False, "ok: [localhost] => {\n}"),
        (True, "[WARNING]: trailing"),
    ]


def test_loop_failure_digest_uses_the_failed_item_and_progress_is_monotone() -> None:
    translator = EventTranslator(Masker([]), estimate_plan([{"hosts": "all", "tasks": [{}, {}]}]))
    base = {"play": "P", "task": "T", "host": "h1"}
    events = [
        {"event": "playbook_on_play_start", "event_data": {"play": "P"}},
        {"event": "playbook_on_task_start", "event_data": {"play": "P", "task": "T"}},
        {
            "event": "runner_item_on_failed",
            "event_data": {
                **base,
                "res": {"msg": "non-zero return code", "stderr": "boom", "rc": 3},
            },
            "stdout": "failed: [h1] (item=3) => {}",
        },
        {
            "event": "runner_on_failed",
            "event_data": {**base, "res": {"msg": "One or more items failed", "results": [{}]}},
            "stdout": "fatal: [h1]: FAILED! => {}",
        },
        {"event": "playbook_on_stats", "event_data": {"failures": {"h1": 1}, "ok": {"h1": 2}}},
    ]
    seen = []
    levels = []
    for event in events:
        levels += [(e.level, e.fields["event"]) for e in translator.handle(event)]
        seen.append(translator.progress.pct)
    assert seen == sorted(seen) and seen[-1] < 100
    assert levels == [(logging.ERROR, "failed"), (logging.ERROR, "failed")]
    error, failure = translator.digest("x.yml", 2, "failed")
    assert error == 'Task "T" failed on h1: boom (rc=3)'
    assert failure["rc"] == 3 and failure["stderr"] == "boom"
    assert translator.stats["h1"]["failed"] == 1 and translator.stats["h1"]["ok"] == 2


def test_progress_estimate_stays_monotone_past_the_estimate() -> None:
    progress = Progress(
        estimate_plan([{"hosts": "all", "tasks": [{"block": [{}, {}]}]}, {"hosts": "x"}])
    )
    assert progress.plan == [3, 1]  # gather_facts + two tasks in a block; gather_facts alone
    values = []
    progress.play_started()
    for _ in range(8):  # more tasks than estimated (includes, roles)
        values.append(progress.task_started())
    progress.play_started()
    values.append(progress.task_started())
    assert values == sorted(values) and values[-1] <= 99.0
