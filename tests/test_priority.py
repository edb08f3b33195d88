"""Jobs run below the server (``--worker-nice``, 10 by default), in both modes.

With ``--worker-cpu idle`` each job process is in the idle cpu cgroup
(``jobtrail.cpu_group``), which any task that is not idle preempts at once; with
``--worker-cpu nice`` (the default) it is not, and its nice alone puts it below. Either
way it leads a session of its own whose autogroup has that nice too, since where the kernel
shares the CPU between sessions first a nice inside the server's session is weighed only
against the server's own threads. Output, children and cancel work as before."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from jobtrail import cpu_group
from support.cpu import assert_in_idle_group
from support.live import Live
from support.live import server_config as make_config
from support.modes import MODES, serve_in_mode

pytestmark = pytest.mark.timeout(400)
# An idle job gets only CPU nothing else wants, and the parallel suite keeps both cores busy:
# one stayed pending 30 s in a CI run (redis mode, where each job starts an interpreter)
WAIT = 90.0

NICE = 10  # the default of `serve --worker-nice`
SETTINGS = [(mode, cpu) for mode in MODES for cpu in ("idle", "nice")]


@pytest.fixture(scope="module", params=SETTINGS, ids=["-".join(s) for s in SETTINGS])
def niced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Live, str]]:
    mode, cpu = request.param
    config = make_config(tmp_path_factory.mktemp("home"))
    config = replace(config, worker_nice=NICE, worker_cpu=cpu)
    with serve_in_mode(mode, config, tmp_path_factory) as live:
        yield live, cpu


def ran(live: Live, job_type: str, **params: Any) -> dict[str, Any]:
    done = live.wait(live.submit(job_type, **params)["job_id"], timeout=WAIT)
    assert done["status"] == "completed", done
    return done


def test_a_job_process_runs_niced_in_a_session_and_autogroup_of_its_own(
    niced: tuple[Live, str],
) -> None:
    found = ran(niced[0], "priority")["result"]
    assert found["nice"] == NICE and found["session_leader"], found
    group, group_nice = found["autogroup"].rsplit(" nice ", 1)
    assert int(group_nice) == NICE, found
    assert group != found["parent_autogroup"].rsplit(" nice ", 1)[0], found  # not the server's


def test_the_cpu_cgroup_is_the_idle_one_only_when_asked(niced: tuple[Live, str]) -> None:
    live, cpu = niced
    found = ran(live, "priority")["result"]["cpu_cgroup"]
    if cpu == "idle":
        assert_in_idle_group(found)
    else:
        assert os.path.basename(found) != cpu_group.NAME, found


def test_output_children_and_cancel_work_from_the_jobs_session(niced: tuple[Live, str]) -> None:
    live = niced[0]
    job_id = ran(live, "output")["job_id"]
    messages = [r["message"] for r in live.all_records(job_id)]
    assert "child says hi" in messages and "from os.system" in messages
    tree = live.submit("process_tree", seconds=60)["job_id"]
    deadline = time.monotonic() + WAIT
    while "grandchild" not in " ".join(r["message"] for r in live.all_records(tree)):
        assert time.monotonic() < deadline, live.job(tree)
        time.sleep(0.05)
    response = live.http.post(f"/api/jobs/{tree}/cancel")
    assert response.status_code in (200, 202), response.text
    assert live.wait(tree, timeout=WAIT)["status"] == "cancelled"
    said = [r["message"].split() for r in live.all_records(tree)]
    pids = [int(words[1]) for words in said if words[:1] in (["child"], ["grandchild"])]
    assert len(pids) == 2, said
    _, alive = psutil.wait_procs(
        [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], 10
    )
    assert not alive, f"left running after the cancel: {alive}"


def _files(tmp_path: Path, cgroups: str, mount: str) -> tuple[str, str]:
    (tmp_path / "cgroup").write_text(cgroups)
    line = f"32 31 0:29 {mount} - cgroup cgroup rw,cpu\n" if mount else ""
    (tmp_path / "mountinfo").write_text(f"31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n{line}")
    return str(tmp_path / "cgroup"), str(tmp_path / "mountinfo")


def test_the_idle_group_is_made_below_the_processs_own_cpu_cgroup(tmp_path: Path) -> None:
    """Where the hierarchy's root is not what is mounted (a container's): the path below."""
    point = tmp_path / "cpu"
    (point / "svc").mkdir(parents=True)
    files = _files(tmp_path, "1:cpu,cpuacct:/host/svc\n0::/\n", f"/host {point} rw")
    group, why = cpu_group.prepare(*files)
    assert (group, why) == (str(point / "svc" / cpu_group.NAME), "")
    assert Path(group, "cpu.idle").read_text() == "1"
    assert cpu_group.prepare(*files) == (group, "")  # a second server's: the same group


def test_without_an_idle_group_to_be_had_prepare_says_why(tmp_path: Path) -> None:
    no_cpu = _files(tmp_path, "4:memory:/x\n0::/user.slice\n", "")
    assert cpu_group.prepare(*no_cpu) == (None, "no cgroup v1 cpu controller is mounted")
    point = tmp_path / "cpu"
    point.write_text("a file, not a hierarchy")
    blocked = _files(tmp_path, "1:cpu:/\n", f"/ {point} rw")
    group, why = cpu_group.prepare(*blocked)
    assert group is None and why.startswith(f"cannot make the idle cpu cgroup {point}/"), why
    outside = _files(tmp_path, "1:cpu:/elsewhere\n", f"/host {tmp_path} rw")
    assert cpu_group.prepare(*outside)[1].startswith("this process's cpu cgroup /elsewhere is")


def test_no_group_is_asked_for_at_nice_0_or_with_worker_cpu_nice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.cpu")
    assert cpu_group.for_jobs("idle", 0, log) is None
    assert cpu_group.for_jobs("nice", NICE, log) is None
    assert caplog.records == []
