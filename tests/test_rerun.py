"""``POST /api/jobs/{id}/rerun`` and the job JSON's ``rerun_of``, ``reruns`` and
``duration_s``, in both modes.

The playbook case runs a real playbook through ansible-runner over an inventory of three
aliases of this machine (``ansible_connection: local``), two of which fail a task: the rerun
with ``failed_hosts_only`` is limited to those hosts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_stream import all_events

from jobtrail.models import Job, JobStatus
from jobtrail.service.rerun import missing_secrets
from jobtrail.worker.runtime import PLAYBOOKS_ENV
from support.live import Live
from support.live import server_config as make_config
from support.modes import MODES, serve_in_mode

pytestmark = pytest.mark.timeout(240)

PLAYBOOK = """\
- name: Rerun play
  hosts: all
  gather_facts: false
  tasks:
    - name: Check the host
      ansible.builtin.fail:
        msg: "{{ inventory_hostname }} is broken"
      when: inventory_hostname in broken.split(',')

    - name: Report
      ansible.builtin.debug:
        msg: "{{ inventory_hostname }} is fine"
"""
SECRET = "hunter2-very-secret"


@pytest.fixture(scope="module", params=MODES)
def both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """A server with a playbooks dir holding the playbook and its inventory of aliases."""
    books = tmp_path_factory.mktemp("playbooks")
    (books / "rerun.yml").write_text(PLAYBOOK)
    python = sys.executable
    (books / "hosts.ini").write_text(
        "".join(
            f"{host} ansible_connection=local ansible_python_interpreter={python}\n"
            for host in ("web1", "web2", "web3")
        )
    )
    config = make_config(tmp_path_factory.mktemp("home"), playbooks=books)
    saved = os.environ.get(PLAYBOOKS_ENV)
    os.environ[PLAYBOOKS_ENV] = str(books)  # for the RQ workers, which inherit it
    try:
        with serve_in_mode(request.param, config, tmp_path_factory) as live:
            yield live
    finally:
        if saved is None:
            os.environ.pop(PLAYBOOKS_ENV, None)
        else:
            os.environ[PLAYBOOKS_ENV] = saved


def rerun(live: Live, job_id: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return live.http.post(f"/api/jobs/{job_id}/rerun", json=body)


def rerun_ok(live: Live, job_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = rerun(live, job_id, body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_a_rerun_has_the_same_type_and_params_and_both_jobs_point_at_each_other(
    both: Live,
) -> None:
    old = both.wait(both.submit("sleep", seconds=0.1, steps=2)["job_id"])
    assert old["rerun_of"] is None and old["reruns"] == []
    first = rerun_ok(both, old["job_id"])
    assert (first["job_type"], first["params"]) == ("sleep", {"seconds": 0.1, "steps": 2})
    assert first["job_id"] != old["job_id"] and first["rerun_of"] == old["job_id"]
    assert first["status"] in ("pending", "running") and first["reruns"] == []
    second = rerun_ok(both, old["job_id"], {})  # an empty body is the same as none
    assert both.job(old["job_id"])["reruns"] == [first["job_id"], second["job_id"]]
    for new in (first, second):
        done = both.wait(new["job_id"])
        assert done["status"] == "completed" and done["result"] == {"slept": 0.1}
        assert done["rerun_of"] == old["job_id"], "kept once it ran (a worker's start too)"
    listed = {
        j["job_id"]: j for j in both.http.get("/api/jobs", params={"type": "sleep"}).json()["jobs"]
    }
    assert listed[old["job_id"]]["reruns"] == [first["job_id"], second["job_id"]]
    assert listed[first["job_id"]]["rerun_of"] == old["job_id"]
    again = rerun_ok(both, first["job_id"])  # a rerun of a rerun points at its own source
    assert again["rerun_of"] == first["job_id"]
    assert both.job(old["job_id"])["reruns"] == [first["job_id"], second["job_id"]]
    both.wait(again["job_id"])


def test_reruns_made_at_once_are_all_listed(both: Live) -> None:
    old = both.wait(both.submit("sleep", seconds=0.01, steps=1)["job_id"])
    with ThreadPoolExecutor(max_workers=6) as pool:
        made = list(pool.map(lambda _: rerun_ok(both, old["job_id"])["job_id"], range(6)))
    assert sorted(both.job(old["job_id"])["reruns"]) == sorted(made), "none lost to a race"
    for job_id in made:
        both.wait(job_id)


def test_params_override_the_old_ones_key_by_key_and_are_checked(both: Live) -> None:
    old = both.wait(both.submit("sleep", seconds=0.1, steps=3)["job_id"])
    new = rerun_ok(both, old["job_id"], {"params": {"seconds": 0.2}})
    assert new["params"] == {"seconds": 0.2, "steps": 3}
    assert both.wait(new["job_id"])["result"] == {"slept": 0.2}
    bad = rerun(both, old["job_id"], {"params": {"seconds": "long"}})
    assert bad.status_code == 422 and "seconds" in bad.json()["detail"], bad.text
    unknown = rerun(both, old["job_id"], {"params": {"minutes": 1}})
    assert unknown.status_code == 422 and "minutes" in unknown.json()["detail"]
    assert both.job(old["job_id"])["reruns"] == [new["job_id"]], "a refused rerun is not listed"


def test_secret_params_are_asked_for_since_they_were_never_stored(both: Live) -> None:
    old = both.wait(both.submit("leaky", user="bob", password=SECRET)["job_id"])
    assert old["params"] == {"user": "bob", "password": "********", "api_token": ""}
    refused = rerun(both, old["job_id"])
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        f"job {old['job_id']!r} had secret params, which are never stored: send password in params"
    )
    new = rerun_ok(both, old["job_id"], {"params": {"password": SECRET}})
    assert new["params"]["password"] == "********", "masked again in the new record"
    done = both.wait(new["job_id"])
    assert done["status"] == "completed"
    messages = [r["message"] for r in both.all_records(new["job_id"])]
    assert "connecting as bob with password ********" in messages, "the value reached the job"
    assert not [m for m in messages if SECRET in m]


def test_what_cannot_be_rerun_says_why(both: Live) -> None:
    running = both.submit("sleep", seconds=30, steps=1)
    try:
        both.wait(running["job_id"], statuses=("running",))
        busy = rerun(both, running["job_id"])
        assert busy.status_code == 409 and "still running" in busy.json()["detail"], busy.text
    finally:
        both.http.post(f"/api/jobs/{running['job_id']}/cancel")
    ended = both.wait(running["job_id"])
    not_a_playbook = rerun(both, ended["job_id"], {"failed_hosts_only": True})
    assert not_a_playbook.status_code == 422
    assert "is a 'sleep' job, not a playbook" in not_a_playbook.json()["detail"]
    assert rerun(both, "sleep-000000000000").status_code == 404
    assert rerun(both, ended["job_id"], {"retries": 1}).status_code == 422, "unknown body key"
    form = both.http.post(f"/api/jobs/{ended['job_id']}/rerun", content=b"failed_hosts_only=1")
    assert form.status_code == 415, form.text
    bare = both.http.post(f"/api/jobs/{ended['job_id']}/rerun")  # no body at all
    assert bare.status_code == 202 and bare.json()["rerun_of"] == ended["job_id"]
    both.http.post(f"/api/jobs/{bare.json()['job_id']}/cancel")
    both.wait(bare.json()["job_id"])


def test_failed_hosts_only_limits_a_playbook_to_the_hosts_that_failed(both: Live) -> None:
    broken = {"broken": "web1,web3"}
    params = {"playbook": "rerun.yml", "inventory": "hosts.ini", "extra_vars": broken}
    old = both.wait(both.submit("ansible_playbook", **params)["job_id"], timeout=120)
    assert old["status"] == "failed", old["error"]
    assert old["failure"]["hosts"] == ["web1", "web3"]
    new = rerun_ok(both, old["job_id"], {"failed_hosts_only": True})
    assert new["params"]["limit"] == "web1,web3" and new["rerun_of"] == old["job_id"]
    assert {k: new["params"][k] for k in params} == params
    still = both.wait(new["job_id"], timeout=120)
    assert still["status"] == "failed", "web1 and web3 are still broken"
    hosts = {r.get("host") for r in both.all_records(new["job_id"]) if r.get("host")}
    assert hosts == {"web1", "web3"}

    fixed = rerun_ok(
        both, old["job_id"], {"failed_hosts_only": True, "params": {"extra_vars": {"broken": ""}}}
    )
    assert fixed["params"]["limit"] == "web1,web3"
    done = both.wait(fixed["job_id"], timeout=120)
    assert done["status"] == "completed", done["error"]
    fine = [r["message"] for r in both.all_records(fixed["job_id"]) if r.get("event") == "ok"]
    assert any("web1 is fine" in m for m in fine) and any("web3 is fine" in m for m in fine)
    assert not any("web2" in m for m in fine)
    assert both.job(old["job_id"])["reruns"] == [new["job_id"], fixed["job_id"]]
    nothing = rerun(both, fixed["job_id"], {"failed_hosts_only": True})
    assert nothing.status_code == 422
    assert "no host failed or was unreachable" in nothing.json()["detail"]


def test_duration_is_the_run_time_so_far_while_running_and_in_the_end_event(
    both: Live, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    job = both.submit("wait_for_file", path=str(gate))
    assert job["duration_s"] is None, "pending: it has not run"
    try:
        first = both.wait(job["job_id"], statuses=("running",))["duration_s"]
        assert first is not None and first >= 0
        time.sleep(0.3)
        later = both.job(job["job_id"])
        assert later["status"] == "running" and later["duration_s"] >= first + 0.25, later
    finally:
        gate.touch()
    done = both.wait(job["job_id"])
    started = datetime.fromisoformat(done["started_at"])
    ended = datetime.fromisoformat(done["completed_at"])
    assert done["duration_s"] == pytest.approx((ended - started).total_seconds(), abs=0.002)
    assert both.job(job["job_id"])["duration_s"] == done["duration_s"], "fixed once ended"
    end = all_events(both, job["job_id"])[-1]
    assert json.loads(end.data)["duration_s"] == done["duration_s"]


def test_missing_secrets_name_nested_places() -> None:
    params = {"user": "bob", "password": "********", "extra_vars": {"db": {"token": "********"}}}
    assert missing_secrets(params) == ["password", "extra_vars.db.token"]
    assert missing_secrets({"hosts": [{"key": "********"}]}) == ["hosts[0].key"]
    assert missing_secrets({"password": "set"}) == []
    job = Job("sleep-000000000001", "sleep", {}, status=JobStatus.COMPLETED)
    assert job.duration_s() is None
