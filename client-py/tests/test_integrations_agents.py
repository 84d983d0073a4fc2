"""The OpenAI Agents SDK adapter with the real SDK, its model pointed at the fake
provider endpoint through a wrapped AsyncOpenAI, and a real arbiter server: allowed and
denied tools, a pending call paused as an interruption and resumed after a CLI approval,
and a halt that stops the run."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

import arbiter
from arbiter.integrations import check, wrap_openai

from .conftest import Server, cli_approve, require
from .fake_providers import FakeProvider, Reply

agents: Any = require("agents")
openai: Any = require("openai")

from arbiter.integrations.openai_agents import govern_tools, resolve_approvals  # noqa: E402

agents.set_tracing_disabled(True)
RAN: list[str] = []


@agents.function_tool
def lookup_order(order_id: str) -> str:
    """Look up an order."""
    RAN.append(f"lookup {order_id}")
    return f"order {order_id}: shipped"


@agents.function_tool
def refund_order(order_id: str, amount: float) -> str:
    """Refund an order."""
    RAN.append(f"refund {order_id} {amount}")
    return f"refunded {amount}"


@agents.function_tool
def delete_account(user: str) -> str:
    """Delete an account."""
    RAN.append(f"delete {user}")
    return "deleted"


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


def make_agent(server: Server, provider: FakeProvider, agent_id: str) -> Any:
    client = server.async_client()
    raw = openai.AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="test", max_retries=0)
    model = agents.OpenAIChatCompletionsModel(
        model="gpt-test", openai_client=wrap_openai(raw, client, agent_id=agent_id)
    )
    # Fresh tool objects per test: govern_tools changes them in place.
    fresh = [dataclasses.replace(t) for t in (lookup_order, refund_order, delete_account)]
    return agents.Agent(
        name="support",
        instructions="Help with orders.",
        model=model,
        tools=govern_tools(fresh, client, agent_id=agent_id),
    )


def tool_outputs(provider: FakeProvider) -> list[str]:
    """What the model was sent back as tool results, over all requests."""
    out: list[str] = []
    for _, body in provider.requests:
        for message in body.get("messages", []):
            if message.get("role") == "tool":
                out.append(str(message.get("content")))
    return out


def test_an_allowed_tool_runs_and_every_call_is_recorded(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    provider.script(Reply(tool="lookup_order", arguments={"order_id": "42"}), Reply(text="ok"))
    bot = make_agent(llm_server, provider, agent)
    result = asyncio.run(agents.Runner.run(bot, "where is 42?"))
    assert result.final_output == "ok"
    assert RAN == ["lookup 42"]
    page = llm_server.client().audit.query(agent_id=agent, kinds=["record"])
    assert [e.outcome for e in page.entries] == ["success"] * 3  # two LLM calls, one tool
    assert check(bot).ok
    # A hosted tool cannot be governed here, and check() says so.
    bot.tools.append(agents.WebSearchTool())
    report = check(bot)
    assert not report.ok and "NOT governed: WebSearchTool" in str(report)


def test_a_denied_tool_never_runs_and_the_model_reads_why(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    provider.script(Reply(tool="delete_account", arguments={"user": "u1"}), Reply(text="no"))
    result = asyncio.run(agents.Runner.run(make_agent(llm_server, provider, agent), "delete"))
    assert result.final_output == "no"
    assert RAN == []
    (output,) = tool_outputs(provider)
    assert "Arbiter denied" in output


def test_a_pending_tool_interrupts_the_run_and_resumes_after_a_cli_approval(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    provider.script(
        Reply(tool="refund_order", arguments={"order_id": "42", "amount": 5.0}),
        Reply(text="refunded"),
    )
    bot = make_agent(llm_server, provider, agent)

    async def run() -> Any:
        first = await agents.Runner.run(bot, "refund 42")
        assert len(first.interruptions) == 1 and RAN == []
        (approval,) = llm_server.client().list_approvals(agent_id=agent).approvals
        assert (approval.action or {}).get("arguments") == {"order_id": "42", "amount": 5.0}
        cli_approve(llm_server, approval.approval_id)
        state = await resolve_approvals(first, timeout=10)
        return await agents.Runner.run(bot, state)

    result = asyncio.run(run())
    assert result.final_output == "refunded"
    assert RAN == ["refund 42 5.0"]


def test_approving_only_in_the_sdk_does_not_run_the_tool(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    provider.script(
        Reply(tool="refund_order", arguments={"order_id": "7", "amount": 1.0}),
        Reply(text="waiting"),
    )
    bot = make_agent(llm_server, provider, agent)

    async def run() -> Any:
        first = await agents.Runner.run(bot, "refund 7")
        state = first.to_state()
        state.approve(first.interruptions[0])
        return await agents.Runner.run(bot, state)

    assert asyncio.run(run()).final_output == "waiting"
    assert RAN == []
    assert "human approval" in tool_outputs(provider)[0]


def test_a_halt_mid_run_stops_the_run(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    client = llm_server.client()
    halt = lambda: client.halt(agent, reason="stop now")  # noqa: E731
    provider.script(Reply(tool="lookup_order", arguments={"order_id": "1"}, on_request=halt))
    try:
        with pytest.raises(agents.exceptions.ToolInputGuardrailTripwireTriggered):
            asyncio.run(agents.Runner.run(make_agent(llm_server, provider, agent), "go"))
    finally:
        client.resume(agent, reason="done")
    assert RAN == [] and provider.count == 1


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
def test_a_streamed_run_is_governed_and_recorded(
    llm_server: Server, provider: FakeProvider, agent: str, api: str
) -> None:
    client = llm_server.async_client()
    provider.script(Reply(text="streamed answer", input_tokens=321, output_tokens=12))
    raw = openai.AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="test", max_retries=0)
    kind = agents.OpenAIResponsesModel if api == "responses" else agents.OpenAIChatCompletionsModel
    model = kind(model="gpt-test", openai_client=wrap_openai(raw, client, agent_id=agent))
    bot = agents.Agent(name="s", instructions="Answer.", model=model)

    async def run() -> Any:
        result = agents.Runner.run_streamed(bot, "hi")
        async for _ in result.stream_events():
            pass
        return result.final_output

    assert asyncio.run(run()) == "streamed answer"
    (budget,) = [b for b in llm_server.client().budget(agent) if b.name == "cap"]
    assert budget.usd is not None and (budget.usd.spent, budget.usd.reserved) == (321 + 24, 0)


def test_a_halted_agent_cannot_start_a_run(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    client = llm_server.client()
    client.halt(agent, reason="maintenance")
    try:
        with pytest.raises(arbiter.Halted):
            asyncio.run(agents.Runner.run(make_agent(llm_server, provider, agent), "go"))
    finally:
        client.resume(agent, reason="done")
    assert provider.count == 0
