"""Delegation tokens against a real server: delegate, evaluate/guard under a token,
re-delegation, and each refusal's code on PermissionDenied.reason."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import arbiter
from arbiter import Client

from .conftest import Server


def fresh() -> str:
    return f"bot-{uuid.uuid4().hex[:12]}"


def refusal(caught: pytest.ExceptionInfo[arbiter.PermissionDenied], reason: str) -> None:
    error = caught.value
    assert type(error) is arbiter.PermissionDenied, repr(error)
    assert error.code == "PERMISSION_DENIED"
    assert error.reason == reason, error.message
    assert reason in error.message


def test_a_token_narrows_the_subject_to_its_patterns(client: Client) -> None:
    parent, subject = fresh(), fresh()
    before = datetime.now(timezone.utc)
    token = client.delegate(
        parent,
        subject,
        tools=["read_*"],
        apis=["GET https://api.example.com/v1/**"],
        ttl=600,
    )
    assert isinstance(token, arbiter.DelegationToken)
    assert token.token.startswith("arbiter-dt1.")
    assert str(token) == token.token
    assert token.token not in repr(token), "the bearer token stays out of repr"
    assert before + timedelta(seconds=590) < token.expires_at
    assert token.expires_at <= datetime.now(timezone.utc) + timedelta(seconds=601)
    assert not token.expired

    inside = client.evaluate(subject, tool="read_invoice", delegation_token=token)
    assert inside.allowed, inside.reasons
    # The token text works as well as the object.
    assert client.evaluate(subject, tool="read_report", delegation_token=token.token).allowed
    api = client.evaluate(
        subject, api=("GET", "https://api.example.com/v1/x"), delegation_token=token
    )
    assert api.allowed, api.reasons

    # Inside the subject's own policy, outside the token.
    outside = client.evaluate(subject, tool="send_email", delegation_token=token)
    assert outside.denied
    assert outside.reason is not None and outside.reason.code == "delegation.out_of_scope"
    other_api = client.evaluate(
        subject, api="POST https://api.example.com/v1/x", delegation_token=token
    )
    assert other_api.reason is not None and other_api.reason.code == "delegation.out_of_scope"
    # Without the token the subject acts on its own rule.
    assert client.evaluate(subject, tool="send_email").allowed

    issued = [
        json.loads(e.canonical)["body"]
        for e in client.audit.entries(kinds=["delegation.issued"])
        if subject in e.canonical
    ]
    assert len(issued) == 1 and issued[0]["tools"] == ["read_*"]


def test_escalation_is_refused_with_its_code(client: Client) -> None:
    parent, subject = fresh(), fresh()
    # admin_* is hidden from the parent: it cannot lend it.
    with pytest.raises(arbiter.PermissionDenied) as caught:
        client.delegate(parent, subject, tools=["admin_*"])
    refusal(caught, "delegation.escalation")
    with pytest.raises(arbiter.PermissionDenied) as caught:
        client.delegate(parent, subject, apis=[("GET", "https://evil.example.com/**")])
    refusal(caught, "delegation.escalation")
    # An agent no rule names has nothing to lend.
    with pytest.raises(arbiter.PermissionDenied) as caught:
        client.delegate(f"nobody-{uuid.uuid4().hex[:8]}", subject, tools=["read_invoice"])
    refusal(caught, "delegation.escalation")


def test_a_re_delegated_token_works_and_stays_inside_its_parent(client: Client) -> None:
    a, b, c, d = fresh(), fresh(), fresh(), fresh()
    root = client.delegate(a, b, tools=["read_*"], ttl=timedelta(minutes=10), max_depth=1)
    child = client.delegate(b, c, tools=["read_invoice"], ttl=timedelta(hours=1), parent_token=root)
    assert child.expires_at <= root.expires_at, "a child never outlives its parent"
    assert client.evaluate(c, tool="read_invoice", delegation_token=child).allowed
    narrowed = client.evaluate(c, tool="read_report", delegation_token=child)
    assert narrowed.reason is not None and narrowed.reason.code == "delegation.out_of_scope"

    with pytest.raises(arbiter.PermissionDenied) as caught:
        client.delegate(b, c, tools=["send_email"], parent_token=root)
    refusal(caught, "delegation.escalation")
    with pytest.raises(arbiter.PermissionDenied) as caught:
        client.delegate(c, d, tools=["read_invoice"], parent_token=child)
    refusal(caught, "delegation.depth_exceeded")
    with pytest.raises(arbiter.PermissionDenied) as caught:
        client.delegate(c, d, tools=["read_invoice"], parent_token=root)
    refusal(caught, "delegation.wrong_subject")
    with pytest.raises(arbiter.PermissionDenied) as caught:
        client.delegate(b, c, tools=["read_invoice"], parent_token="arbiter-dt1.e30.AAAA")
    refusal(caught, "delegation.forged")

    forged = client.evaluate(c, tool="read_invoice", delegation_token=child.token[:-4] + "AAAA")
    assert forged.reason is not None and forged.reason.code == "delegation.forged"


def test_a_halted_parent_cannot_delegate_nor_work_through_its_tokens(client: Client) -> None:
    parent, subject = fresh(), fresh()
    token = client.delegate(parent, subject, tools=["read_*"])
    client.halt(parent, reason="stop the chain")
    try:
        with pytest.raises(arbiter.PermissionDenied) as caught:
            client.delegate(parent, subject, tools=["read_invoice"])
        refusal(caught, "halt.engaged")
        d = client.evaluate(subject, tool="read_invoice", delegation_token=token)
        assert d.halted, d.reasons
        with (
            pytest.raises(arbiter.Halted) as halted,
            client.guard(subject, tool="read_invoice", delegation_token=token),
        ):
            pytest.fail("the block ran under a halted issuer's token")
        assert halted.value.reason == "halt.engaged"
    finally:
        client.resume(parent, reason="go")


def test_guard_and_governed_pass_the_token(client: Client) -> None:
    parent, subject = fresh(), fresh()
    token = client.delegate(parent, subject, tools=["read_*"])
    with client.guard(subject, tool="read_invoice", delegation_token=token) as g:
        assert g.decision is not None and g.decision.allowed
    assert g.recorded is not None

    ran = []
    with (
        pytest.raises(arbiter.Denied) as caught,
        client.guard(subject, tool="send_email", delegation_token=token),
    ):
        ran.append(True)
    assert not ran
    assert caught.value.reason == "delegation.out_of_scope"
    assert caught.value.decision.reason.code == "delegation.out_of_scope"

    @client.governed(subject, delegation_token=token)
    def read_ledger() -> str:
        return "ok"

    @client.governed(subject, delegation_token=token)
    def send_email() -> str:
        return "sent"

    assert read_ledger() == "ok"
    with pytest.raises(arbiter.Denied):
        send_email()


def test_async_delegate_evaluate_and_guard(server: Server) -> None:
    parent, subject, third = fresh(), fresh(), fresh()

    async def main() -> None:
        a = server.async_client()
        token = await a.delegate(parent, subject, tools=["read_*"], max_depth=1)
        d = await a.evaluate(subject, tool="read_invoice", delegation_token=token)
        assert d.allowed
        outside = await a.evaluate(subject, tool="send_email", delegation_token=token)
        assert outside.reason is not None and outside.reason.code == "delegation.out_of_scope"
        child = await a.delegate(subject, third, tools=["read_invoice"], parent_token=token)
        assert (await a.evaluate(third, tool="read_invoice", delegation_token=child)).allowed
        with pytest.raises(arbiter.PermissionDenied) as caught:
            await a.delegate(parent, subject, tools=["admin_reset"])
        assert caught.value.reason == "delegation.escalation"
        async with a.guard(subject, tool="read_x", delegation_token=token) as g:
            assert g.decision is not None and g.decision.allowed
        with pytest.raises(arbiter.Denied) as denied:
            async with a.guard(subject, tool="wire", delegation_token=token):
                pytest.fail("ran outside the token")
        assert denied.value.reason == "delegation.out_of_scope"

    asyncio.run(main())


def test_delegate_arguments_are_checked(client: Client) -> None:
    with pytest.raises(ValueError, match="ttl"):
        client.delegate(fresh(), fresh(), tools=["read_x"], ttl=1.5)
    with pytest.raises(arbiter.InvalidArgument) as caught:
        client.delegate(fresh(), fresh(), tools=["read_x"], ttl=timedelta(days=2))
    assert caught.value.field is not None and "ttl" in caught.value.field
    with pytest.raises(TypeError):
        client.evaluate(fresh(), tool="t", delegation_token=42)  # type: ignore[arg-type]


def test_other_errors_have_no_reason(client: Client) -> None:
    with pytest.raises(arbiter.InvalidArgument) as caught:
        client.evaluate("", tool="t")
    assert caught.value.reason is None
