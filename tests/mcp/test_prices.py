"""Per-tool prices: the gateway sends each tool's price (gateway.yaml
`upstreams[].prices`, micro-USD per call) as Evaluate's estimate, so an Arbiter budget caps
MCP spend, and Records the usage a result reports, else the price; the Claude Code hook
and the Docker interceptors do the same with `hooks.claude_code.prices` and
`hooks.docker.prices`. Real server, real gateway, the Python SDK
as client, a real MCP server upstream that logs every call."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from conftest import HERE, Gateway, Stack, mcp_client, running_stack

POLICY = """
version: 1
agents:
  - id: "bot-*"
    tools:
      allow: ["*"]
budgets:
  - {name: mcp-spend, scope: agent, period: lifetime, max_usd: "0.05"}
"""


@pytest.fixture
def priced(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, POLICY) as s:
        yield s


def gateway(stack: Stack, prices: str) -> Gateway:
    upstream = f"""
  - name: metered
    prices: {prices}
    stdio:
      command: {json.dumps(sys.executable)}
      args: [{json.dumps(str(HERE / "metered_upstream.py"))}]
      env: {{FIXTURE_CALLS: {json.dumps(str(stack.tmp / "calls.jsonl"))}}}
"""
    return stack.gateway(upstreams=upstream)


def text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def calls(gw: Gateway, stack: Stack, *steps: tuple[str, dict[str, Any]]) -> list[Any]:
    async def run() -> list[Any]:
        async with mcp_client(gw.url, stack.keys["bot-1"]) as c:
            return [await c.call_tool(tool, args) for tool, args in steps]

    return asyncio.run(run())


def records(stack: Stack) -> list[dict[str, Any]]:
    return [e for e in stack.audit() if e["kind"] == "record"]


def test_a_budget_cap_stops_the_nth_priced_call_before_the_upstream(priced: Stack) -> None:
    gw = gateway(priced, "{lookup: 20000}")
    results = calls(gw, priced, *[("lookup", {"q": f"q{i}"}) for i in range(3)])
    assert [r.is_error for r in results] == [False, False, True], [text(r) for r in results]
    assert "denied by Arbiter: budget.exceeded" in text(results[2])
    # 2 x 0.02 USD spent; the third would make 0.06 > 0.05: the upstream never saw it.
    assert [c["arguments"] for c in gw.calls()] == [{"q": "q0"}, {"q": "q1"}]
    evaluates = [e for e in priced.audit() if e["kind"] == "evaluate"]
    assert [e["outcome"] for e in evaluates] == ["allow", "allow", "deny"]
    assert evaluates[0]["body"]["action"]["estimate"]["micro_usd"] == 20000
    assert [r["body"]["actual"]["micro_usd"] for r in records(priced)] == [20000, 20000]


def test_usage_a_result_reports_is_what_is_charged(priced: Stack) -> None:
    # `metered` is priced at 1 micro-USD but reports 0.04 USD: the report is charged, so
    # the next 0.02 USD call no longer fits under the 0.05 USD cap (the prices alone would).
    gw = gateway(priced, "{lookup: 20000, metered: 1}")
    first, second = calls(gw, priced, ("metered", {"q": "a", "micro_usd": 40000}), ("lookup", {"q": "b"}))
    assert not first.is_error, text(first)
    assert second.is_error and "budget.exceeded" in text(second), text(second)
    assert [c["tool"] for c in gw.calls()] == ["metered"]
    (record,) = records(priced)
    assert record["body"]["reserved"]["micro_usd"] == 1
    assert record["body"]["actual"]["micro_usd"] == 40000 and record["body"]["overspend"]


def claude_code(gw: Gateway, key: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One Claude Code HTTP hook request, as Claude Code posts it."""
    url = gw.url.rsplit("/", 1)[0] + "/hooks/claude-code"
    base = {"session_id": "claude-run-1", "cwd": "/w", "transcript_path": "/t.jsonl"}
    headers = {"Authorization": f"Bearer {key}"}
    answer = httpx2.post(url, json={**base, **payload}, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_claude_code_tools_are_priced_by_their_own_names_until_the_budget_runs_out(priced: Stack) -> None:
    gw = priced.gateway(extra="hooks: {claude_code: {prices: {Bash: 20000}}}")
    key = priced.keys["bot-1"]
    decisions = []
    for i in range(3):
        pre = {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_use_id": f"toolu_{i}"}
        answer = claude_code(gw, key, {**pre, "tool_input": {"command": f"echo {i}"}})["hookSpecificOutput"]
        decisions.append((answer["permissionDecision"], answer["permissionDecisionReason"]))
        if answer["permissionDecision"] == "allow":
            post = {**pre, "hook_event_name": "PostToolUse", "tool_response": {"stdout": f"{i}\n"}}
            assert claude_code(gw, key, {**post, "tool_input": {"command": f"echo {i}"}}) == {}
    # 2 x 0.02 USD spent; a third would make 0.06 > 0.05.
    assert [d for d, _ in decisions] == ["allow", "allow", "deny"], decisions
    assert "budget.exceeded" in decisions[2][1]
    # An unpriced tool costs nothing, so it still fits.
    read = {"hook_event_name": "PreToolUse", "tool_name": "Read", "tool_use_id": "toolu_r"}
    answer = claude_code(gw, key, {**read, "tool_input": {"file_path": "/w/a"}})["hookSpecificOutput"]
    assert answer["permissionDecision"] == "allow", answer
    evaluates = [e for e in priced.audit() if e["kind"] == "evaluate"]
    assert [(e["body"]["action"]["tool"], e["outcome"]) for e in evaluates] == [
        ("Bash", "allow"),
        ("Bash", "allow"),
        ("Bash", "deny"),
        ("Read", "allow"),
    ]
    assert [e["body"]["action"]["estimate"]["micro_usd"] for e in evaluates[:3]] == [20000] * 3
    assert evaluates[3]["body"]["action"]["estimate"]["micro_usd"] == 0
    assert [r["body"]["actual"]["micro_usd"] for r in records(priced)] == [20000, 20000]
    assert gw.calls() == [], "hook calls never touch an upstream"


def test_docker_tools_are_priced_by_their_own_names_until_the_budget_runs_out(priced: Stack) -> None:
    gw = priced.gateway(extra="hooks: {docker: {prices: {fetch: 20000}}}")
    base = gw.url.rsplit("/", 1)[0] + f"/hooks/docker/{priced.keys['bot-1']}"
    answers = []
    for i in range(3):
        # What Docker's gateway posts: go-sdk's CallToolRequest marshalled as declared.
        params = {"_meta": {}, "name": "fetch", "arguments": {"url": f"https://example.com/{i}"}}
        body = json.dumps({"Session": {}, "Params": params, "Extra": None}).encode()
        before = httpx2.post(f"{base}/before", content=body, params={"session": "run-1"}, timeout=30)
        answers.append(before.text)
        if not before.content:
            result = {"content": [{"type": "text", "text": "fetched"}], "isError": False}
            after = httpx2.post(f"{base}/after", content=json.dumps(result).encode(), timeout=30)
            assert after.status_code == 200 and not after.content
    # Empty means "make the call": twice, then the third would pass the 0.05 USD cap.
    assert [a == "" for a in answers] == [True, True, False], answers
    assert "budget.exceeded" in answers[2]
    evaluates = [e for e in priced.audit() if e["kind"] == "evaluate"]
    assert [e["body"]["action"]["estimate"]["micro_usd"] for e in evaluates] == [20000] * 3
    assert [r["body"]["actual"]["micro_usd"] for r in records(priced)] == [20000, 20000]
