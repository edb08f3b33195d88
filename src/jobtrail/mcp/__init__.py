"""jobtrail as an MCP server: the tools an agent uses to list, inspect, search, summarise,
follow, submit and cancel jobs, with every answer inside the model's context budget.

::

    MCP client ─ stdio ─► jobtrail mcp --url URL ─┐
                                                   ├─► tools (_jobs, _logs, _ansible)
    MCP client ─ HTTP ──► /mcp on the API server ──┘      └─► AsyncClient ─► the REST API
                          (McpEndpoint, in-process)             (HTTP, or in-process ASGI)

One set of tools (``_server.build_server``) over ``jobtrail.client.AsyncClient``; ``_budget``
keeps every answer under 16 KB of text and 16 KB of structured content; ``_errors`` turns
client errors into tool errors that say what to do next. The SDK (``mcp``) is the extra
``mcp``: this package imports it only when it serves, so the API server runs without it
(its /mcp then answers 501 saying how to install it).
"""

from jobtrail.mcp._http import PATH, McpEndpoint

__all__ = ["PATH", "McpEndpoint", "serve_stdio"]


async def serve_stdio(url: str, token: str | None) -> None:
    """``jobtrail mcp``: MCP over stdio against the server at ``url``."""
    from jobtrail.mcp._stdio import serve_stdio as serve

    await serve(url, token)
