"""``jobtrail mcp``: serve jobtrail's MCP tools over stdio, for an MCP client that starts
it as a subprocess; the tools reach the server at ``--url`` through ``jobtrail.client``."""

from __future__ import annotations

import argparse
import os
from typing import TypeAlias

from jobtrail.cli.exits import CLIError
from jobtrail.client import DEFAULT_URL
from jobtrail.worker.runtime import TOKEN_ENV

Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_verb(sub: Verbs) -> None:
    p = sub.add_parser("mcp", help="serve MCP over stdio for an AI agent (needs jobtrail[mcp])")
    p.add_argument(
        "--url",
        default=os.environ.get("JOBTRAIL_URL", DEFAULT_URL),
        help="the jobtrail server the tools talk to (env JOBTRAIL_URL)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help="bearer token of a server started with one (env JOBTRAIL_TOKEN)",
    )
    p.set_defaults(func=cmd_mcp)


def cmd_mcp(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("mcp") is None:
        raise CLIError("jobtrail mcp needs the MCP SDK: pip install 'jobtrail[mcp]'")
    import anyio

    from jobtrail.mcp import serve_stdio

    anyio.run(serve_stdio, args.url, args.token)
    return 0
