"""``jobtrail mcp``: MCP over stdio, the tools talking to a server over HTTP, so it runs
beside any jobtrail server, local or remote, as an MCP client's subprocess."""

from __future__ import annotations

from jobtrail.client import AsyncClient
from jobtrail.mcp._server import build_server


async def serve_stdio(url: str, token: str | None) -> None:
    """Serve MCP on this process's stdin and stdout until the client closes them."""
    async with AsyncClient(url, token=token) as client:
        await build_server(client).run_stdio_async()
