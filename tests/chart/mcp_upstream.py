"""A minimal MCP server over stdio (newline-delimited JSON-RPC, stdlib only) for the
rendered pod's in-process gateway: the chart's test venv has no MCP SDK. It answers
`initialize`, `tools/list` and `tools/call`, and appends every call it runs to the file
named by FIXTURE_CALLS, so a test can tell which calls reached it."""

from __future__ import annotations

import json
import os
import sys

TOOLS = [
    {"name": name, "description": f"{name} (fixture)", "inputSchema": {"type": "object"}}
    for name in ("search_kb", "delete_ticket")
]


def answer(request: dict) -> dict:
    method = request.get("method")
    params = request.get("params") or {}
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "chart-fixture", "version": "1"},
        }
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        with open(os.environ["FIXTURE_CALLS"], "a", encoding="utf-8") as f:
            f.write(json.dumps(params) + "\n")
        return {"content": [{"type": "text", "text": f"ran {params.get('name')}"}], "isError": False}
    if method == "ping":
        return {}
    raise LookupError(method)


for line in sys.stdin:
    request = json.loads(line)
    if "id" not in request:
        continue  # a notification
    try:
        reply = {"jsonrpc": "2.0", "id": request["id"], "result": answer(request)}
    except LookupError as e:
        reply = {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": f"no method {e}"}}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
