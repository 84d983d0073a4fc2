"""Pending approvals for 2026-07-28 clients: the gateway answers a held call with
`input_required` and an HMAC-sealed `requestState`; the retry carrying it runs the call
once after an operator approves with the real CLI. The official Python SDK speaks the
revision (`mode="auto"`) and drives each round itself (`allow_input_required=True`)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import Gateway, Stack, mcp_client

INVALID_PARAMS = -32602
APPROVAL_META = "io.github.arbiter/approval"
SECRET = "request-state-secret-for-the-tests-0123456789"
MAIL = {"to": "cfo@example.com", "body": "hi"}


def text(result: object) -> str:
    return " ".join(getattr(c, "text", "") for c in getattr(result, "content", []))


def gateway(stack: Stack, ttl: str = "1h", secret: str = SECRET) -> Gateway:
    return stack.gateway(approval_wait="0s", extra=f"request_state: {{secret: {secret}, ttl: {ttl}}}")


async def call(
    gw: Gateway, key: str, arguments: dict[str, str], state: str | None = None, mode: str = "auto"
) -> Any:
    """One `tools/call send_email` round on a fresh client (a retry need not share one)."""
    async with mcp_client(gw.url, key, mode) as c:
        if mode != "auto":
            return await c.call_tool("send_email", arguments)
        return await c.session.call_tool(
            "send_email", arguments, request_state=state, allow_input_required=True
        )


def ask(gw: Gateway, stack: Stack, arguments: dict[str, str] = MAIL) -> tuple[str, str]:
    """The first round: an `input_required` answer; returns (requestState, approval id)."""
    first = asyncio.run(call(gw, stack.keys["bot-1"], arguments))
    assert isinstance(first, types.InputRequiredResult), first
    assert first.request_state and not first.input_requests
    approval = (first.meta or {})[APPROVAL_META]["approval_id"]
    assert approval.startswith("apr_")
    # The state names the approval, but is sealed: it is not the bare id.
    assert first.request_state != approval
    return first.request_state, approval


def refused(gw: Gateway, key: str, arguments: dict[str, str], state: str) -> MCPError:
    """A retry the gateway refuses with a JSON-RPC error (caught inside the client's
    context, so the SDK's task group does not wrap it)."""

    async def run() -> MCPError:
        async with mcp_client(gw.url, key, "auto") as c:
            with pytest.raises(MCPError) as caught:
                await c.session.call_tool(
                    "send_email", arguments, request_state=state, allow_input_required=True
                )
            return caught.value

    error = asyncio.run(run())
    assert error.code == INVALID_PARAMS, error
    return error


def evaluates(stack: Stack) -> list[str]:
    return [str(e["outcome"]) for e in stack.audit() if e["kind"] == "evaluate"]


def test_a_pending_call_answers_input_required_and_the_retry_runs_it_exactly_once(
    stack: Stack,
) -> None:
    gw = gateway(stack)
    state, approval = ask(gw, stack)
    assert gw.calls() == []
    stack.cli("approvals", "approve", approval, key="operator")

    done = asyncio.run(call(gw, stack.keys["bot-1"], MAIL, state))
    assert isinstance(done, types.CallToolResult) and not done.is_error, done
    assert text(done) == "sent to cfo@example.com"
    assert [c["arguments"] for c in gw.calls()] == [MAIL]

    # The approval was consumed by that retry: the same state never runs it again.
    again = asyncio.run(call(gw, stack.keys["bot-1"], MAIL, state))
    assert isinstance(again, types.CallToolResult) and again.is_error
    assert "denied by Arbiter: approval.consumed" in text(again)
    assert len(gw.calls()) == 1
    assert evaluates(stack) == ["pending_approval", "allow", "deny"]
    records = [e for e in stack.audit() if e["kind"] == "record"]
    assert len(records) == 1


def test_a_legacy_client_still_gets_the_error_result_naming_the_approval(stack: Stack) -> None:
    gw = gateway(stack)
    result = asyncio.run(call(gw, stack.keys["bot-1"], MAIL, mode="legacy"))
    assert isinstance(result, types.CallToolResult) and result.is_error
    assert "approval required" in text(result) and "apr_" in text(result)


def test_a_tampered_request_state_is_refused_before_arbiter_or_the_upstream(stack: Stack) -> None:
    gw = gateway(stack)
    state, approval = ask(gw, stack)
    stack.cli("approvals", "approve", approval, key="operator")
    audit_before = stack.audit()
    middle = len(state) // 2
    tampered = state[:middle] + ("A" if state[middle] != "A" else "B") + state[middle + 1 :]

    error = refused(gw, stack.keys["bot-1"], MAIL, tampered)
    assert "failed verification" in error.message and "not forwarded" in error.message
    # A state sealed under another gateway's secret is just as forged.
    other = gateway(stack, secret="another-gateway-secret-0123456789-abcdef")
    assert "failed verification" in refused(other, stack.keys["bot-1"], MAIL, state).message
    assert "failed verification" in refused(gw, stack.keys["bot-1"], MAIL, "rs1.bm9wZQ.bm9wZQ").message
    assert gw.calls() == []
    assert stack.audit() == audit_before, "a refused state asks Arbiter nothing"
    # The approval is intact: the genuine state still runs the call once.
    done = asyncio.run(call(gw, stack.keys["bot-1"], MAIL, state))
    assert not done.is_error, text(done)
    assert len(gw.calls()) == 1


def test_an_expired_request_state_is_refused(stack: Stack) -> None:
    gw = gateway(stack, ttl="1s")
    state, approval = ask(gw, stack)
    stack.cli("approvals", "approve", approval, key="operator")
    time.sleep(1.5)
    error = refused(gw, stack.keys["bot-1"], MAIL, state)
    assert "expired" in error.message
    assert gw.calls() == []


def test_the_same_state_with_other_arguments_or_another_agent_is_refused(stack: Stack) -> None:
    gw = gateway(stack)
    state, approval = ask(gw, stack)
    stack.cli("approvals", "approve", approval, key="operator")
    other = {"to": "attacker@example.com", "body": "hi"}

    error = refused(gw, stack.keys["bot-1"], other, state)
    assert "other arguments" in error.message
    error = refused(gw, stack.keys["bot-2"], MAIL, state)
    assert "another agent" in error.message
    assert gw.calls() == []
    assert evaluates(stack) == ["pending_approval"]

    # Only the call the approval was asked for runs, once.
    done = asyncio.run(call(gw, stack.keys["bot-1"], MAIL, state))
    assert not done.is_error, text(done)
    assert [c["arguments"] for c in gw.calls()] == [MAIL]


def test_the_sdks_own_round_driver_completes_once_an_operator_approves(stack: Stack) -> None:
    # Client.call_tool retries a state-only answer itself; each retry is held again for
    # approval_wait, so its rounds are a long poll that ends when the operator approves.
    gw = stack.gateway(approval_wait="1s", extra=f"request_state: {{secret: {SECRET}}}")
    approved: list[str] = []

    def operator() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not approved:
            out = stack.cli("approvals", "list", "--state", "pending", key="operator").stdout
            found = re.findall(r"apr_[0-9a-f]+", out)
            if found:
                time.sleep(2.5)  # past the first hold: the grant lands during a retry
                stack.cli("approvals", "approve", found[0], key="operator")
                approved.append(found[0])
            time.sleep(0.2)

    helper = threading.Thread(target=operator)
    helper.start()

    async def run() -> Any:
        async with mcp_client(gw.url, stack.keys["bot-1"], "auto") as c:
            return await c.call_tool("send_email", MAIL)

    result = asyncio.run(run())
    helper.join()
    assert approved, "no pending approval appeared"
    assert not result.is_error, text(result)
    assert [c["arguments"] for c in gw.calls()] == [MAIL]
    outcomes = evaluates(stack)
    # At least one retry came back (the grant landed after the first hold), every round
    # presented the one approval, and only the last ran the call.
    assert outcomes.count("pending_approval") >= 2 and outcomes[-1] == "allow", outcomes
    assert outcomes.count("allow") == 1
    ids = {e["body"].get("approval_id") for e in stack.audit() if e["kind"] == "evaluate"}
    assert ids == {approved[0]}


CONSOLE = "https://arbiter.example:8443"


def console_gateway(stack: Stack) -> Gateway:
    extra = f"request_state: {{secret: {SECRET}}}\nconsole_url: {CONSOLE}/"
    return stack.gateway(approval_wait="0s", extra=extra)


async def call_with_pages(gw: Gateway, key: str, reply: str, operator: Stack | None) -> tuple[Any, list[Any]]:
    """send_email on a client that takes URL-mode elicitations and answers each with
    `reply`; with `operator`, the operator grants the approval the page names first.
    The SDK's own round driver (`Client.call_tool`) makes the retries."""
    pages: list[Any] = []

    async def on_elicit(ctx: Any, params: Any) -> types.ElicitResult:
        pages.append(params)
        if operator is not None:
            approval = str(params.url).rsplit("/", 1)[-1]
            await asyncio.to_thread(operator.cli, "approvals", "approve", approval, key="operator")
        return types.ElicitResult(action=reply)  # type: ignore[arg-type]

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
    transport = streamable_http_client(gw.url, http_client=http)
    async with http, Client(transport, mode="auto", elicitation_callback=on_elicit) as c:
        return await c.call_tool("send_email", MAIL), pages


def test_a_client_taking_url_elicitations_is_pointed_at_the_consoles_approval_page(stack: Stack) -> None:
    gw = console_gateway(stack)
    result, pages = asyncio.run(call_with_pages(gw, stack.keys["bot-1"], "accept", stack))
    assert not result.is_error, text(result)
    assert len(pages) == 1, pages
    assert pages[0].mode == "url"
    assert re.fullmatch(rf"{re.escape(CONSOLE)}/approvals/apr_[0-9a-f]+", str(pages[0].url)), pages[0].url
    assert "operator" in pages[0].message and "apr_" in pages[0].message
    # Granted at the page, the SDK's retry ran the call once.
    assert [c["tool"] for c in gw.calls()] == ["send_email"]
    assert evaluates(stack) == ["pending_approval", "allow"]


def test_a_declined_approval_page_ends_the_rounds_with_the_approval_named(stack: Stack) -> None:
    gw = console_gateway(stack)
    result, pages = asyncio.run(call_with_pages(gw, stack.keys["bot-1"], "decline", None))
    assert len(pages) == 1
    assert result.is_error and "approval required" in text(result), text(result)
    named = re.search(r"apr_[0-9a-f]+", text(result))
    assert named and str(pages[0].url).endswith(named.group(0)), (pages[0].url, text(result))
    assert gw.calls() == []


def test_no_page_is_offered_without_a_console_or_to_a_client_that_takes_no_urls(stack: Stack) -> None:
    async def first_round(gw: Gateway, takes_urls: bool) -> Any:
        async def never(ctx: Any, params: Any) -> types.ElicitResult:
            raise AssertionError("no elicitation expected")

        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {stack.keys['bot-1']}"}, timeout=60)
        callback = {"elicitation_callback": never} if takes_urls else {}
        client = Client(streamable_http_client(gw.url, http_client=http), mode="auto", **callback)
        async with http, client as c:
            return await c.session.call_tool("send_email", MAIL, allow_input_required=True)

    plain = asyncio.run(first_round(gateway(stack), takes_urls=True))
    assert isinstance(plain, types.InputRequiredResult) and plain.request_state
    assert not plain.input_requests
    console = asyncio.run(first_round(console_gateway(stack), takes_urls=False))
    assert isinstance(console, types.InputRequiredResult) and console.request_state
    assert not console.input_requests
