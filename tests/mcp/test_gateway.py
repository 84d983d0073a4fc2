"""The MCP gateway end to end: the real `arbiter` server and gateway, the official
Python MCP SDK as client, and a real MCP server upstream that logs every call it gets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import time

import httpx2
import pytest
from mcp import Client, StdioServerParameters, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import ARBITER, POLICY, Stack, free_port, mcp_client, stop

HALTED = -32001
UNDECIDED = -32002
UPSTREAM = -32003


def text(result: object) -> str:
    return " ".join(getattr(c, "text", "") for c in getattr(result, "content", []))


def approval_id(result: object) -> str:
    found = re.search(r"apr_[0-9a-f]+", text(result))
    assert found, text(result)
    return found.group(0)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_tools_list_shows_only_what_policy_lets_the_agent_see(stack: Stack, mode: str) -> None:
    gw = stack.gateway()

    async def run() -> list[str]:
        async with mcp_client(gw.url, stack.keys["bot-1"], mode) as c:
            return [t.name for t in (await c.list_tools()).tools]

    # Upstream order, minus delete_repo (denied) and internal_debug (hidden).
    assert asyncio.run(run()) == ["read_file", "send_email", "crash", "garble", "hang"]


def test_tools_list_changed_is_sent_only_when_policy_changes_what_the_session_sees(
    stack: Stack,
) -> None:
    gw = stack.gateway(extra="list_watch: 500ms")
    seen: list[object] = []

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            seen.append(message)

    async def wait_for(count: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while len(seen) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def run() -> tuple[list[str], int, int, list[str]]:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {stack.keys['bot-1']}"}, timeout=60)
        transport = streamable_http_client(gw.url, http_client=http)
        async with http, Client(transport, mode="legacy", message_handler=on_message) as c:
            before = [t.name for t in (await c.list_tools()).tools]
            # Several watch rounds with nothing changed: no notification.
            await asyncio.sleep(2.0)
            quiet = len(seen)
            # The server hot-reloads its bundle: read_file becomes hidden for bot-*.
            hidden = '["internal_*", "*.internal_*", "read_file"]'
            policy = POLICY.replace('["internal_*", "*.internal_*"]', hidden)
            stack.tmp.joinpath("policy.yaml").write_text(policy, encoding="utf-8")
            await wait_for(1, 20.0)
            after = [t.name for t in (await c.list_tools()).tools]
            # Re-listed and nothing changed since: no second notification.
            await asyncio.sleep(2.0)
            return before, quiet, len(seen), after

    before, quiet, total, after = asyncio.run(run())
    assert before == ["read_file", "send_email", "crash", "garble", "hang"]
    assert quiet == 0
    assert total == 1
    assert after == ["send_email", "crash", "garble", "hang"]


async def logged_call(
    url: str, key: str, mode: str, level: str | None, seconds: float
) -> list[tuple[str, str]]:
    """hang(seconds) with a client that asked for log messages at `level` (setLevel on a
    legacy session, `_meta` on 2026-07-28 requests), or for none; what it received."""
    got: list[tuple[str, str]] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        got.append((str(params.level), str(params.data)))

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
    per_request = {"log_level": level} if mode == "auto" and level else {}
    transport = streamable_http_client(url, http_client=http)
    client = Client(transport, mode=mode, logging_callback=on_log, **per_request)
    async with http, client as c:
        if mode == "legacy" and level:
            await c.set_logging_level(level)  # type: ignore[arg-type]
        result = await c.call_tool("hang", {"seconds": seconds})
        assert not result.is_error, text(result)
        await asyncio.sleep(0.3)  # notifications are handled on the client's own task
    return got


LOGGING_DEPRECATED = "ignore:The logging capability is deprecated"


@pytest.mark.filterwarnings(LOGGING_DEPRECATED)
@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_an_upstreams_log_messages_reach_the_client_that_asked_at_its_level(stack: Stack, mode: str) -> None:
    gw = stack.gateway()
    key = stack.keys["bot-1"]
    assert asyncio.run(logged_call(gw.url, key, mode, "info", 0.05)) == [
        ("info", "hang: waiting 0.05s"),
        ("warning", "hang: done after 0.05s"),
    ]
    # A client that asked for nothing gets nothing.
    assert asyncio.run(logged_call(gw.url, key, mode, None, 0.05)) == []


@pytest.mark.filterwarnings(LOGGING_DEPRECATED)
def test_log_messages_during_two_agents_calls_reach_neither(stack: Stack) -> None:
    gw = stack.gateway()

    async def run() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        first = asyncio.create_task(logged_call(gw.url, stack.keys["bot-1"], "legacy", "debug", 1.0))
        await asyncio.sleep(0.3)
        second = await logged_call(gw.url, stack.keys["bot-2"], "legacy", "debug", 1.2)
        return await first, second

    first, second = asyncio.run(run())
    # bot-1's call was alone when it started, bot-2's when it ended; everything the
    # upstream said while both ran could be either's, so neither got it.
    assert first == [("debug", "hang: starting 1.0s"), ("info", "hang: waiting 1.0s")]
    assert second == [("warning", "hang: done after 1.2s")]


def test_a_2026_client_listening_is_told_when_policy_changes_what_it_sees(stack: Stack) -> None:
    gw = stack.gateway(extra="list_watch: 500ms")

    async def run() -> tuple[list[str], bool, bool, list[str]]:
        async with mcp_client(gw.url, stack.keys["bot-1"], "auto") as c:
            before = [t.name for t in (await c.list_tools()).tools]
            async with c.listen(tools_list_changed=True) as sub:
                honored = bool(sub.honored and sub.honored.tools_list_changed)
                events = aiter(sub)
                # Several watch rounds with nothing changed: no event.
                try:
                    await asyncio.wait_for(anext(events), 2.0)
                    quiet = False
                except TimeoutError:
                    quiet = True
                # The server hot-reloads its bundle: read_file becomes hidden for bot-*.
                hidden = '["internal_*", "*.internal_*", "read_file"]'
                policy = POLICY.replace('["internal_*", "*.internal_*"]', hidden)
                stack.tmp.joinpath("policy.yaml").write_text(policy, encoding="utf-8")
                await asyncio.wait_for(anext(events), 20.0)
                after = [t.name for t in (await c.list_tools()).tools]
            return before, honored, quiet, after

    before, honored, quiet, after = asyncio.run(run())
    assert honored, "the gateway accepted tools/list_changed on the stream"
    assert quiet, "no event while nothing changed"
    assert before == ["read_file", "send_email", "crash", "garble", "hang"]
    assert after == ["send_email", "crash", "garble", "hang"]


def test_without_list_watch_a_listen_stream_honours_nothing(stack: Stack) -> None:
    gw = stack.gateway(extra="list_watch: 0s")

    async def run() -> object:
        key = stack.keys["bot-1"]
        async with mcp_client(gw.url, key, "auto") as c, c.listen(tools_list_changed=True) as sub:
            return sub.honored

    honored = asyncio.run(run())
    assert not getattr(honored, "tools_list_changed", None), honored


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_an_allowed_call_is_forwarded_and_recorded_once(stack: Stack, mode: str) -> None:
    gw = stack.gateway()

    async def run() -> object:
        headers = {"Arbiter-Session-Id": "run-7"}
        async with mcp_client(gw.url, stack.keys["bot-1"], mode, headers) as c:
            return await c.call_tool("read_file", {"path": "/srv/a.txt"})

    result = asyncio.run(run())
    assert not result.is_error, text(result)
    assert text(result) == "contents of /srv/a.txt"
    assert [c["tool"] for c in gw.calls()] == ["read_file"]
    audit = stack.audit()
    evaluates = [e for e in audit if e["kind"] == "evaluate"]
    assert len(evaluates) == 1
    decision = evaluates[0]
    assert decision["agent_id"] == "bot-1"
    assert decision["body"]["action"]["tool"] == "read_file"
    assert decision["body"]["action"]["arguments"] == {"path": "/srv/a.txt"}
    if mode == "auto":
        # No MCP session in 2026-07-28: the documented header names the run.
        assert decision["session_id"] == "run-7"
    else:
        assert decision["session_id"], "the legacy MCP session is the Arbiter session"
    records = [e for e in audit if e["kind"] == "record"]
    assert len(records) == 1
    assert records[0]["outcome"] == "success"
    assert records[0]["body"]["decision_id"] == decision["body"]["decision_id"]


def test_a_denied_call_never_reaches_the_upstream(stack: Stack) -> None:
    gw = stack.gateway()

    async def run() -> tuple[object, object]:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            return (
                await c.call_tool("delete_repo", {"name": "prod"}),
                await c.call_tool("internal_debug", {}),
            )

    denied, hidden = asyncio.run(run())
    assert denied.is_error and "denied by Arbiter: scope.tool_denied" in text(denied)
    assert hidden.is_error and "denied by Arbiter: scope.tool_hidden" in text(hidden)
    assert gw.calls() == []
    assert not [e for e in stack.audit() if e["kind"] == "record"]


def test_a_held_call_completes_when_an_operator_approves_it_with_the_cli(stack: Stack) -> None:
    gw = stack.gateway(approval_wait="60s")
    approved: list[str] = []

    def operator() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not approved:
            out = stack.cli("approvals", "list", "--state", "pending", key="operator").stdout
            for found in re.findall(r"apr_[0-9a-f]+", out):
                stack.cli("approvals", "approve", found, key="operator")
                approved.append(found)
            time.sleep(0.2)

    helper = threading.Thread(target=operator)
    helper.start()

    async def run() -> object:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            return await c.call_tool("send_email", {"to": "cfo@example.com", "body": "hi"})

    result = asyncio.run(run())
    helper.join()
    assert approved, "no pending approval appeared"
    assert not result.is_error, text(result)
    assert text(result) == "sent to cfo@example.com"
    assert [c["tool"] for c in gw.calls()] == ["send_email"]
    evaluates = [e for e in stack.audit() if e["kind"] == "evaluate"]
    # The first Evaluate asked for the approval, the second consumed it.
    assert [e["outcome"] for e in evaluates] == ["pending_approval", "allow"]
    assert evaluates[1]["body"]["approval_id"] == approved[0]


def test_an_approval_unlocks_only_its_own_arguments_and_only_once(stack: Stack) -> None:
    gw = stack.gateway(approval_wait="0s")
    mail = {"to": "a@example.com", "body": "x"}
    other = {"to": "attacker@example.com", "body": "x"}

    async def call(args: dict[str, str]) -> object:
        # A new MCP session per call: the retry need not come from the same connection.
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            return await c.call_tool("send_email", args)

    first = asyncio.run(call(mail))
    assert first.is_error and "approval required" in text(first)
    granted = approval_id(first)
    stack.cli("approvals", "approve", granted, key="operator")

    refused = asyncio.run(call(other))
    assert refused.is_error and approval_id(refused) != granted
    assert gw.calls() == []

    done = asyncio.run(call(mail))
    assert not done.is_error, text(done)
    assert [c["arguments"] for c in gw.calls()] == [mail]

    again = asyncio.run(call(mail))
    assert again.is_error and approval_id(again) not in (granted, approval_id(refused))
    assert len(gw.calls()) == 1


def test_a_halt_stops_the_next_call_with_a_jsonrpc_error(stack: Stack) -> None:
    gw = stack.gateway()

    async def run() -> MCPError:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            assert not (await c.call_tool("read_file", {"path": "a"})).is_error
            stack.cli("halt", "--agent", "bot-1", "--reason", "incident", key="operator")
            with pytest.raises(MCPError) as caught:
                await c.call_tool("read_file", {"path": "b"})
            return caught.value

    error = asyncio.run(run())
    assert error.code == HALTED and "halted" in error.message
    assert [c["arguments"] for c in gw.calls()] == [{"path": "a"}]


def test_an_unreachable_arbiter_fails_closed(stack: Stack) -> None:
    gw = stack.gateway()

    async def run() -> MCPError:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            await c.list_tools()
            stop(stack.server)
            with pytest.raises(MCPError) as caught:
                await c.call_tool("read_file", {"path": "a"})
            return caught.value

    error = asyncio.run(run())
    assert error.code == UNDECIDED and "not forwarded" in error.message
    assert gw.calls() == []


def test_keys_that_do_not_name_exactly_one_agent_are_refused(stack: Stack) -> None:
    gw = stack.gateway()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
    cases = {
        None: 401,
        "arb_not-a-real-key": 401,
        stack.keys["operator"]: 403,
        stack.keys["glob"]: 403,
    }
    for key, status in cases.items():
        h = dict(headers)
        if key:
            h["Authorization"] = f"Bearer {key}"
        r = httpx2.post(gw.url, json=body, headers=h, timeout=30)
        assert r.status_code == status, (key, r.status_code, r.text)
    assert gw.calls() == []


def test_an_origin_not_allowed_is_refused(stack: Stack) -> None:
    gw = stack.gateway()
    r = httpx2.post(
        gw.url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
        headers={
            "Authorization": f"Bearer {stack.keys['bot-1']}",
            "Accept": "application/json, text/event-stream",
            "Origin": "https://evil.example",
        },
        timeout=30,
    )
    assert r.status_code == 403, r.text


def test_a_session_cannot_be_used_by_another_agent(stack: Stack) -> None:
    gw = stack.gateway()

    async def call(key: str) -> object:
        async with mcp_client(gw.url, key, headers={"Arbiter-Session-Id": "shared-run"}) as c:
            return await c.call_tool("read_file", {"path": "a"})

    assert not asyncio.run(call(stack.keys["bot-1"])).is_error
    with pytest.raises(BaseException) as caught:
        asyncio.run(call(stack.keys["bot-2"]))
    assert "another agent" in repr(caught.value) or "another agent" in str(caught.value)
    assert len(gw.calls()) == 1


def test_an_upstream_crash_is_a_clear_error_and_the_server_is_restarted(stack: Stack) -> None:
    gw = stack.gateway()

    async def run() -> tuple[MCPError, object]:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            with pytest.raises(MCPError) as caught:
                await c.call_tool("crash", {})
            # The supervisor restarts the stdio server; until it is back, a call fails
            # with a clear "not connected" error (bounded, never a hang).
            for _ in range(30):
                try:
                    return caught.value, await c.call_tool("read_file", {"path": "a"})
                except MCPError as e:
                    assert e.code == UPSTREAM and "not connected" in e.message, e
            raise AssertionError("the upstream was not restarted")

    error, after = asyncio.run(run())
    assert error.code == UPSTREAM and "fixture" in error.message
    assert not after.is_error, text(after)
    pids = [c["pid"] for c in gw.calls()]
    assert len(pids) == 2 and pids[0] != pids[1], pids
    outcomes = [e["outcome"] for e in stack.audit() if e["kind"] == "record"]
    assert outcomes[0] == "error" and outcomes[-1] == "success", outcomes
    assert set(outcomes[1:-1]) <= {"error"}, outcomes


def test_a_hanging_upstream_times_out_with_a_clear_error(stack: Stack) -> None:
    gw = stack.gateway()

    async def run() -> MCPError:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            with pytest.raises(MCPError) as caught:
                await c.call_tool("hang", {"seconds": 30})
            return caught.value

    error = asyncio.run(run())
    assert error.code == UPSTREAM and "did not answer" in error.message
    # The gateway cancelled the call upstream rather than leaving it running.
    deadline = time.monotonic() + 5
    while [c["tool"] for c in gw.calls()] != ["hang", "hang.cancelled"]:
        assert time.monotonic() < deadline, gw.calls()
        time.sleep(0.05)


def test_stdio_mode_serves_one_agent_with_its_own_key(stack: Stack) -> None:
    config = stack.gateway_config()
    env = {**os.environ, "ARBITER_API_KEY": stack.keys["bot-1"]}
    params = StdioServerParameters(
        command=ARBITER,
        args=["mcp-gateway", "--config", str(config), "--stdio", "--agent", "bot-1"],
        env=env,
    )

    async def run() -> tuple[list[str], object]:
        async with Client(params, mode="legacy") as c:
            names = [t.name for t in (await c.list_tools()).tools]
            return names, await c.call_tool("read_file", {"path": "s"})

    names, result = asyncio.run(run())
    assert names == ["read_file", "send_email", "crash", "garble", "hang"]
    assert text(result) == "contents of s"
    calls = stack.tmp.joinpath("calls.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["tool"] for line in calls] == ["read_file"]


def test_stdio_mode_refuses_a_key_bound_to_another_agent(stack: Stack) -> None:
    config = stack.gateway_config()
    env = {**os.environ, "ARBITER_API_KEY": stack.keys["bot-2"]}
    done = subprocess.run(
        [ARBITER, "mcp-gateway", "--config", str(config), "--stdio", "--agent", "bot-1"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "acts for agent bot-2, not bot-1" in done.stderr


def modern_call(gw_url: str, key: str, body_name: str, header_name: str) -> httpx2.Response:
    """A raw 2026-07-28 tools/call whose Mcp-Name header may disagree with its body."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": body_name, "arguments": {"path": "p"}, "_meta": meta},
    }
    headers = {
        "Authorization": f"Bearer {key}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": header_name,
    }
    return httpx2.post(gw_url, json=body, headers=headers, timeout=30)


def test_an_mcp_name_header_that_disagrees_with_the_body_is_refused(stack: Stack) -> None:
    gw = stack.gateway()
    matching = modern_call(gw.url, stack.keys["bot-1"], "read_file", "read_file")
    assert matching.status_code == 200 and "contents of p" in matching.text, matching.text
    mismatch = modern_call(gw.url, stack.keys["bot-1"], "read_file", "send_email")
    assert mismatch.status_code == 400 and "-32020" in mismatch.text, mismatch.text
    assert len(gw.calls()) == 1


def test_several_upstreams_are_prefixed_and_an_http_upstream_gets_only_the_gateways_credentials(
    stack: Stack,
) -> None:
    port = stack.http_upstream("remote.jsonl")
    upstreams = stack.stdio_upstream("local") + (
        f"  - name: remote\n    http:\n      url: http://127.0.0.1:{port}/mcp\n"
        "      headers: {X-Upstream-Key: gateway-secret}\n"
    )
    gw = stack.gateway(upstreams=upstreams)

    async def run() -> tuple[list[str], object, MCPError]:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            names = [t.name for t in (await c.list_tools()).tools]
            result = await c.call_tool("remote.read_file", {"path": "r"})
            with pytest.raises(MCPError) as unknown:
                await c.call_tool("elsewhere.read_file", {"path": "r"})
            return names, result, unknown.value

    names, result, unknown = asyncio.run(run())
    visible = ["read_file", "send_email", "crash", "garble", "hang"]
    assert names == [f"local.{t}" for t in visible] + [f"remote.{t}" for t in visible]
    assert text(result) == "contents of r"
    assert unknown.code == -32602
    assert gw.calls() == []
    remote = [json.loads(line) for line in (stack.tmp / "remote.jsonl").read_text().splitlines()]
    assert [c["tool"] for c in remote] == ["read_file"]
    assert remote[0]["x_upstream_key"] == "gateway-secret"
    assert stack.keys["bot-1"] not in str(remote[0]["authorization"])
    evaluates = [e for e in stack.audit() if e["kind"] == "evaluate"]
    assert [e["body"]["action"]["tool"] for e in evaluates] == ["remote.read_file"]


def test_an_oversized_request_is_refused(stack: Stack) -> None:
    gw = stack.gateway()
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "read_file", "arguments": {"path": "x" * 70_000}},
    }
    r = httpx2.post(
        gw.url,
        json=body,
        headers={
            "Authorization": f"Bearer {stack.keys['bot-1']}",
            "Accept": "application/json, text/event-stream",
        },
        timeout=30,
    )
    assert r.status_code == 413 and "65536" in r.text, r.text
    assert gw.calls() == []


def test_metrics_count_calls_per_upstream_by_outcome(stack: Stack) -> None:
    port = free_port()
    gw = stack.gateway(extra=f'metrics: {{listen: "127.0.0.1:{port}"}}')

    async def run() -> None:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            await c.call_tool("read_file", {"path": "a"})
            await c.call_tool("read_file", {"path": "b"})
            await c.call_tool("delete_repo", {"name": "x"})
            await c.call_tool("send_email", {"to": "t", "body": "b"})

    asyncio.run(run())
    metrics = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    for line in [
        'arbiter_mcp_tool_calls_total{outcome="forwarded",upstream="fixture"} 2',
        'arbiter_mcp_tool_calls_total{outcome="denied",upstream="fixture"} 1',
        'arbiter_mcp_tool_calls_total{outcome="pending",upstream="fixture"} 1',
        'arbiter_mcp_upstream_call_seconds_count{upstream="fixture"} 2',
    ]:
        assert line in metrics, f"{line} missing from\n{metrics}"


def test_malformed_upstream_output_never_hangs_the_client(stack: Stack) -> None:
    gw = stack.gateway()

    async def run() -> tuple[str, object]:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            try:
                garbled = text(await c.call_tool("garble", {}))
            except MCPError as e:
                assert e.code == UPSTREAM, e
                garbled = e.message
            return garbled, await c.call_tool("read_file", {"path": "after"})

    garbled, after = asyncio.run(run())
    assert garbled
    assert text(after) == "contents of after"


def hook(gw_url: str, key: str, payload: dict[str, object]) -> httpx2.Response:
    url = gw_url.rsplit("/", 1)[0] + "/hooks/claude-code"
    return httpx2.post(url, json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_the_claude_code_hook_contract(stack: Stack) -> None:
    gw = stack.gateway()
    key = stack.keys["bot-1"]
    base = {"session_id": "claude-run-1", "cwd": "/w", "transcript_path": "/t.jsonl"}
    pre = {**base, "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_use_id": "toolu_1"}
    allowed = hook(gw.url, key, {**pre, "tool_input": {"command": "ls"}})
    assert allowed.status_code == 200
    assert allowed.json()["hookSpecificOutput"]["permissionDecision"] == "allow"
    post = {
        **base,
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_use_id": "toolu_1",
        "tool_input": {"command": "ls"},
        "tool_response": {"stdout": "a\n", "stderr": ""},
    }
    assert hook(gw.url, key, post).json() == {}

    denied = hook(gw.url, key, {**pre, "tool_name": "delete_repo", "tool_input": {"name": "x"}}).json()
    assert denied["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert "scope.tool_denied" in denied["hookSpecificOutput"]["permissionDecisionReason"]

    held = hook(gw.url, key, {**pre, "tool_name": "send_email", "tool_input": {"to": "a", "body": "b"}})
    reason = held.json()["hookSpecificOutput"]["permissionDecisionReason"]
    assert held.json()["hookSpecificOutput"]["permissionDecision"] == "deny" and "apr_" in reason

    stack.cli("halt", "--agent", "bot-1", "--reason", "incident", key="operator")
    halted = hook(gw.url, key, {**pre, "tool_input": {"command": "ls"}}).json()
    assert halted["continue"] is False and halted["hookSpecificOutput"]["permissionDecision"] == "deny"

    assert hook(gw.url, "arb_wrong", pre).status_code == 401
    audit = stack.audit()
    evaluates = [e for e in audit if e["kind"] == "evaluate"]
    assert [(e["body"]["action"]["tool"], e["outcome"]) for e in evaluates] == [
        ("Bash", "allow"),
        ("delete_repo", "deny"),
        ("send_email", "pending_approval"),
        ("Bash", "deny"),
    ]
    assert all(e["session_id"] == "claude-run-1" for e in evaluates)
    records = [e for e in audit if e["kind"] == "record"]
    assert [r["body"]["decision_id"] for r in records] == [evaluates[0]["body"]["decision_id"]]
    assert gw.calls() == []


def docker_hook(gw_url: str, key: str, when: str, body: bytes, session: str = "") -> httpx2.Response:
    url = gw_url.rsplit("/", 1)[0] + f"/hooks/docker/{key}/{when}"
    params = {"session": session} if session else {}
    # Docker sends no headers of its own and no Authorization: the key is in the path.
    return httpx2.post(url, content=body, params=params, timeout=30)


def go_request(name: str, arguments: dict[str, object]) -> bytes:
    """What Docker's gateway posts: json.Marshal of go-sdk's *mcp.CallToolRequest (its
    struct fields are untagged, so they keep their Go names; Params has JSON tags)."""
    params = {"_meta": {}, "name": name, "arguments": arguments}
    return json.dumps({"Session": {}, "Params": params, "Extra": None}).encode()


def test_the_docker_interceptor_contract(stack: Stack) -> None:
    gw = stack.gateway()
    key = stack.keys["bot-1"]
    run = "docker-run-1"

    allowed = docker_hook(gw.url, key, "before", go_request("read_file", {"path": "/a"}), run)
    assert (allowed.status_code, allowed.content) == (200, b""), allowed.text  # empty = continue
    result = json.dumps({"content": [{"type": "text", "text": "a"}]}).encode()
    after = docker_hook(gw.url, key, "after", result)
    assert (after.status_code, after.content) == (200, b"")

    # The documented shape works too; a denial replaces the call with an isError result.
    documented = {"method": "tools/call", "params": {"name": "delete_repo", "arguments": {"name": "x"}}}
    denied = docker_hook(gw.url, key, "before", json.dumps(documented).encode(), run).json()
    assert denied["isError"] is True and "scope.tool_denied" in denied["content"][0]["text"]

    held = docker_hook(gw.url, key, "before", go_request("send_email", {"to": "a", "body": "b"}), run).json()
    assert held["isError"] is True and "apr_" in held["content"][0]["text"]

    # Two calls in flight, one result back: it cannot be attributed, so nothing is recorded.
    for _ in range(2):
        assert docker_hook(gw.url, key, "before", go_request("read_file", {"path": "/b"}), run).content == b""
    assert docker_hook(gw.url, key, "after", b'{"content":[]}').content == b""

    # Docker ignores the status and continues on an empty body: every refusal has a body.
    wrong_key = docker_hook(gw.url, "arb_wrong", "before", go_request("read_file", {"path": "/a"}))
    assert wrong_key.status_code == 401 and wrong_key.json()["isError"] is True
    malformed = docker_hook(gw.url, key, "before", b'{"params":{"arguments":{}}}')
    assert malformed.json()["isError"] is True and "params.name" in malformed.json()["content"][0]["text"]
    not_json = docker_hook(gw.url, key, "before", b"not json")
    assert not_json.json()["isError"] is True

    stack.cli("halt", "--agent", "bot-1", "--reason", "incident", key="operator")
    halted = docker_hook(gw.url, key, "before", go_request("read_file", {"path": "/a"}), run).json()
    assert halted["isError"] is True and "halt" in halted["content"][0]["text"]

    audit = stack.audit()
    evaluates = [e for e in audit if e["kind"] == "evaluate"]
    assert [(e["body"]["action"]["tool"], e["outcome"]) for e in evaluates] == [
        ("read_file", "allow"),
        ("delete_repo", "deny"),
        ("send_email", "pending_approval"),
        ("read_file", "allow"),
        ("read_file", "allow"),
        ("read_file", "deny"),
    ]
    assert all(e["session_id"] == run for e in evaluates)
    records = [e for e in audit if e["kind"] == "record"]
    assert [(r["body"]["decision_id"], r["outcome"]) for r in records] == [
        (evaluates[0]["body"]["decision_id"], "success")
    ]
    assert gw.calls() == []  # the gateway's own upstream is never involved


def test_an_upstream_with_receipts_gets_one_it_can_verify_offline(stack: Stack) -> None:
    with_receipts = stack.stdio_upstream().rstrip("\n") + "\n    receipts: true\n"
    gw = stack.gateway(upstreams=with_receipts)

    async def run() -> None:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            assert not (await c.call_tool("read_file", {"path": "/etc/motd"})).is_error

    asyncio.run(run())
    [call] = gw.calls()
    receipt = call["receipt"]
    assert isinstance(receipt, dict)
    entry = json.loads(str(receipt["entry"]))
    # What a tool server checks before acting (docs/audit-format.md §11.7).
    assert (entry["kind"], entry["outcome"], entry["agent_id"]) == ("evaluate", "allow", "bot-1")
    assert entry["body"]["action"]["tool"] == "read_file"
    assert entry["body"]["action"]["arguments"] == {"path": "/etc/motd"}

    public_key = stack.tmp / "data" / "keys" / "signing.pub"
    good = stack.tmp / "receipt.json"
    good.write_text(json.dumps(receipt), encoding="utf-8")
    verified = stack.cli("audit", "verify-receipt", str(good), "--public-key", str(public_key), check=False)
    assert verified.returncode == 0, verified.stderr

    # A receipt rewritten to permit another call no longer verifies.
    forged = dict(receipt, entry=str(receipt["entry"]).replace("/etc/motd", "/etc/shadow"))
    bad = stack.tmp / "forged.json"
    bad.write_text(json.dumps(forged), encoding="utf-8")
    refused = stack.cli("audit", "verify-receipt", str(bad), "--public-key", str(public_key), check=False)
    assert refused.returncode != 0


def test_an_upstream_without_receipts_gets_none(stack: Stack) -> None:
    gw = stack.gateway()

    async def run() -> None:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            assert not (await c.call_tool("read_file", {"path": "/a"})).is_error

    asyncio.run(run())
    [call] = gw.calls()
    assert "receipt" not in call
