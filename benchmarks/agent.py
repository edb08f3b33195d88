"""How an agent finds why a playbook failed through jobtrail's MCP tools, against the naive way.

A playbook over 30 hosts (inventory aliases with a local connection) writes a ~10 MB log
with one failed task on one host in its middle. A scripted agent (no model) goes
``get_job`` -> ``search_log`` -> ``read_log`` and must name the task, the host and the
message in at most 3 tool calls and 24 KB of tool output in all (text and structured
content counted). Beside it: what the naive way costs, a tail of 100 raw lines and the
whole log, and whether each finds the failure.

    .venv/bin/python benchmarks/agent.py [--items 80] [--filler 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _server import REPO, jobtrail_server
from mcp.client import Client

from jobtrail.client import AsyncClient
from jobtrail.mcp._server import build_server

PLAYBOOK = REPO / "tests" / "playbooks" / "fleet.yml"
HOSTS = [f"web{i:02d}" for i in range(1, 31)]
FAILING = "web17"
TASK = "Check the disk"
MESSAGE = f"disk /var is 97% full on {FAILING} (needs 2 GiB free)"
CALL_LIMIT = 3
BYTES_LIMIT = 24 * 1024


def playbooks_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="jobtrail-agent-"))
    shutil.copy(PLAYBOOK, folder / "fleet.yml")
    lines = ["[fleet]", *HOSTS, "", "[fleet:vars]", "ansible_connection=local"]
    lines.append(f"ansible_python_interpreter={sys.executable}")
    (folder / "fleet.ini").write_text("\n".join(lines) + "\n")
    return folder


class Agent:
    """Counts every call and every byte the tools answer with."""

    def __init__(self, mcp: Client) -> None:
        self.mcp = mcp
        self.calls = 0
        self.bytes = 0

    async def call(self, tool: str, **args: Any) -> tuple[str, dict[str, Any]]:
        result = await self.mcp.call_tool(tool, args)
        text = result.content[0].text  # type: ignore[union-attr]
        data = result.structured_content or {}
        self.calls += 1
        self.bytes += len(text.encode()) + len(json.dumps(data, separators=(",", ":")).encode())
        return text, data


def digest_value(text: str, key: str) -> str | None:
    found = re.search(rf"^  {key}: (.*)$", text, re.MULTILINE)
    return found.group(1) if found else None


async def scripted_agent(url: str, job_id: str) -> dict[str, Any]:
    """get_job names task, host and message; search_log finds the record; read_log shows
    that host's lines around it: the answer is what those say."""
    started = time.perf_counter()
    async with AsyncClient(url) as client, Client(build_server(client)) as mcp:
        agent = Agent(mcp)
        text, _ = await agent.call("get_job", job_id=job_id)
        task, host = digest_value(text, "task"), digest_value(text, "host")
        message = digest_value(text, "message") or ""
        _, found = await agent.call(
            "search_log", job_id=job_id, pattern=message[:60], context=0, max=3, level="ERROR"
        )
        seq = found["matches"][0]["seq"] if found.get("matches") else 0
        text, _ = await agent.call(
            "read_log", job_id=job_id, host=host, after=max(seq - 3, 0), tail=6
        )
        confirmed = bool(message) and message[:40] in text
    return {
        "calls": agent.calls,
        "bytes": agent.bytes,
        "seconds": time.perf_counter() - started,
        "task": task,
        "host": host,
        "message": message,
        "found": task == TASK and host == FAILING and MESSAGE in message and confirmed,
    }


def naive(server: Any, job_id: str) -> dict[str, Any]:
    tail = server.http.get(f"/api/jobs/{job_id}/logs", params={"tail": 100, "format": "text"})
    tail.raise_for_status()
    tail_text = "\n".join(tail.json()["logs"])
    whole = server.http.get(f"/api/jobs/{job_id}/logs/download", params={"format": "text"})
    whole.raise_for_status()
    return {
        "tail_bytes": len(tail_text.encode()),
        "tail_finds": TASK in tail_text and FAILING in tail_text and MESSAGE in tail_text,
        "whole_bytes": len(whole.content),
        "whole_finds": MESSAGE in whole.text,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=80, help="debug items per host per phase")
    parser.add_argument("--filler", type=int, default=2000, help="bytes of each item's message")
    parser.add_argument("--repeat", type=int, default=3, help="agent runs over the one log")
    args = parser.parse_args()
    folder = playbooks_dir()
    os.environ.setdefault("ANSIBLE_FORKS", "10")
    try:
        with jobtrail_server(
            workers=1,
            log_max_bytes=64 * 1024 * 1024,  # one segment: nothing rotated away
            extra_args=("--playbooks", str(folder)),
        ) as server:
            started = time.perf_counter()
            job_id = server.submit(
                "ansible_playbook",
                playbook="fleet.yml",
                inventory="fleet.ini",
                extra_vars={"items_per_phase": args.items, "filler_bytes": args.filler},
            )
            job = server.wait(job_id, timeout=1800)
            run_s = time.perf_counter() - started
            runs = [asyncio.run(scripted_agent(server.url, job_id)) for _ in range(args.repeat)]
            base = naive(server, job_id)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    agent = runs[-1]
    seconds = [r["seconds"] for r in runs]
    ok = agent["found"] and agent["calls"] <= CALL_LIMIT and agent["bytes"] <= BYTES_LIMIT
    print(f"playbook: {len(HOSTS)} hosts, job {job['status']} in {run_s:.1f}s: {job['error']}")
    print(f"log: {base['whole_bytes']:,} bytes (text download)")
    print(
        f"agent (get_job -> search_log -> read_log): {agent['calls']} calls, "
        f"{agent['bytes']:,} bytes of tool output (limit {BYTES_LIMIT:,}), "
        f"median {statistics.median(seconds) * 1000:.0f} ms, found: {agent['found']}"
    )
    print(f"  task={agent['task']!r} host={agent['host']!r} message={agent['message']!r}")
    print(
        f"naive tail of 100 raw lines: {base['tail_bytes']:,} bytes, "
        f"finds task, host and message: {base['tail_finds']}"
    )
    print(
        f"naive whole log: {base['whole_bytes']:,} bytes "
        f"({base['whole_bytes'] / max(agent['bytes'], 1):,.0f}x the agent's), "
        f"finds it: {base['whole_finds']}"
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
