"""The blocking Client against a real server: every decision, admin and audit method."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

import arbiter
from arbiter import Client


def test_an_allowed_action_is_recorded_and_settles_its_exact_reservation(
    client: Client, agent: str
) -> None:
    d = client.evaluate(agent, tool="read_invoice", session_id="s-1", cost_usd="0.0015")
    assert d.allowed and not d.denied and not d.pending
    assert d.outcome == "allow"
    assert d.decision_id and d.audit_seq > 0
    assert d.policy_version.startswith("sha256:")
    assert d.action_digest.startswith("sha256:")
    assert d.reserved_micro_usd == 1_500
    assert d.reserved_usd == Decimal("0.0015")
    assert d.reservation_id is not None
    assert d.reservation_expires_at is not None
    assert d.reservation_expires_at.tzinfo is not None

    r = client.record(
        d.decision_id,
        outcome="success",
        cost_usd=Decimal("0.001234"),
        duration_ms=12,
        metadata={"k": "v"},
    )
    assert r.audit_seq > d.audit_seq
    assert r.actual_micro_usd == 1_234
    assert r.actual_usd == Decimal("0.001234")
    assert r.reserved_micro_usd == 1_500
    assert not r.overspend and not r.duplicate

    again = client.record(d.decision_id, cost_usd="0.001234")
    assert again.duplicate and again.audit_seq == r.audit_seq

    cap = next(b for b in client.budget(agent) if b.name == "cap")
    usd = cap.usd
    assert usd is not None
    assert (usd.spent, usd.reserved, usd.cap) == (1_234, 0, 10_000_000)
    assert usd.spent_usd == Decimal("0.001234")
    assert usd.remaining_usd == Decimal("9.998766")


@pytest.mark.parametrize(
    ("amount", "micros"),
    [
        (Decimal("0.1"), 100_000),
        ("0.30", 300_000),
        (0.1 + 0.2, 300_000),
        (2, 2_000_000),
        ("0.0000015", 2),
    ],
)
def test_money_reaches_the_budget_exactly(
    client: Client, agent: str, amount: arbiter.Money, micros: int
) -> None:
    d = client.evaluate(agent, tool="t", cost_usd=amount)
    assert d.reserved_micro_usd == micros
    usd = next(b for b in client.budget(agent) if b.name == "cap").usd
    assert usd is not None and usd.reserved == micros


def test_a_denial_is_a_value_with_reasons(client: Client, agent: str) -> None:
    d = client.evaluate(agent, tool="wire_money")
    assert d.outcome == "deny" and d.denied and not d.allowed
    assert d.reason is not None and d.reason.stage == "trust"
    assert not d.reason.passed
    with pytest.raises(arbiter.Denied) as caught:
        d.raise_for_outcome()
    assert caught.value.decision is d
    assert caught.value.code == "DENIED"
    assert not isinstance(caught.value, arbiter.Halted)


def test_an_agent_without_a_rule_is_denied_by_scope(client: Client) -> None:
    d = client.evaluate("stranger", tool="read_invoice")
    assert d.denied
    assert d.reason is not None and d.reason.code == "scope.no_policy"


def test_pending_approval_names_the_approval(client: Client, agent: str) -> None:
    d = client.evaluate(agent, tool="refund_order", session_id="s")
    assert d.outcome == "pending_approval" and d.pending
    assert d.approval_id
    with pytest.raises(arbiter.ApprovalRequired) as caught:
        d.raise_for_outcome()
    assert caught.value.approval_id == d.approval_id
    assert caught.value.decision is d
    approval = client.get_approval(d.approval_id)
    assert approval.state == "pending" and approval.agent_id == agent
    assert approval.session_id == "s"
    page = client.list_approvals(agent_id=agent, state="pending")
    assert [a.approval_id for a in page.approvals] == [d.approval_id]
    assert page.next_page_token is None


def test_explain_reports_every_stage_and_receipt_is_returned(client: Client, agent: str) -> None:
    d = client.evaluate(agent, tool="t", explain=True, receipt=True)
    assert d.allowed
    stages = [r.stage for r in d.reasons]
    assert "halt" in stages and "budget" in stages and "scope" in stages
    assert all(r.passed for r in d.reasons)
    assert d.receipt is not None
    assert d.receipt.mac and d.receipt.checkpoint
    assert f'"seq":{d.audit_seq}' in d.receipt.entry


def test_a_repeated_request_id_replays_the_first_answer(client: Client, agent: str) -> None:
    rid = f"req-{uuid.uuid4()}"
    first = client.evaluate(agent, tool="t", cost_usd=1, request_id=rid)
    second = client.evaluate(agent, tool="t", cost_usd=1, request_id=rid)
    assert second.replayed and not first.replayed
    assert second.decision_id == first.decision_id
    usd = next(b for b in client.budget(agent) if b.name == "cap").usd
    assert usd is not None and usd.reserved == 1_000_000


def test_api_model_data_and_context_reach_the_pipeline(client: Client, agent: str) -> None:
    ok = client.evaluate(agent, api="POST https://api.example.com/v1/x")
    assert ok.allowed
    assert client.evaluate(agent, api=("get", "https://api.example.com/y")).allowed
    assert client.evaluate(agent, api="GET https://other.example.com/").denied
    assert client.evaluate(agent, model="gpt-4o-mini", max_tokens=10, tokens=5).allowed
    assert client.evaluate(agent, model="gpt-5-secret").denied

    no_consent = client.evaluate(agent, tool="t", data=[("user_email", "notifications")])
    assert no_consent.denied
    assert no_consent.reason is not None and no_consent.reason.stage == "consent"
    grant = client.grant_consent(
        agent,
        "user_email",
        "notifications",
        expires_at=datetime.now(timezone.utc) + timedelta(days=1),
    )
    assert grant.purpose == "notifications" and grant.expires_at is not None
    assert client.evaluate(
        agent, tool="t", data=[("user_email", "notifications")], context={"ticket": "T-1"}
    ).allowed
    assert [g.data_type for g in client.list_consents(agent)] == ["user_email"]
    seq = client.revoke_consent(agent, "user_email", "notifications")
    assert seq > 0
    assert client.evaluate(agent, tool="t", data=[("user_email", "notifications")]).denied
    with pytest.raises(arbiter.NotFound):
        client.revoke_consent(agent, "user_email", "notifications")


def test_trust_can_be_raised_read_and_listed(client: Client, agent: str) -> None:
    assert client.evaluate(agent, tool="wire_money").denied
    assignment = client.set_trust(agent, arbiter.TrustLevel.L4_ACT_REPORT, reason="vetted")
    assert assignment.level == arbiter.TrustLevel.L4_ACT_REPORT
    assert assignment.agent_id == agent and assignment.scope is None
    assert client.evaluate(agent, tool="wire_money").allowed
    info = client.get_trust(agent)
    assert info.effective_level == arbiter.TrustLevel.L4_ACT_REPORT
    assert info.source == "assigned"
    assert [t.level for t in client.list_trust(agent)] == [arbiter.TrustLevel.L4_ACT_REPORT]
    client.set_trust(agent, "l2", scope="wire_money")
    scoped = client.get_trust(agent, scope="wire_money")
    assert scoped.effective_level == arbiter.TrustLevel.L2_SUGGEST
    assert client.evaluate(agent, tool="wire_money", min_trust="L5_AUTONOMOUS").denied


def test_filter_tools_heartbeat_agents_policy_and_ping(client: Client, agent: str) -> None:
    assert client.filter_tools(agent, ["read_invoice", "admin_reset", "x"]) == [
        "read_invoice",
        "x",
    ]
    assert client.evaluate(agent, tool="read_invoice").allowed
    beat = client.heartbeat(agent, "s-1", metadata={"pid": "1"}, operator="alice")
    assert not beat.halted and beat.halt is None
    seen = {a.agent_id: a for a in client.list_agents()}
    assert seen[agent].presence == "live"
    assert seen[agent].operator == "alice"
    policy = client.get_policy()
    assert policy.current is not None and policy.current.accepted
    assert policy.current.version.startswith("sha256:")
    assert policy.budgets == 1
    client.ping()


def test_halts_deny_until_resumed(client: Client, agent: str) -> None:
    halt = client.halt(agent, mode="halt_all", reason="runaway spend")
    assert (halt.scope, halt.agent_id, halt.mode) == ("agent", agent, "halt_all")
    assert halt.reason == "runaway spend" and halt.engaged_at is not None
    d = client.evaluate(agent, tool="t")
    assert d.halted and d.denied
    with pytest.raises(arbiter.Halted) as caught:
        d.raise_for_outcome()
    assert isinstance(caught.value, arbiter.Denied)
    assert client.heartbeat(agent).halted
    assert any(h.agent_id == agent for h in client.list_halts())
    lifted = client.resume(agent, reason="fixed")
    assert lifted.agent_id == agent
    assert client.evaluate(agent, tool="t").allowed

    client.halt(agent, "s-9", mode="emergency", reason="one session")
    assert client.evaluate(agent, tool="t", session_id="s-9").halted
    assert client.evaluate(agent, tool="t", session_id="s-8").allowed
    client.resume(agent, "s-9", reason="done")
    assert client.evaluate(agent, tool="t", session_id="s-9").allowed


def test_invalid_arguments_name_the_field(client: Client) -> None:
    with pytest.raises(arbiter.InvalidArgument) as caught:
        client.evaluate("", tool="t")
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.field == "agent_id"
    assert "agent_id" in caught.value.message
    with pytest.raises(arbiter.NotFound):
        client.get_approval("apr_nope")


def test_client_side_argument_errors_are_raised_before_sending(client: Client) -> None:
    with pytest.raises(ValueError, match="cost"):
        client.evaluate("bot-x", tool="t", cost_usd="-1")
    with pytest.raises(TypeError):
        client.evaluate("bot-x", tool="t", cost_usd=True)
    with pytest.raises(ValueError, match="mode"):
        client.halt("bot-x", mode="stop_everything", reason="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="api"):
        client.evaluate("bot-x", api="https://no-method")
    with pytest.raises(ValueError, match="trust level"):
        client.set_trust("bot-x", "L9")
    with pytest.raises(ValueError, match="timezone"):
        client.grant_consent("bot-x", "d", expires_at=datetime(2030, 1, 1))
