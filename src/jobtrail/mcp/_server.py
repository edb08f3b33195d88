"""The MCP server: one set of tools over one ``AsyncClient``, whichever transport carries
it (stdio beside any server, or /mcp inside one)."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from jobtrail.client import AsyncClient
from jobtrail.mcp._ansible import AnsibleTools
from jobtrail.mcp._jobs import JobTools
from jobtrail.mcp._logs import LogTools

INSTRUCTIONS = """\
jobtrail runs jobs (Python functions, Ansible playbooks) and keeps each job's whole log.
Answers are kept under 16 KB: each says what it left out and which call gets it.
To find out why a job failed: get_job (its failure digest), then ansible_hosts for a
playbook or search_log for the error's words, then read_log around the seq it names.
"""

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
SUBMITS = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)
CANCELS = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)


def build_server(client: AsyncClient) -> MCPServer:
    """An MCP server whose tools call ``client`` (which this server does not close)."""
    server: MCPServer = MCPServer(
        "jobtrail", instructions=INSTRUCTIONS, version=_version(), log_level="WARNING"
    )
    jobs, logs, ansible = JobTools(client), LogTools(client), AnsibleTools(client)
    for tool in (
        jobs.list_jobs,
        jobs.get_job,
        jobs.list_job_types,
        logs.read_log,
        logs.search_log,
        logs.log_summary,
        logs.wait_job,
        ansible.ansible_hosts,
    ):
        server.add_tool(tool, annotations=READ_ONLY)
    server.add_tool(jobs.submit_job, annotations=SUBMITS)
    server.add_tool(jobs.cancel_job, annotations=CANCELS)
    return server


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jobtrail")
    except PackageNotFoundError:
        return "unknown"
