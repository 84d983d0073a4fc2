"""guard and governed: evaluate before, record after, fail closed."""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal

import pytest

import arbiter
from arbiter import Client

from .conftest import Server, free_port


def records(client: Client, agent: str) -> list[dict[str, object]]:
    """The canonical record entries of one agent, oldest first."""
    page = client.audit.query(agent_id=agent, kinds=["record"])
    return [json.loads(e.canonical) for e in page.entries]


def test_guard_records_success_with_duration_and_reported_usage(client: Client, agent: str) -> None:
    with client.guard(agent, tool="send_email", session_id="s-1", cost_usd="0.50") as g:
        assert g.decision is not None and g.decision.allowed
        assert arbiter.current_guard() is g
        g.report(cost_usd=Decimal("0.25"), metadata={"to": "x@example.com"})
    assert g.recorded is not None
    assert g.recorded.actual_micro_usd == 250_000
    assert g.recorded.reserved_micro_usd == 500_000
    (entry,) = records(client, agent)
    assert entry["outcome"] == "success"
    assert "duration_ms" in json.dumps(entry)
    usd = next(b for b in client.budget(agent) if b.name == "cap").usd
    assert usd is not None and (usd.spent, usd.reserved) == (250_000, 0)


def test_an_exception_in_the_block_is_recorded_as_failure_and_propagates(
    client: Client, agent: str
) -> None:
    with pytest.raises(ZeroDivisionError), client.guard(agent, tool="divide") as g:
        _ = 1 / 0
    assert g.recorded is not None
    (entry,) = records(client, agent)
    assert entry["outcome"] == "failure"
    assert "ZeroDivisionError" in json.dumps(entry)


def test_a_denied_guard_raises_and_never_runs_the_block(client: Client, agent: str) -> None:
    ran = []
    with pytest.raises(arbiter.Denied) as caught, client.guard(agent, tool="wire_money"):
        ran.append(True)
    assert not ran
    assert caught.value.decision.reason.stage == "trust"
    assert records(client, agent) == []


def test_a_halted_agent_raises_halted(client: Client, agent: str) -> None:
    client.halt(agent, reason="stop")
    try:
        with pytest.raises(arbiter.Halted), client.guard(agent, tool="t"):
            pytest.fail("the block ran while halted")
    finally:
        client.resume(agent, reason="go")


def test_pending_approval_raises_approval_required_without_waiting(
    client: Client, agent: str
) -> None:
    with (
        pytest.raises(arbiter.ApprovalRequired) as caught,
        client.guard(agent, tool="refund_order"),
    ):
        pytest.fail("the block ran without approval")
    assert caught.value.approval_id.startswith("apr")
    assert caught.value.decision.pending


def test_guard_fails_closed_when_arbiter_is_down() -> None:
    down = Client(f"127.0.0.1:{free_port()}", retries=0, timeout=2.0)
    ran = []
    with pytest.raises(arbiter.Unavailable), down.guard("bot-1", tool="t"):
        ran.append(True)
    assert not ran

    @down.governed("bot-1")
    def act() -> str:
        return "acted"

    with pytest.raises(arbiter.Unavailable):
        act()


def test_fail_open_runs_the_block_without_a_decision(caplog: pytest.LogCaptureFixture) -> None:
    down = Client(f"127.0.0.1:{free_port()}", retries=0, timeout=2.0)
    with caplog.at_level(logging.WARNING, logger="arbiter"):
        with down.guard("bot-1", tool="t", fail_open=True) as g:
            assert g.decision is None
        assert g.recorded is None
    assert "fail-open" in caplog.text


def test_governed_wraps_sync_functions_and_names_the_tool_after_them(
    client: Client, agent: str
) -> None:
    @client.governed(agent, session_id="s-2")
    def read_invoice(number: int) -> str:
        arbiter.current_guard().report(metadata={"invoice": str(number)})
        return f"invoice {number}"

    assert read_invoice(7) == "invoice 7"
    assert read_invoice.__name__ == "read_invoice"
    (evaluated,) = client.audit.query(agent_id=agent, kinds=["evaluate"]).entries
    assert '"read_invoice"' in evaluated.canonical
    (entry,) = records(client, agent)
    assert entry["outcome"] == "success"

    @client.governed(agent, tool="wire_money")
    def wire() -> None:
        pytest.fail("denied function ran")

    with pytest.raises(arbiter.Denied):
        wire()


def test_governed_wraps_async_functions(client: Client, agent: str) -> None:
    @client.governed(agent, tool="fetch")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        if x < 0:
            raise ValueError("negative")
        return x * 2

    assert asyncio.run(fetch(21)) == 42
    with pytest.raises(ValueError):
        asyncio.run(fetch(-1))
    assert [e["outcome"] for e in records(client, agent)] == ["success", "failure"]


def test_current_guard_outside_a_guard_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        arbiter.current_guard()


def test_guard_waits_for_a_human_when_asked(authed_server: Server, agent: str) -> None:
    admin = authed_server.client()
    root = admin.create_principal("root", ["admin"]).api_key
    admin = authed_server.client(root)
    bot_key = admin.create_principal("bot-runtime", ["agent"], agents=["bot*"]).api_key
    op_key = admin.create_principal("alice", ["operator"]).api_key
    bot, op = authed_server.client(bot_key), authed_server.client(op_key)

    import threading

    def approve_when_pending() -> None:
        for _ in range(200):
            page = op.list_approvals(agent_id=agent, state="pending")
            if page.approvals:
                op.approve(page.approvals[0].approval_id, reason="ok")
                return
            threading.Event().wait(0.05)

    approver = threading.Thread(target=approve_when_pending)
    approver.start()
    with bot.guard(agent, tool="refund_order", wait_for_approval=30) as g:
        assert g.decision is not None and g.decision.allowed
    approver.join()
    assert g.recorded is not None

    def deny_when_pending() -> None:
        for _ in range(200):
            page = op.list_approvals(agent_id=agent, state="pending")
            if page.approvals:
                op.deny(page.approvals[0].approval_id, reason="too much")
                return
            threading.Event().wait(0.05)

    denier = threading.Thread(target=deny_when_pending)
    denier.start()
    with (
        pytest.raises(arbiter.ApprovalDenied) as caught,
        bot.guard(agent, tool="refund_big", wait_for_approval=True),
    ):
        pytest.fail("ran after a denial")
    denier.join()
    assert caught.value.approval.decided_by == "alice"
    assert caught.value.approval.decision_reason == "too much"
