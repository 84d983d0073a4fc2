"""A real MCP server (the official Python SDK's MCPServer, over stdio) for the price tests:
`lookup` returns a plain result (the gateway charges its configured price), `metered`
reports what it cost in its result's `_meta["io.github.arbiter/usage"]` (the gateway
records that instead). Every call is appended to FIXTURE_CALLS as one JSON line."""

from __future__ import annotations

import json
import os

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent

server = MCPServer("metered")


def _log(tool: str, **arguments: object) -> None:
    with open(os.environ["FIXTURE_CALLS"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool()
def lookup(q: str) -> str:
    """Look something up (a paid API behind the tool)."""
    _log("lookup", q=q)
    return f"found {q}"


@server.tool()
def metered(q: str, micro_usd: int) -> CallToolResult:
    """Look something up and report what it cost."""
    _log("metered", q=q, micro_usd=micro_usd)
    return CallToolResult(
        content=[TextContent(type="text", text=f"found {q}")],
        _meta={"io.github.arbiter/usage": {"micro_usd": micro_usd}},
    )


if __name__ == "__main__":
    server.run()
