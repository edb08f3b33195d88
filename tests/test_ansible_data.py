"""A playbook's results as data: /hosts equals the PLAY RECAP, /tasks has one row per task and
host with durations (running rows while hosts are acted on), and a failed run's ``failure``
names every failed host. Real ansible-runner runs over an inventory of aliases with a local
connection (tests/playbooks/aliases.yml), in both modes; the fold itself is unit-tested on
records too (live counts equal the recap, a saved fold continues, the bound, rescue guesses).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobtrail.jobtypes.ansible import tables
from jobtrail.jobtypes.ansible.tables import PlaybookFold, PlaybookTables
from jobtrail.worker.runtime import PLAYBOOKS_ENV
from support.live import Live, live_server, server_config
from support.modes import MODES, serve_in_mode
from support.waits import wait_until

pytestmark = pytest.mark.timeout(180)

PLAYBOOKS = Path(__file__).parent / "playbooks"
RECAP_LINE = re.compile(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$")
FAILED_HOSTS = ["down1", "web3", "web4"]


@pytest.fixture(scope="module", params=MODES)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    saved = os.environ.get(PLAYBOOKS_ENV)
    os.environ[PLAYBOOKS_ENV] = str(PLAYBOOKS.resolve())  # the redis workers inherit it
    try:
        config = server_config(tmp_path_factory.mktemp("home"), playbooks=PLAYBOOKS)
        with serve_in_mode(request.param, config, tmp_path_factory) as running:
            yield running
    finally:  # the service exports the dir to os.environ: don't leak it into other modules
        if saved is None:
            os.environ.pop(PLAYBOOKS_ENV, None)
        else:
            os.environ[PLAYBOOKS_ENV] = saved


@pytest.fixture(scope="module")
def results(live: Live) -> dict[str, Any]:
    job = live.submit("ansible_playbook", playbook="results.yml", inventory="aliases.yml")
    return live.wait(job["job_id"], timeout=120)


def recap_text(live: Live, job_id: str) -> list[dict[str, Any]]:
    """The PLAY RECAP as the terminal prints it, parsed from the log's recap record."""
    (recap,) = live.logs(job_id, format="json", event="recap", tail=10)["logs"]
    rows = []
    for line in recap["message"].splitlines()[1:]:
        match = RECAP_LINE.match(line.strip())
        assert match, line
        counts = {k: int(v) for k, v in (pair.split("=") for pair in match[2].split())}
        rows.append({"host": match[1], **counts})
    return rows


def tasks(live: Live, job_id: str, **params: Any) -> list[dict[str, Any]]:
    response = live.http.get(f"/api/jobs/{job_id}/tasks", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["tasks"])


def hosts(live: Live, job_id: str) -> list[dict[str, Any]]:
    response = live.http.get(f"/api/jobs/{job_id}/hosts")
    assert response.status_code == 200, response.text
    assert response.json()["job_id"] == job_id
    return list(response.json()["hosts"])


# -- a finished run ----------------------------------------------------------------------------
def test_hosts_equal_the_play_recap_of_a_failed_run(live: Live, results: dict[str, Any]) -> None:
    assert results["status"] == "failed", results
    recap = recap_text(live, results["job_id"])
    assert [row["host"] for row in recap] == ["down1", "web1", "web2", "web3", "web4"]
    assert hosts(live, results["job_id"]) == recap
    summary = live.http.get(f"/api/jobs/{results['job_id']}/summary").json()
    assert summary["hosts"] == recap, "the summary's host recap is the same table"
    by_host = {row["host"]: row for row in recap}
    assert by_host["web1"]["ignored"] == 1 and by_host["web2"]["rescued"] == 1
    assert by_host["web3"]["failed"] == by_host["web4"]["failed"] == 1
    assert by_host["down1"]["unreachable"] == 1


def test_tasks_have_a_row_per_task_and_host_with_durations(
    live: Live, results: dict[str, Any]
) -> None:
    rows = tasks(live, results["job_id"])
    status = {(r["task"], r["host"]): r["status"] for r in rows}
    assert status[("Fail but ignore", "web1")] == "ignored"
    assert status[("Fail in a block", "web2")] == "rescued"
    assert status[("Rescue it", "web2")] == "ok"
    assert status[("Skip on web2", "web2")] == "skipped"
    assert status[("Fail on web3 and web4", "web3")] == "failed"
    assert status[("Fail on web3 and web4", "web4")] == "failed"
    assert status[("Change something", "web1")] == "changed"
    assert status[("Change something", "down1")] == "unreachable"
    assert status[("Loop over items", "web1")] == "ok", "a loop is one row, not one per item"
    assert ("After", "web3") not in status, "a failed host does not go on"
    assert {r["play"] for r in rows} == {"Results play", "Second play"}
    for row in rows:
        assert row["started"] and row["ended"] and row["started"] <= row["ended"], row
        assert row["duration_s"] is not None and 0 <= row["duration_s"] < 60, row
    # each row adds one to exactly one of ok, failed, skipped, unreachable, rescued
    for host in hosts(live, results["job_id"]):
        mine = [r["status"] for r in rows if r["host"] == host["host"]]
        counted = sum(host[k] for k in ("ok", "failed", "skipped", "unreachable", "rescued"))
        assert counted == len(mine), (host, mine)
        assert host["changed"] >= mine.count("changed"), "a failed command changed too"
        assert host["ignored"] == mine.count("ignored")
        assert host["rescued"] == mine.count("rescued")
    assert tasks(live, results["job_id"], status="running") == []
    live_counts = PlaybookTables()  # what /hosts said before the recap came
    for record in live.all_records(results["job_id"]):
        if record.get("event") != "recap":
            live_counts.add(record)
    assert live_counts.hosts() == hosts(live, results["job_id"])
    assert [r["host"] for r in tasks(live, results["job_id"], status="failed")] == ["web3", "web4"]


def test_failure_names_every_failed_host_in_one_line(live: Live, results: dict[str, Any]) -> None:
    # the reason is the first failure's: web3 and web4 run in parallel forks
    first = results["failure"]["host"]
    assert first in ("web3", "web4")
    assert results["error"] == (
        'Task "Fail on web3 and web4" failed on web3, web4 (2 hosts): '
        f"Error: disk full on {first} (rc=5) [and 1 more failure]"
    )
    assert results["failure"]["hosts"] == FAILED_HOSTS
    assert live.server.failed_hosts(results["job_id"]) == FAILED_HOSTS


def test_terminal_lines_are_unchanged_at_info(live: Live, results: dict[str, Any]) -> None:
    """The records the tables need that a terminal does not print are DEBUG."""
    job_id = results["job_id"]
    debug = [r for r in live.all_records(job_id) if r["level"] == "DEBUG"]
    assert {r["event"] for r in debug if r["logger"] == "ansible"} == {"host_start", "host_done"}
    assert any(r["message"] == "[started TASK: Say hello on web1]" for r in debug)
    assert any(r["message"] == "[finished TASK: Loop over items on web2: ok]" for r in debug)
    info = live.logs(job_id, format="json", level="INFO", tail=10000)["logs"]
    assert not any(r["message"].startswith(("[started", "[finished")) for r in info)


def test_a_job_that_is_not_a_playbook_has_no_tables(live: Live) -> None:
    job = live.wait(live.submit("sleep", seconds=0.01)["job_id"])
    for table in ("hosts", "tasks"):
        response = live.http.get(f"/api/jobs/{job['job_id']}/{table}")
        assert response.status_code == 422, response.text
        assert "not an 'ansible_playbook' one" in response.json()["detail"]
        missing = live.http.get(f"/api/jobs/sleep-000000000000/{table}")
        assert missing.status_code == 404
    assert live.server.failed_hosts(job["job_id"]) == []
    bad = live.http.get(f"/api/jobs/{job['job_id']}/tasks", params={"status": "sleeping"})
    assert bad.status_code == 422


# -- a running run -----------------------------------------------------------------------------
def start_gated(live: Live, gate: Path) -> str:
    job = live.submit(
        "ansible_playbook",
        playbook="gated.yml",
        inventory="aliases.yml",
        limit="web1,web2",
        extra_vars={"gate": str(gate)},
    )
    job_id: str = job["job_id"]
    at_gate = [("Wait at the gate", "web1"), ("Wait at the gate", "web2")]
    wait_until(
        lambda: [(r["task"], r["host"]) for r in tasks(live, job_id, status="running")] == at_gate,
        timeout=90,
        what="both hosts at the gate",
    )
    return job_id


def test_a_running_job_shows_the_hosts_acted_on_now(live: Live, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job_id = start_gated(live, gate)
    running = tasks(live, job_id, status="running")
    assert [(r["task"], r["host"]) for r in running] == [
        ("Wait at the gate", "web1"),
        ("Wait at the gate", "web2"),
    ]
    assert all(r["started"] and r["ended"] is None and r["duration_s"] is None for r in running)
    so_far = hosts(live, job_id)
    assert [(h["host"], h["ok"], h["changed"]) for h in so_far] == [("web1", 1, 0), ("web2", 1, 0)]
    gate.touch()
    done = live.wait(job_id, timeout=90)
    assert done["status"] == "completed", done
    assert tasks(live, job_id, status="running") == []
    waited = tasks(live, job_id, status="ok")
    assert [r["host"] for r in waited if r["task"] == "Wait at the gate"] == ["web1", "web2"]
    assert hosts(live, job_id) == recap_text(live, job_id)
    assert live.server.failed_hosts(job_id) == []


def test_a_cancelled_job_leaves_its_running_rows_interrupted(live: Live, tmp_path: Path) -> None:
    job_id = start_gated(live, tmp_path / "never")
    live.http.post(f"/api/jobs/{job_id}/cancel")
    assert live.wait(job_id, timeout=60)["status"] == "cancelled"
    assert tasks(live, job_id, status="running") == []
    cut = tasks(live, job_id, status="interrupted")
    assert [(r["host"], r["ended"]) for r in cut] == [("web1", None), ("web2", None)]


# -- the fold, on records ----------------------------------------------------------------------
def _records(*events: tuple[str, str | None, str | None, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for seq, (event, task, host, extra) in enumerate(events, 1):
        record = {"seq": seq, "timestamp": f"2026-01-01T00:00:{seq:02d}.000000Z"}
        record.update(logger="ansible", event=event, play="P", task=task, host=host, **extra)
        out.append(record)
    return out


def _run(*steps: tuple[str, str, str, str | None]) -> list[dict[str, Any]]:
    """(task, host, status, event) per result: each preceded by its host_start."""
    events: list[tuple[str, str | None, str | None, dict[str, Any]]] = [
        ("play_start", None, None, {})
    ]
    for task, host, status, event in steps:
        events.append(("host_start", task, host, {}))
        extra = {"status": status, "duration_s": 0.5}
        events.append((event or status, task, host, extra))
    return _records(*events)


STEPS = [
    ("T1", "a", "changed", None),
    ("T1", "b", "ok", None),
    ("T2", "a", "ignored", "failed"),
    ("T2", "b", "failed", None),
    ("T3", "b", "ok", None),  # b goes on in the play: its failure was rescued
    ("T4", "a", "ignored", "unreachable"),
    ("T5", "a", "skipped", None),
]


def counts(**given: int) -> dict[str, int]:
    return {name: given.get(name, 0) for name in tables.COUNTS}


RECAP = {"a": counts(ok=3, changed=1, skipped=1, ignored=2), "b": counts(ok=2, rescued=1)}


def test_counts_folded_so_far_equal_the_recap() -> None:
    folded = PlaybookTables()
    for record in _run(*STEPS):
        folded.add(record)
    assert folded.hosts() == [{"host": h, **row} for h, row in RECAP.items()]
    assert [r["status"] for r in folded.tasks() if r["host"] == "b"] == ["ok", "rescued", "ok"]
    folded.add({"logger": "ansible", "event": "recap", "stats": RECAP})
    assert folded.hosts() == [{"host": h, **row} for h, row in RECAP.items()]
    assert folded.failed_hosts() == []
    assert PlaybookTables().hosts() is None, "no playbook output: no hosts table"


def test_the_recap_corrects_a_rescue_guess() -> None:
    """An ``always`` section after a fatal failure also goes on: the recap says no rescue."""
    folded = PlaybookTables()
    for record in _run(("T1", "a", "failed", None), ("Always", "a", "ok", None)):
        folded.add(record)
    assert [r["status"] for r in folded.tasks()] == ["rescued", "ok"]
    stats = {"a": {"ok": 1, "failed": 1}}
    folded.add({"logger": "ansible", "event": "recap", "stats": stats})
    assert [r["status"] for r in folded.tasks()] == ["failed", "ok"]
    assert folded.failed_hosts() == ["a"]
    assert folded.hosts() == [{"host": "a", **counts(ok=1, failed=1)}]


def test_a_saved_fold_continues_where_it_stopped() -> None:
    records = _run(*STEPS)
    whole = PlaybookFold("tasks")
    for record in records:
        whole.add(record)
    first = PlaybookFold("tasks")
    for record in records[:9]:  # b's failure is pending: the guess must survive the save
        first.add(record)
    resumed = PlaybookFold("tasks", first.to_json())
    for record in records[9:]:
        resumed.add(record)
    assert resumed.result() == whole.result()
    assert (
        PlaybookFold("hosts", resumed.to_json()).result()
        == PlaybookFold("hosts", whole.to_json()).result()
    )
    assert PlaybookFold.needle == b'"logger":"ansible"'
    other = PlaybookFold("hosts")
    other.add({"logger": "app", "message": "not ansible"})
    assert other.result() is None


def test_the_tasks_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "MAX_ROWS", 100)
    folded = PlaybookTables()
    folded.add(_records(("host_start", "held", "h0", {}))[0])  # running: always kept
    steps = [(f"T{i}", "h1", "ok", None) for i in range(150)]
    for record in _run(*steps)[1:]:
        folded.add(record)
    rows = folded.tasks()
    assert len(rows) <= 100 and folded.dropped == 151 - len(rows)
    assert rows[0]["task"] == "held" and rows[0]["status"] == "running"
    assert rows[-1]["task"] == "T149"
    assert folded.hosts() == [{"host": "h1", **counts(ok=150)}], "counts cover dropped rows"


def test_the_tables_survive_a_restart(tmp_path: Path) -> None:
    """Saved with the summary next to the log, read back by the next server on the home."""
    gate = tmp_path / "open"
    gate.touch()
    config = server_config(tmp_path / "home", playbooks=PLAYBOOKS)
    saved = os.environ.get(PLAYBOOKS_ENV)
    try:
        with live_server(config) as first:
            job = first.submit(
                "ansible_playbook",
                playbook="gated.yml",
                inventory="aliases.yml",
                limit="web1,web2",
                extra_vars={"gate": str(gate)},
            )
            assert first.wait(job["job_id"], timeout=90)["status"] == "completed"
            before = hosts(first, job["job_id"]), tasks(first, job["job_id"])
        assert len(before[1]) == 4
        with live_server(config) as second:
            assert (hosts(second, job["job_id"]), tasks(second, job["job_id"])) == before
    finally:
        if saved is None:
            os.environ.pop(PLAYBOOKS_ENV, None)
        else:
            os.environ[PLAYBOOKS_ENV] = saved
