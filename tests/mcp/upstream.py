"""A real MCP server (the official Python SDK's MCPServer, over stdio) that the gateway
tests put behind the gateway. Every call it receives is appended to the file named by
FIXTURE_CALLS as one JSON line, so a test can prove that a call never reached it."""

from __future__ import annotations

import json
import os
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("fixture")


def _log(tool: str, **arguments: object) -> None:
    with open(os.environ["FIXTURE_CALLS"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"tool": tool, "arguments": arguments, "pid": os.getpid()}) + "\n")


@server.tool()
def read_file(path: str) -> str:
    """Read a file (the fixture makes its contents up)."""
    _log("read_file", path=path)
    return f"contents of {path}"


@server.tool()
def send_email(to: str, body: str) -> str:
    """Send an email."""
    _log("send_email", to=to, body=body)
    return f"sent to {to}"


@server.tool()
def delete_repo(name: str) -> str:
    """Delete a repository."""
    _log("delete_repo", name=name)
    return f"deleted {name}"


@server.tool()
def internal_debug() -> str:
    """A tool policy hides."""
    _log("internal_debug")
    return "debug"


@server.tool()
def crash() -> str:
    """Exits the server process mid-call."""
    _log("crash")
    os._exit(3)


@server.tool()
def hang(seconds: float) -> str:
    """Answers only after `seconds`."""
    _log("hang", seconds=seconds)
    time.sleep(seconds)
    return "late"


if __name__ == "__main__":
    server.run("stdio")
