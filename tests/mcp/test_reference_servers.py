"""The gateway in front of the MCP project's own reference servers, as real upstreams over
stdio: `@modelcontextprotocol/server-everything` and `@modelcontextprotocol/server-filesystem`
(pinned in package.json, installed with `npm ci --prefix tests/mcp`). The client is the
official Python SDK; the server and gateway are the real `arbiter` binary."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from conftest import Stack, mcp_client, node_bin, node_upstream, npm_package, running_stack

DENIED_FILE_TOOLS = ["write_file", "edit_file", "move_file", "create_directory"]
POLICY = f"""
version: 1
agents:
  - id: "bot-*"
    tools:
      allow: ["*"]
      deny: ["everything.get-env", {", ".join(f'"files.{t}"' for t in DENIED_FILE_TOOLS)}]
      hidden: ["everything.toggle-*", "everything.gzip-file-as-resource"]
"""


def text(result: object) -> str:
    return " ".join(getattr(c, "text", "") for c in getattr(result, "content", []))


@pytest.fixture
def ref(tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    """A stack and the directory server-filesystem is confined to (with one file in it)."""
    root = tmp_path / "files"
    root.mkdir()
    (root / "notes.txt").write_text("first line\n", encoding="utf-8")
    (tmp_path / "outside.txt").write_text("not for the agent\n", encoding="utf-8")
    with running_stack(tmp_path, POLICY) as s:
        yield s, root


def upstreams(root: Path) -> str:
    everything = npm_package("server-everything", "dist/index.js")
    files = npm_package("server-filesystem", "dist/index.js")
    return node_upstream("everything", everything, "stdio") + node_upstream("files", files, str(root))


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with a digest of its contents: any write shows up here."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


async def direct_tools(script: Path, *args: str) -> list[str]:
    """What the upstream itself lists, asked directly (no gateway)."""
    params = StdioServerParameters(command=node_bin(), args=[str(script), *args])
    async with Client(params, mode="legacy") as c:
        return [t.name for t in (await c.list_tools()).tools]


def test_tools_list_of_the_reference_servers_shows_only_what_policy_allows(
    ref: tuple[Stack, Path],
) -> None:
    stack, root = ref
    gw = stack.gateway(upstreams=upstreams(root))
    everything = asyncio.run(direct_tools(npm_package("server-everything", "dist/index.js"), "stdio"))
    files = asyncio.run(direct_tools(npm_package("server-filesystem", "dist/index.js"), str(root)))

    async def run() -> list[str]:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            return [t.name for t in (await c.list_tools()).tools]

    listed = asyncio.run(run())
    # The upstreams really offer what policy takes away...
    assert {"get-env", "toggle-simulated-logging", "gzip-file-as-resource", "echo"} <= set(everything)
    assert set(DENIED_FILE_TOOLS) | {"read_text_file"} <= set(files)
    # ...and the gateway shows everything else, prefixed, in upstream order.
    hidden = {"get-env", "gzip-file-as-resource"}
    expected = [f"everything.{t}" for t in everything if t not in hidden and not t.startswith("toggle-")]
    expected += [f"files.{t}" for t in files if t not in DENIED_FILE_TOOLS]
    assert listed == expected
    assert "everything.echo" in listed and "files.read_text_file" in listed


def test_allowed_calls_to_server_everything_are_forwarded_and_recorded_once(
    ref: tuple[Stack, Path],
) -> None:
    stack, root = ref
    gw = stack.gateway(upstreams=upstreams(root))

    async def run() -> tuple[object, object]:
        async with mcp_client(gw.url, stack.keys["bot-1"], headers={"Arbiter-Session-Id": "ref-1"}) as c:
            return (
                await c.call_tool("everything.echo", {"message": "hello through the gateway"}),
                await c.call_tool("everything.get-sum", {"a": 19, "b": 23}),
            )

    echo, total = asyncio.run(run())
    assert not echo.is_error and text(echo) == "Echo: hello through the gateway", text(echo)
    assert not total.is_error and "42" in text(total), text(total)
    audit = stack.audit()
    evaluates = [e for e in audit if e["kind"] == "evaluate"]
    records = [e for e in audit if e["kind"] == "record"]
    assert [e["body"]["action"]["tool"] for e in evaluates] == ["everything.echo", "everything.get-sum"]
    assert evaluates[1]["body"]["action"]["arguments"] == {"a": 19, "b": 23}
    assert all(e["agent_id"] == "bot-1" and e["outcome"] == "allow" for e in evaluates)
    # One Record per forwarded call, each for its own decision, both successes.
    assert [r["body"]["decision_id"] for r in records] == [e["body"]["decision_id"] for e in evaluates]
    assert [r["outcome"] for r in records] == ["success", "success"]


def test_a_denied_call_never_reaches_server_filesystem(ref: tuple[Stack, Path]) -> None:
    stack, root = ref
    gw = stack.gateway(upstreams=upstreams(root))
    before = snapshot(root)
    target = str(root / "notes.txt")

    async def run() -> tuple[list[object], object]:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            denied = [
                await c.call_tool("files.write_file", {"path": target, "content": "overwritten"}),
                await c.call_tool("files.write_file", {"path": str(root / "new.txt"), "content": "x"}),
                await c.call_tool(
                    "files.edit_file",
                    {"path": target, "edits": [{"oldText": "first", "newText": "edited"}]},
                ),
                await c.call_tool(
                    "files.move_file", {"source": target, "destination": str(root / "moved.txt")}
                ),
                await c.call_tool("files.create_directory", {"path": str(root / "sub")}),
                await c.call_tool("everything.get-env", {}),
            ]
            return denied, await c.call_tool("files.read_text_file", {"path": target})

    denied, read = asyncio.run(run())
    for result in denied:
        assert result.is_error and "denied by Arbiter: scope.tool_denied" in text(result), text(result)
    assert "PATH" not in " ".join(text(r) for r in denied), "get-env's output leaked"
    # The strong check: the directory is byte for byte what it was.
    assert snapshot(root) == before
    # The allowed read went through and saw the untouched file.
    assert not read.is_error and text(read) == "first line\n", text(read)
    records = [e for e in stack.audit() if e["kind"] == "record"]
    assert len(records) == 1, "only the forwarded read is recorded"


def test_server_filesystem_stays_confined_to_its_directory(ref: tuple[Stack, Path]) -> None:
    stack, root = ref
    gw = stack.gateway(upstreams=upstreams(root))

    async def run() -> list[object]:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            return [
                await c.call_tool("files.read_text_file", {"path": str(root.parent / "outside.txt")}),
                await c.call_tool("files.read_text_file", {"path": str(root / ".." / "outside.txt")}),
                await c.call_tool("files.list_allowed_directories", {}),
            ]

    outside, traversal, allowed = asyncio.run(run())
    # Arbiter allowed the calls (reads); the upstream's own confinement refused them, and
    # the gateway passed that refusal through as the tool's error.
    for result in (outside, traversal):
        assert result.is_error and "not for the agent" not in text(result), text(result)
        assert "denied by Arbiter" not in text(result)
    assert str(root.resolve()) in text(allowed) and str(root.parent / "outside") not in text(allowed)
    assert [r["outcome"] for r in stack.audit() if r["kind"] == "record"] == [
        "failure",
        "failure",
        "success",
    ]


def test_a_long_running_tool_completes_through_the_gateway(ref: tuple[Stack, Path]) -> None:
    stack, root = ref
    gw = stack.gateway(upstreams=upstreams(root))

    async def run() -> object:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            return await c.call_tool("everything.trigger-long-running-operation", {"duration": 2, "steps": 4})

    result = asyncio.run(run())
    assert not result.is_error, text(result)
    assert "Duration: 2 seconds, Steps: 4" in text(result)
    records = [e for e in stack.audit() if e["kind"] == "record"]
    assert len(records) == 1 and records[0]["outcome"] == "success"
    assert records[0]["body"]["duration_ms"] >= 2000, records[0]["body"]


def test_the_upstreams_progress_reaches_the_client(ref: tuple[Stack, Path]) -> None:
    stack, root = ref
    gw = stack.gateway(upstreams=upstreams(root))
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async def run() -> object:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            return await c.call_tool(
                "everything.trigger-long-running-operation",
                {"duration": 1, "steps": 4},
                progress_callback=on_progress,
            )

    assert not asyncio.run(run()).is_error
    assert progress == [1, 2, 3, 4]


def children(pid: int, marker: str) -> list[int]:
    """Processes whose parent is pid and whose command line contains marker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and marker in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_server_everything_killed_mid_call_is_a_clear_error_and_is_restarted(
    ref: tuple[Stack, Path],
) -> None:
    stack, root = ref
    gw = stack.gateway(upstreams=upstreams(root))

    async def run() -> tuple[MCPError, object, list[int], list[int]]:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            await c.list_tools()
            before = children(gw.proc.pid, "server-everything")
            assert len(before) == 1, before
            call = asyncio.create_task(
                c.call_tool("everything.trigger-long-running-operation", {"duration": 20, "steps": 2})
            )
            await asyncio.sleep(1.0)
            os.kill(before[0], signal.SIGKILL)
            with pytest.raises(MCPError) as caught:
                await asyncio.wait_for(call, 15)
            for _ in range(60):
                try:
                    after = await c.call_tool("everything.echo", {"message": "back"})
                    return caught.value, after, before, children(gw.proc.pid, "server-everything")
                except MCPError as e:
                    assert e.code == -32003 and "not connected" in e.message, e
                    await asyncio.sleep(0.2)
            raise AssertionError("server-everything was not restarted")

    error, after, before, now = asyncio.run(run())
    assert error.code == -32003 and "everything" in error.message, error
    assert not after.is_error and text(after) == "Echo: back", text(after)
    assert len(now) == 1 and now != before
    outcomes = [e["outcome"] for e in stack.audit() if e["kind"] == "record"]
    assert outcomes[0] == "error" and outcomes[-1] == "success", outcomes


def test_a_hanging_reference_server_call_is_bounded_by_upstream_timeout(ref: tuple[Stack, Path]) -> None:
    stack, root = ref
    gw = stack.gateway(upstreams=upstreams(root))  # upstream_timeout: 5s

    async def run() -> tuple[MCPError, float, object]:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            started = time.monotonic()
            with pytest.raises(MCPError) as caught:
                await c.call_tool("everything.trigger-long-running-operation", {"duration": 30, "steps": 1})
            took = time.monotonic() - started
            return caught.value, took, await c.call_tool("everything.echo", {"message": "still here"})

    error, took, after = asyncio.run(run())
    assert error.code == -32003 and "did not answer" in error.message, error
    assert 4.5 <= took < 15, took
    assert not after.is_error, text(after)
