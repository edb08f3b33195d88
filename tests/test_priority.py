"""Jobs run below the server (``--worker-nice``, 10 by default), in both modes: each job
process leads a session of its own whose autogroup has that nice too, since where the kernel
shares the CPU between sessions first a nice inside the server's session is weighed only
against the server's own threads. Output, children and cancel work as before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psutil
import pytest

from support.live import Live
from support.live import server_config as make_config
from support.modes import MODES, serve_in_mode

pytestmark = pytest.mark.timeout(120)

NICE = 10  # the default of `serve --worker-nice`


@pytest.fixture(scope="module", params=MODES)
def niced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    config = replace(make_config(tmp_path_factory.mktemp("home")), worker_nice=NICE)
    with serve_in_mode(request.param, config, tmp_path_factory) as live:
        yield live


def ran(live: Live, job_type: str, **params: Any) -> dict[str, Any]:
    done = live.wait(live.submit(job_type, **params)["job_id"])
    assert done["status"] == "completed", done
    return done


def test_a_job_process_runs_niced_in_a_session_and_autogroup_of_its_own(niced: Live) -> None:
    found = ran(niced, "priority")["result"]
    assert found["nice"] == NICE and found["session_leader"], found
    group, group_nice = found["autogroup"].rsplit(" nice ", 1)
    assert int(group_nice) == NICE, found
    assert group != found["parent_autogroup"].rsplit(" nice ", 1)[0], found  # not the server's


def test_output_children_and_cancel_work_from_the_jobs_session(niced: Live) -> None:
    job_id = ran(niced, "output")["job_id"]
    messages = [r["message"] for r in niced.all_records(job_id)]
    assert "child says hi" in messages and "from os.system" in messages
    tree = niced.submit("process_tree", seconds=60)["job_id"]
    deadline = time.monotonic() + 30
    while "grandchild" not in " ".join(r["message"] for r in niced.all_records(tree)):
        assert time.monotonic() < deadline, niced.job(tree)
        time.sleep(0.05)
    response = niced.http.post(f"/api/jobs/{tree}/cancel")
    assert response.status_code in (200, 202), response.text
    assert niced.wait(tree)["status"] == "cancelled"
    said = [r["message"].split() for r in niced.all_records(tree)]
    pids = [int(words[1]) for words in said if words[0] in ("child", "grandchild")]
    assert len(pids) == 2, said
    _, alive = psutil.wait_procs(
        [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], 10
    )
    assert not alive, f"left running after the cancel: {alive}"
