"""jobtrail as an MCP server: every tool through the SDK's in-memory client against a real
server, a real ``jobtrail mcp`` subprocess over stdio, a real streamable-HTTP client against
/mcp (401 without the token), the context budget on a 10 MB log, and a round in both modes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client import Client, ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from jobtrail.client import AsyncClient
from jobtrail.mcp._budget import STRUCTURED_LIMIT, TEXT_LIMIT, Reply, fit
from jobtrail.mcp._server import build_server
from jobtrail.worker.runtime import PLAYBOOKS_ENV
from support.live import Live, live_server, server_config
from support.modes import MODES, serve_in_mode

pytestmark = pytest.mark.timeout(180)

TOKEN = "mcp-test-token-0123456789"
PLAYBOOKS = Path(__file__).parent / "playbooks"
TOOLS = {
    "list_jobs",
    "get_job",
    "list_job_types",
    "submit_job",
    "cancel_job",
    "read_log",
    "search_log",
    "log_summary",
    "wait_job",
    "ansible_hosts",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A server with a token and the test playbooks."""
    saved = os.environ.get(PLAYBOOKS_ENV)
    try:
        config = server_config(tmp_path_factory.mktemp("home"), token=TOKEN, playbooks=PLAYBOOKS)
        with live_server(config) as live:
            live.http.headers["Authorization"] = f"Bearer {TOKEN}"
            yield live
    finally:
        if saved is None:
            os.environ.pop(PLAYBOOKS_ENV, None)
        else:
            os.environ[PLAYBOOKS_ENV] = saved


@asynccontextmanager
async def session(url: str, token: str | None = TOKEN) -> AsyncIterator[Client]:
    async with AsyncClient(url, token=token) as client, Client(build_server(client)) as mcp:
        yield mcp


async def call(mcp: Client | ClientSession, tool: str, **args: Any) -> tuple[str, dict[str, Any]]:
    """(text, structured content) of a tool call that must succeed within the budget."""
    result = await mcp.call_tool(tool, args)
    text = result.content[0].text  # type: ignore[union-attr]
    assert not result.is_error, text
    structured = result.structured_content or {}
    assert len(text.encode()) <= TEXT_LIMIT
    assert len(json.dumps(structured, separators=(",", ":")).encode()) <= STRUCTURED_LIMIT
    return text, structured


async def error(mcp: Client, tool: str, **args: Any) -> str:
    result = await mcp.call_tool(tool, args)
    assert result.is_error
    return str(result.content[0].text)  # type: ignore[union-attr]


def test_every_tool_through_the_in_memory_client(served: Live, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(served.url) as mcp:
            listed = await mcp.list_tools()
            tools = {tool.name: tool for tool in listed.tools}
            assert set(tools) == TOOLS
            for name, tool in tools.items():
                changes = name in ("submit_job", "cancel_job")
                assert tool.annotations is not None
                assert tool.annotations.read_only_hint is (not changes), name

            text, data = await call(
                mcp, "submit_job", type="levels", params={"errors_every": 3, "count": 30}
            )
            job_id = data["job"]["job_id"]
            assert job_id in text and "wait_job" in text
            for _ in range(20):  # the agent's `logs -f`: until the status says it ended
                text, data = await call(mcp, "wait_job", job_id=job_id, timeout_s=10)
                if data["job"]["status"] == "completed":
                    break
            assert data["job"]["status"] == "completed"

            text, data = await call(mcp, "list_jobs", status="completed")
            assert job_id in text and "completed" in text

            text, data = await call(mcp, "get_job", job_id=job_id)
            assert "completed" in text and "35 records" in text and "#1-#35" in text
            assert data["log"]["records"] == 35

            text, data = await call(mcp, "list_job_types")
            assert "levels: " in text and "errors_every: integer (default 0)" in text

            text, data = await call(mcp, "read_log", job_id=job_id, tail=5, level="ERROR")
            assert text.startswith("5 record(s)") and "(last: error 27)" in text
            assert data["next_after"] == 33 == data["records"][-1]["last_seq"]  # a run of 5
            text, data = await call(mcp, "read_log", job_id=job_id, after=30)
            assert [r["seq"] for r in data["records"]] == [31, 32, 33, 34, 35]

            text, data = await call(mcp, "search_log", job_id=job_id, pattern="error 2", max=2)
            assert data["total_matches"] == 3 and len(data["matches"]) == 2  # 21, 24, 27
            assert "search_log(job_id, pattern='error 2', after=" in text

            text, data = await call(mcp, "log_summary", job_id=job_id)
            assert "35 records" in text and "first error" in text

            # a running job: wait_job sees the change, cancel_job stops it
            gate = tmp_path / "never"
            _, data = await call(
                mcp, "submit_job", type="wait_for_file", params={"path": str(gate)}
            )
            running = data["job"]["job_id"]
            _, data = await call(mcp, "wait_job", job_id=running, timeout_s=20)
            assert data["job"]["status"] == "running"  # changed, or was running already
            text, data = await call(mcp, "wait_job", job_id=running, timeout_s=0.5)
            assert data["reason"] == "timeout" and data["job"]["status"] == "running"
            assert f"wait_job(job_id={running!r}, after=" in text
            text, _ = await call(mcp, "cancel_job", job_id=running)
            assert "cancel" in text
            _, data = await call(mcp, "wait_job", job_id=running, timeout_s=20)
            assert data["job"]["status"] == "cancelled"

            # errors say what to do next, and the session goes on
            assert "list_jobs shows the recent ones" in await error(
                mcp, "get_job", job_id="levels-000000000000"
            )
            assert "list_job_types" in await error(
                mcp, "submit_job", type="levels", params={"count": "x"}
            )
            assert "nothing to cancel" in await error(mcp, "cancel_job", job_id=job_id)
            assert "not a playbook" in await error(mcp, "ansible_hosts", job_id=job_id)
            assert "KEY:VALUE" in await error(mcp, "read_log", job_id=job_id, field=["oops"])
            await call(mcp, "list_jobs")

    anyio.run(scenario)


def test_ansible_hosts_names_the_failed_task_host_and_message(served: Live) -> None:
    job = served.submit("ansible_playbook", playbook="failing.yml")
    served.wait(job["job_id"], timeout=90)

    async def scenario() -> None:
        async with session(served.url) as mcp:
            text, data = await call(mcp, "ansible_hosts", job_id=job["job_id"])
            assert "localhost" in text and "failed=1" in text
            assert "Start the service" in text and "port 443 already in use" in text
            assert data["failure"]["task"] == "Start the service"
            text, _ = await call(mcp, "get_job", job_id=job["job_id"])
            assert "task: Start the service" in text and "ansible_hosts" in text

    anyio.run(scenario)


def test_a_10_mb_log_never_yields_more_than_16_kb(served: Live) -> None:
    job = served.submit("flood", records=50_000, payload=120)
    served.wait(job["job_id"], timeout=120)
    long_lines = served.submit("chatty", count=50, payload=60_000, burst=50, pause=0)
    served.wait(long_lines["job_id"], timeout=60)

    async def scenario() -> None:
        async with session(served.url) as mcp:
            job_id = job["job_id"]
            _, data = await call(mcp, "get_job", job_id=job_id)
            assert data["log"]["bytes"] > 10_000_000
            text, data = await call(mcp, "read_log", job_id=job_id, tail=10_000)
            assert "\u00d79,999 more of this shape" in text  # one shape: one line and its count
            text, data = await call(mcp, "search_log", job_id=job_id, pattern="flood", max=1000)
            assert data["total_matches"] == 50_000 and "after=" in text and "Left out" in text
            await call(mcp, "search_log", job_id=job_id, pattern="x", context=20, max=1000)
            await call(mcp, "log_summary", job_id=job_id)
            await call(mcp, "list_jobs", limit=500)
            text, data = await call(mcp, "read_log", job_id=long_lines["job_id"], tail=50)
            assert "…[cut " in text
            assert "read_log(job_id, after=" in text or "\u00d7" in text

    anyio.run(scenario)


def test_reply_and_structured_content_stay_in_budget_whatever_they_hold() -> None:
    reply = Reply()
    for i in range(10_000):
        reply.add(f"line {i} " + "y" * 5000)
    reply.leave_out("x" * 100_000)
    result = reply.result()
    assert len(result.content[0].text.encode()) <= TEXT_LIMIT  # type: ignore[union-attr]
    data = fit({"records": [{"message": "m" * 2000, "seq": i} for i in range(1000)], "blob": "b"})
    assert len(json.dumps(data, separators=(",", ":"))) <= STRUCTURED_LIMIT
    assert data["omitted"]["records"] > 900 and data["blob"] == "b"
    assert fit({"huge": "h" * 100_000})["omitted"]


def test_jobtrail_mcp_over_stdio(served: Live) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "jobtrail.cli", "mcp", "--url", served.url, "--token", TOKEN],
        env={**os.environ},
    )

    async def scenario() -> None:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as mcp:
            await mcp.initialize()
            listed = await mcp.list_tools()
            assert {tool.name for tool in listed.tools} == TOOLS
            text, _ = await call(mcp, "list_job_types")
            assert "ansible_playbook" in text

    anyio.run(scenario)


def test_streamable_http_at_mcp_behind_the_token(served: Live) -> None:
    response = httpx.post(
        f"{served.url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 401
    job = served.submit("levels", count=5)
    served.wait(job["job_id"])

    async def scenario() -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            streamable_http_client(f"{served.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as mcp,
        ):
            await mcp.initialize()
            listed = await mcp.list_tools()
            assert {tool.name for tool in listed.tools} == TOOLS
            text, _ = await call(mcp, "list_jobs")
            assert job["job_id"] in text
            text, data = await call(mcp, "read_log", job_id=job["job_id"], level="WARNING")
            assert len(data["records"]) == 3

    anyio.run(scenario)


@pytest.fixture(scope="module", params=MODES)
def both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("home")
    with serve_in_mode(
        request.param, server_config(home), tmp_path_factory, worker_count=1
    ) as live:
        yield live


def test_a_round_of_tools_in_both_modes(both: Live) -> None:
    async def scenario() -> None:
        async with session(both.url, token=None) as mcp:
            _, data = await call(
                mcp, "submit_job", type="levels", params={"errors_every": 2, "count": 10}
            )
            job_id = data["job"]["job_id"]
            for _ in range(30):
                _, data = await call(mcp, "wait_job", job_id=job_id, timeout_s=5)
                if data["job"]["status"] == "completed":
                    break
            assert data["job"]["status"] == "completed"
            text, _ = await call(mcp, "get_job", job_id=job_id)
            assert "completed" in text
            _, data = await call(mcp, "search_log", job_id=job_id, pattern="error")
            assert data["total_matches"] >= 5
            _, data = await call(mcp, "read_log", job_id=job_id, level="ERROR")
            assert data["records"]

    anyio.run(scenario)
