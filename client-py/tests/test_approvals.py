"""Approvals end to end with API keys: an agent asks, a second principal decides."""

from __future__ import annotations

import threading
import time

import pytest

import arbiter

from .conftest import Server


def principals(server: Server) -> tuple[arbiter.Client, arbiter.Client, arbiter.Client]:
    """(admin, agent runtime for bot*, operator alice), with authentication on."""
    root = server.client().create_principal("root", ["admin"])
    assert root.principal.roles == ["admin"] and root.api_key
    admin = server.client(root.api_key)
    bot = admin.create_principal("bot-runtime", ["agent"], agents=["bot*"])
    assert bot.principal.agents == ["bot*"]
    alice = admin.create_principal("alice", ["operator"])
    return admin, server.client(bot.api_key), server.client(alice.api_key)


def test_an_operator_grants_and_the_agent_proceeds_once(authed_server: Server, agent: str) -> None:
    _admin, bot, op = principals(authed_server)
    d = bot.evaluate(agent, tool="refund_order", session_id="s", cost_usd="2.00")
    assert d.pending and d.approval_id is not None

    granter = threading.Timer(0.3, lambda: op.approve(d.approval_id or "", reason="fine"))
    granter.start()
    started = time.monotonic()
    approval = bot.wait_for_approval(d.approval_id, timeout=20)
    granter.join()
    assert time.monotonic() - started < 15
    assert approval.state == "granted" and approval.decided_by == "alice"
    assert approval.decision_reason == "fine"

    ok = bot.evaluate(
        agent, tool="refund_order", session_id="s", cost_usd="2.00", approval_id=d.approval_id
    )
    assert ok.allowed
    assert op.get_approval(d.approval_id).state == "consumed"
    again = bot.evaluate(
        agent, tool="refund_order", session_id="s", cost_usd="2.00", approval_id=d.approval_id
    )
    assert not again.allowed


def test_a_denied_approval_raises_approval_denied(authed_server: Server, agent: str) -> None:
    _, bot, op = principals(authed_server)
    d = bot.evaluate(agent, tool="refund_order")
    assert d.approval_id is not None
    denied = op.deny(d.approval_id, reason="no")
    assert denied.state == "denied"
    with pytest.raises(arbiter.ApprovalDenied) as caught:
        bot.wait_for_approval(d.approval_id, timeout=5)
    assert caught.value.approval_id == d.approval_id
    assert caught.value.approval.state == "denied"
    assert caught.value.code == "APPROVAL_DENIED"
    with pytest.raises(arbiter.FailedPrecondition):
        op.approve(d.approval_id, reason="changed my mind")


def test_no_decision_in_time_raises_approval_timeout(authed_server: Server, agent: str) -> None:
    _, bot, _ = principals(authed_server)
    d = bot.evaluate(agent, tool="refund_order")
    assert d.approval_id is not None
    started = time.monotonic()
    with pytest.raises(arbiter.ApprovalTimeout) as caught:
        bot.wait_for_approval(d.approval_id, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 5
    assert caught.value.approval_id == d.approval_id
    assert caught.value.approval is not None and caught.value.approval.state == "pending"


def test_roles_are_enforced_and_keys_are_required(authed_server: Server, agent: str) -> None:
    admin, bot, op = principals(authed_server)
    d = bot.evaluate(agent, tool="refund_order")
    assert d.approval_id is not None
    with pytest.raises(arbiter.PermissionDenied) as caught:
        bot.approve(d.approval_id, reason="self-approval")
    assert caught.value.code == "PERMISSION_DENIED"
    with pytest.raises(arbiter.PermissionDenied):
        bot.halt(reason="agents cannot halt")
    with pytest.raises(arbiter.Unauthenticated):
        authed_server.client().evaluate(agent, tool="t")
    with pytest.raises(arbiter.Unauthenticated):
        authed_server.client("arb_not_a_key").evaluate(agent, tool="t")

    names = [p.name for p in admin.list_principals()]
    assert names == ["alice", "bot-runtime", "root"]
    with pytest.raises(arbiter.InvalidArgument) as reused:
        admin.create_principal("alice", ["operator"])
    assert reused.value.field == "name"
    revoked = admin.revoke_principal("alice")
    assert revoked.revoked_at is not None
    with pytest.raises(arbiter.Unauthenticated):
        op.list_halts()


def test_async_principals_and_approvals(authed_server: Server, agent: str) -> None:
    import asyncio

    async def main() -> None:
        root = await authed_server.async_client().create_principal("root", ["admin"])
        admin = authed_server.async_client(root.api_key)
        bot_key = (await admin.create_principal("bot", ["agent"], agents=["bot*"])).api_key
        op_key = (await admin.create_principal("op", ["operator"])).api_key
        assert [p.name for p in await admin.list_principals()] == ["bot", "op", "root"]
        bot, op = authed_server.async_client(bot_key), authed_server.async_client(op_key)
        d = await bot.evaluate(agent, tool="refund_async")
        assert d.approval_id is not None
        waiting = asyncio.ensure_future(bot.wait_for_approval(d.approval_id, timeout=20))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await op.approve(d.approval_id, reason="ok")
        assert (await waiting).state == "granted"
        assert (await admin.revoke_principal("op")).revoked_at is not None
        with pytest.raises(arbiter.Unauthenticated):
            await op.list_halts()

    asyncio.run(main())


def test_an_approval_binds_the_call_arguments(authed_server: Server, agent: str) -> None:
    """Issue 13: an approval granted for refund {order: o-1} must not cover o-2."""
    _admin, bot, op = principals(authed_server)
    d = bot.evaluate(agent, tool="refund_order", arguments={"order": "o-1", "amount": 10})
    assert d.pending and d.approval_id is not None
    (shown,) = [
        a for a in op.list_approvals(state="pending").approvals if a.approval_id == d.approval_id
    ]
    assert shown.action is not None and shown.action["arguments"] == {"order": "o-1", "amount": 10}
    op.approve(d.approval_id, reason="fine")

    other = bot.evaluate(
        agent,
        tool="refund_order",
        arguments={"order": "o-2", "amount": 10},
        approval_id=d.approval_id,
    )
    assert other.denied and other.reason is not None and other.reason.code == "approval.mismatch"

    same = bot.evaluate(
        agent,
        tool="refund_order",
        arguments={"amount": 10.0, "order": "o-1"},
        approval_id=d.approval_id,
    )
    assert same.allowed, same.reasons


def test_governed_binds_the_functions_own_arguments(authed_server: Server, agent: str) -> None:
    _admin, bot, op = principals(authed_server)
    deleted: list[str] = []

    @bot.governed(agent, tool="refund_user", wait_for_approval=20)
    def refund_user(user_id: str, amount: int = 5) -> None:
        deleted.append(user_id)

    def approve_pending() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pending = op.list_approvals(state="pending").approvals
            for a in pending:
                assert a.action is not None
                # The operator sees (and approves) exactly u1 with the default amount.
                assert a.action["arguments"] == {"user_id": "u1", "amount": 5}
                op.approve(a.approval_id, reason="ok")
                return
            time.sleep(0.05)

    approver = threading.Thread(target=approve_pending)
    approver.start()
    refund_user("u1")
    approver.join()
    assert deleted == ["u1"]

    class Opaque:
        pass

    @bot.governed(agent, tool="refund_user")
    def takes_an_object(thing: object) -> None:
        pytest.fail("ran without a decision")

    with pytest.raises(TypeError, match="'thing'"):
        takes_an_object(Opaque())

    @bot.governed(agent, tool="refund_user", arguments=lambda thing: {"kind": type(thing).__name__})
    def picked(thing: object) -> None:
        pass

    with pytest.raises(arbiter.ApprovalRequired):
        picked(Opaque())


def test_arguments_must_be_json(client: arbiter.Client, agent: str) -> None:
    with pytest.raises(ValueError, match="arguments"):
        client.evaluate(agent, tool="t", arguments={"x": float("nan")})
    with pytest.raises(ValueError, match="arguments"):
        client.evaluate(agent, tool="t", arguments={"x": object()})
    with pytest.raises(arbiter.InvalidArgument) as caught:
        client.evaluate(agent, tool="t", arguments={"k" * 257: 1})
    assert "action.arguments" in str(caught.value)
