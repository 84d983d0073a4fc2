"""Trust levels: the int value is the level (0 to 5), every place that takes a level
accepts a TrustLevel, an int 0 to 5 or a name, and anything else is a ValueError that
names the parameter. The levels are checked against the real server, so a level that
travels as the wrong proto value fails here."""

from __future__ import annotations

from typing import Any

import pytest

import arbiter
from arbiter import Client, TrustLevel

from .conftest import Server

NAMES = [
    "L0_OBSERVER",
    "L1_MONITOR",
    "L2_SUGGEST",
    "L3_ACT_APPROVE",
    "L4_ACT_REPORT",
    "L5_AUTONOMOUS",
]


def test_the_int_value_of_a_level_is_the_level() -> None:
    assert [int(level) for level in TrustLevel] == [0, 1, 2, 3, 4, 5]
    assert [level.name for level in TrustLevel] == NAMES
    assert TrustLevel(0) is TrustLevel.L0_OBSERVER
    assert TrustLevel(5) is TrustLevel.L5_AUTONOMOUS
    assert TrustLevel.L0_OBSERVER == 0 and TrustLevel.L5_AUTONOMOUS == 5
    with pytest.raises(ValueError):
        TrustLevel(6)


@pytest.mark.parametrize("n", range(6))
def test_a_level_parses_from_its_int_and_every_spelling_of_its_name(n: int) -> None:
    level = TrustLevel(n)
    short = f"L{n}"
    for spelling in (
        level,
        n,
        level.name,
        level.name.lower(),
        short,
        short.lower(),
        f"  {short} ",
        f"TRUST_LEVEL_{level.name}",
        f"trust_level_{level.name.lower()}",
    ):
        assert TrustLevel.parse(spelling) is level, spelling


@pytest.mark.parametrize(
    "bad", [-1, 6, 7, True, False, 3.0, "3", "", "L6", "L3_ACT", "LEVEL_3", "TRUST_LEVEL_L9"]
)
def test_anything_else_is_a_value_error_naming_the_parameter(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"^level: unknown trust level"):
        TrustLevel.parse(bad)
    with pytest.raises(ValueError, match=r"^min_trust: unknown trust level"):
        TrustLevel.parse(bad, "min_trust")


@pytest.mark.parametrize("n", range(6))
def test_each_level_is_assigned_and_read_back_as_itself(client: Client, agent: str, n: int) -> None:
    assignment = client.set_trust(agent, n, reason="level check")
    assert assignment.level is TrustLevel(n)
    assert int(assignment.level) == n
    info = client.get_trust(agent)
    assert info.effective_level is TrustLevel(n) and info.source == "assigned"
    assert [t.level for t in client.list_trust(agent)] == [TrustLevel(n)]
    # The server's own words agree: its trust reason names the level we set.
    reasons = client.evaluate(agent, tool="t", explain=True).reasons
    trust = next(r for r in reasons if r.stage == "trust")
    assert f"agent level {NAMES[n]}" in trust.message
    # An agent is listed once it has acted.
    seen = {a.agent_id: a for a in client.list_agents()}
    assert seen[agent].trust_level is TrustLevel(n)


def test_names_assign_the_same_level_as_ints(client: Client, agent: str) -> None:
    for spelling in ("L3", "l3", "L3_ACT_APPROVE", "l3_act_approve", TrustLevel.L3_ACT_APPROVE):
        assert client.set_trust(agent, spelling).level is TrustLevel.L3_ACT_APPROVE


def test_the_policy_default_level_reads_as_its_number(client: Client, agent: str) -> None:
    # The fixture policy says `defaults.trust_level: L2_SUGGEST`.
    info = client.get_trust(agent)
    assert info.source == "default"
    assert info.effective_level is TrustLevel.L2_SUGGEST and info.effective_level == 2


def test_min_trust_five_requires_l5(client: Client, agent: str) -> None:
    client.set_trust(agent, 4)
    assert client.evaluate(agent, tool="t", min_trust=4).allowed
    for level in (5, "L5", "l5_autonomous", TrustLevel.L5_AUTONOMOUS):
        decision = client.evaluate(agent, tool="t", min_trust=level)
        assert decision.denied, level
        assert decision.reason is not None and decision.reason.code == "trust.insufficient"
        assert "requires L5_AUTONOMOUS" in decision.reason.message


def test_min_trust_zero_is_accepted_and_never_lowers_the_policy(client: Client, agent: str) -> None:
    client.set_trust(agent, 0)
    assert client.evaluate(agent, tool="t", min_trust=0).allowed
    # wire_money needs L4 in the policy; a request may only raise the level.
    assert client.evaluate(agent, tool="wire_money", min_trust=0).denied


def test_bad_levels_are_refused_before_anything_is_sent(client: Client, agent: str) -> None:
    with pytest.raises(ValueError, match=r"^level: unknown trust level 6"):
        client.set_trust(agent, 6)
    with pytest.raises(ValueError, match=r"^level: "):
        client.set_trust(agent, "L9")
    for bad in (6, -1, True, 2.0, "L6", "high"):
        with pytest.raises(ValueError, match=r"^min_trust: unknown trust level"):
            client.evaluate(agent, tool="t", min_trust=bad)  # type: ignore[arg-type]
    # A guard or a decorator with a bad level fails where it is written, not at its first call.
    with pytest.raises(ValueError, match=r"^min_trust: "):
        client.guard(agent, tool="t", min_trust=6)
    with pytest.raises(ValueError, match=r"^min_trust: "):
        client.governed(agent, min_trust="L6")
    # Nothing reached the server: the agent has no assignment.
    assert client.list_trust(agent) == []


def test_guard_and_governed_take_levels_as_ints_and_names(client: Client, agent: str) -> None:
    client.set_trust(agent, "L4")
    with client.guard(agent, tool="t", min_trust=4) as g:
        assert g.decision is not None and g.decision.allowed
    with pytest.raises(arbiter.Denied), client.guard(agent, tool="t", min_trust=5):
        raise AssertionError("the block must not run")

    @client.governed(agent, min_trust="l5")
    def needs_l5() -> str:
        return "ran"

    @client.governed(agent, min_trust=TrustLevel.L4_ACT_REPORT)
    def needs_l4() -> str:
        return "ran"

    with pytest.raises(arbiter.Denied):
        needs_l5()
    assert needs_l4() == "ran"


async def _async_levels(server: Server, agent: str) -> None:
    async with server.async_client() as a:
        assert (await a.set_trust(agent, 5)).level is TrustLevel.L5_AUTONOMOUS
        assert (await a.get_trust(agent)).effective_level == 5
        assert (await a.evaluate(agent, tool="t", min_trust="L5")).allowed
        with pytest.raises(ValueError, match=r"^level: "):
            await a.set_trust(agent, 6)
        with pytest.raises(ValueError, match=r"^min_trust: "):
            await a.evaluate(agent, tool="t", min_trust=-1)
        with pytest.raises(ValueError, match=r"^min_trust: "):
            a.guard(agent, tool="t", min_trust=6)


def test_the_async_client_takes_the_same_levels(server: Server, agent: str) -> None:
    import asyncio

    asyncio.run(_async_levels(server, agent))
