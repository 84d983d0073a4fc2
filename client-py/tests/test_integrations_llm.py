"""wrap_openai and wrap_anthropic with the real SDKs against a fake provider endpoint and
a real arbiter server: reservation, settlement with the real usage, denials before any
request, streaming, failures and halts."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

import arbiter
from arbiter.integrations import NotCovered, check, wrap_anthropic, wrap_openai

from .conftest import Server, cli_approve, require
from .fake_providers import FakeProvider, Reply

openai: Any = require("openai")
anthropic: Any = require("anthropic")

# Prices in the test policy, micro-USD per token: gpt-test 1 in / 2 out, claude-test 3 / 15.
GPT = (1, 2)
CLAUDE = (3, 15)
MESSAGES = [{"role": "user", "content": "What is the status of order 42?"}]


def cost(price: tuple[int, int], reply: Reply) -> int:
    return reply.input_tokens * price[0] + reply.output_tokens * price[1]


def money(client: arbiter.Client, agent: str) -> tuple[int, int]:
    """(spent, reserved) micro-USD of the agent's budget."""
    (budget,) = [b for b in client.budget(agent) if b.name == "cap"]
    assert budget.usd is not None
    return budget.usd.spent, budget.usd.reserved


def records(client: arbiter.Client, agent: str) -> list[dict[str, Any]]:
    page = client.audit.query(agent_id=agent, kinds=["record"])
    return [dict(json.loads(e.canonical), outcome=e.outcome) for e in page.entries]


def sync_openai(provider: FakeProvider) -> Any:
    return openai.OpenAI(base_url=f"{provider.url}/v1", api_key="test", max_retries=0)


def test_openai_chat_reserves_then_settles_with_the_real_usage(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    client = llm_server.client()
    seen: list[tuple[int, int]] = []
    reply = Reply(text="shipped", on_request=lambda: seen.append(money(client, agent)))
    provider.script(reply)
    llm = wrap_openai(sync_openai(provider), client, agent_id=agent, session_id="s-1")
    done = llm.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=500)
    assert done.choices[0].message.content == "shipped"
    assert provider.count == 1
    # While the request was in flight the budget held a reservation covering max_tokens.
    assert seen[0][0] == 0 and seen[0][1] >= 500 * GPT[1]
    assert money(client, agent) == (cost(GPT, reply), 0)
    (record,) = records(client, agent)
    assert record["outcome"] == "success"
    assert check(llm).ok


def test_openai_call_without_a_cap_is_sent_with_the_reserved_cap(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    llm = wrap_openai(sync_openai(provider), llm_server.client(), agent_id=agent, max_tokens=700)
    llm.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert provider.requests[0][1]["max_completion_tokens"] == 700


def test_an_over_budget_call_is_denied_before_the_endpoint_is_contacted(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    llm = wrap_openai(sync_openai(provider), llm_server.client(), agent_id=agent)
    with pytest.raises(arbiter.Denied) as denied:
        llm.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=400_000)
    assert denied.value.reason is not None and denied.value.reason.startswith("budget.")
    assert provider.count == 0
    assert money(llm_server.client(), agent) == (0, 0)


def test_a_model_outside_the_policy_is_denied_before_the_endpoint_is_contacted(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    llm = wrap_openai(sync_openai(provider), llm_server.client(), agent_id=agent)
    with pytest.raises(arbiter.Denied):
        llm.responses.create(model="gpt-4o", input="hi", max_output_tokens=10)
    with pytest.raises(NotCovered):
        llm.responses.create(input="no model named")
    assert provider.count == 0


def test_openai_stream_is_recorded_at_its_end_and_hides_the_usage_chunk(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    client = llm_server.client()
    reply = Reply(text="one two three", input_tokens=900, output_tokens=120)
    provider.script(reply)
    llm = wrap_openai(sync_openai(provider), client, agent_id=agent)
    stream = llm.chat.completions.create(
        model="gpt-test", messages=MESSAGES, max_tokens=200, stream=True
    )
    # A loop written for streams without usage: every chunk it sees has a choice.
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text.split() == ["one", "two", "three"]
    assert provider.requests[0][1]["stream_options"] == {"include_usage": True}
    assert money(client, agent) == (cost(GPT, reply), 0)


def test_a_stream_the_caller_closes_early_is_recorded(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    client = llm_server.client()
    provider.script(Reply(text=" ".join(["word"] * 50)))
    llm = wrap_openai(sync_openai(provider), client, agent_id=agent)
    with llm.chat.completions.create(
        model="gpt-test", messages=MESSAGES, max_tokens=100, stream=True
    ) as stream:
        next(iter(stream))
    spent, reserved = money(client, agent)
    # No usage arrived: what was reserved is charged, and nothing stays reserved.
    assert reserved == 0 and spent >= 100 * GPT[1]
    (record,) = records(client, agent)
    assert record["outcome"] == "success"


def test_an_endpoint_failure_is_recorded_as_failure_and_releases_the_reservation(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    client = llm_server.client()
    provider.script(Reply(status=500))
    llm = wrap_openai(sync_openai(provider), client, agent_id=agent)
    with pytest.raises(openai.InternalServerError):
        llm.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=50)
    assert provider.count == 1
    assert money(client, agent) == (0, 0)
    (record,) = records(client, agent)
    assert record["outcome"] == "failure"


def test_a_halt_mid_run_stops_the_next_call(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    client = llm_server.client()
    llm = wrap_openai(sync_openai(provider), client, agent_id=agent, session_id="run-1")
    llm.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=50)
    client.halt(agent, "run-1", reason="operator stop")
    try:
        with pytest.raises(arbiter.Halted):
            llm.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=50)
    finally:
        client.resume(agent, "run-1", reason="done")
    assert provider.count == 1


def test_copies_of_a_wrapped_client_are_governed_and_helpers_are_refused(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    llm = wrap_openai(sync_openai(provider), llm_server.client(), agent_id=agent)
    with pytest.raises(arbiter.Denied):
        llm.with_options(timeout=5).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(NotCovered):
        llm.chat.completions.stream(model="gpt-test", messages=MESSAGES)
    with pytest.raises(AttributeError, match="not governed"):
        llm.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)
    assert provider.count == 0
    assert not check(openai.OpenAI(api_key="x")).ok
    with pytest.raises(ValueError, match="already governed"):
        wrap_openai(llm, llm_server.client(), agent_id=agent)


def test_async_openai_responses_plain_and_streamed_are_settled(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    client = llm_server.async_client()
    plain = Reply(text="hello", input_tokens=400, output_tokens=40)
    streamed = Reply(text="a b c", input_tokens=500, output_tokens=60)
    provider.script(plain, streamed)

    async def run() -> str:
        raw = openai.AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="t", max_retries=0)
        llm = wrap_openai(raw, client, agent_id=agent)
        first = await llm.responses.create(model="gpt-test", input="hi", max_output_tokens=64)
        events = await llm.responses.create(
            model="gpt-test", input="hi", max_output_tokens=64, stream=True
        )
        kinds = [event.type async for event in events]
        assert kinds[-1] == "response.completed"
        return str(first.output_text)

    assert asyncio.run(run()) == "hello"
    assert money(llm_server.client(), agent) == (cost(GPT, plain) + cost(GPT, streamed), 0)


def test_anthropic_messages_plain_and_streamed_are_settled(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    client = llm_server.client()
    plain = Reply(text="fine", input_tokens=700, output_tokens=90)
    streamed = Reply(text="x y", input_tokens=300, output_tokens=30)
    provider.script(plain, streamed)
    llm = wrap_anthropic(
        anthropic.Anthropic(base_url=provider.url, api_key="t", max_retries=0),
        client,
        agent_id=agent,
    )
    message = llm.messages.create(model="claude-test", max_tokens=256, messages=MESSAGES)
    assert message.content[0].text == "fine"
    events = llm.messages.create(
        model="claude-test", max_tokens=256, messages=MESSAGES, stream=True
    )
    assert [e.type for e in events][-1] == "message_stop"
    assert money(client, agent) == (cost(CLAUDE, plain) + cost(CLAUDE, streamed), 0)
    with pytest.raises(arbiter.Denied):
        llm.messages.create(model="claude-opus-4", max_tokens=10, messages=MESSAGES)
    with pytest.raises(NotCovered):
        llm.beta.messages.tool_runner(model="claude-test", max_tokens=10, messages=MESSAGES)
    assert provider.count == 2


def test_anthropic_stream_helper_is_evaluated_on_entry_and_settled_on_exit(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    client = llm_server.client()
    whole = Reply(text="all of it", input_tokens=600, output_tokens=80)
    provider.script(whole, Reply(text=" ".join(["more"] * 40)))
    llm = wrap_anthropic(
        anthropic.Anthropic(base_url=provider.url, api_key="t", max_retries=0),
        client,
        agent_id=agent,
    )
    with llm.messages.stream(model="claude-test", max_tokens=128, messages=MESSAGES) as stream:
        assert "".join(stream.text_stream) == "all of it"
    assert money(client, agent) == (cost(CLAUDE, whole), 0)
    with llm.messages.stream(model="claude-test", max_tokens=128, messages=MESSAGES) as stream:
        next(iter(stream.text_stream))  # and leave early
    spent, reserved = money(client, agent)
    assert reserved == 0 and spent >= cost(CLAUDE, whole) + 128 * CLAUDE[1]
    manager = llm.messages.stream(model="claude-opus-4", max_tokens=10, messages=MESSAGES)
    with pytest.raises(arbiter.Denied), manager:
        pass
    assert provider.count == 2


def test_async_anthropic_stream_and_failure(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    streamed = Reply(text="p q r", input_tokens=250, output_tokens=25)
    helper = Reply(text="s t", input_tokens=50, output_tokens=5)
    provider.script(streamed, helper, Reply(status=529))

    async def run() -> None:
        raw = anthropic.AsyncAnthropic(base_url=provider.url, api_key="t", max_retries=0)
        llm = wrap_anthropic(raw, llm_server.async_client(), agent_id=agent)
        events = await llm.messages.create(
            model="claude-test", max_tokens=64, messages=MESSAGES, stream=True
        )
        async with events:
            async for _ in events:
                pass
        manager = llm.messages.stream(model="claude-test", max_tokens=64, messages=MESSAGES)
        async with manager as stream:
            assert [t async for t in stream.text_stream] == ["s ", "t"]
        with pytest.raises(anthropic.APIStatusError):
            await llm.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES)

    asyncio.run(run())
    client = llm_server.client()
    assert money(client, agent) == (cost(CLAUDE, streamed) + cost(CLAUDE, helper), 0)
    assert [r["outcome"] for r in records(client, agent)] == ["success", "success", "failure"]


def tool_loop(llm: Any, tools: Any, ask: str) -> Any:
    """The usual Anthropic tool loop: call, run the tool_use blocks, send the results."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": ask}]
    while True:
        message = llm.messages.create(model="claude-test", max_tokens=256, messages=messages)
        if message.stop_reason != "tool_use":
            return message
        messages.append({"role": "assistant", "content": message.content})
        messages.append({"role": "user", "content": tools.run(message)})


def tool_results(provider: FakeProvider) -> list[dict[str, Any]]:
    """Every tool_result block the model was sent."""
    out = []
    for _, body in provider.requests:
        for message in body["messages"]:
            content = message["content"]
            if isinstance(content, list):
                out += [b for b in content if b.get("type") == "tool_result"]
    return out


def anthropic_tools(server: Server, provider: FakeProvider, agent: str, ran: list[str]) -> Any:
    from arbiter.integrations import AnthropicTools

    client = server.client()
    llm = wrap_anthropic(
        anthropic.Anthropic(base_url=provider.url, api_key="t", max_retries=0),
        client,
        agent_id=agent,
    )
    tools = AnthropicTools(
        client,
        {
            "lookup_order": lambda order_id: ran.append(order_id) or {"status": "shipped"},
            "delete_account": lambda user: ran.append(user) or "deleted",
        },
        agent_id=agent,
    )
    return llm, tools


def test_anthropic_tool_use_runs_allowed_tools_and_returns_denials_as_errors(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    ran: list[str] = []
    llm, tools = anthropic_tools(llm_server, provider, agent, ran)
    provider.script(
        Reply(tool="lookup_order", arguments={"order_id": "42"}),
        Reply(tool="delete_account", arguments={"user": "u1"}),
        Reply(text="done"),
    )
    assert tool_loop(llm, tools, "check 42 and delete u1").content[0].text == "done"
    assert ran == ["42"]
    allowed, denied = tool_results(provider)[-2:]
    assert json.loads(allowed["content"]) == {"status": "shipped"} and "is_error" not in allowed
    assert denied["is_error"] is True and "Arbiter denied" in denied["content"]
    assert check(tools).ok


def test_anthropic_tool_use_stops_on_a_halt(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    ran: list[str] = []
    llm, tools = anthropic_tools(llm_server, provider, agent, ran)
    client = llm_server.client()
    halt = lambda: client.halt(agent, reason="stop")  # noqa: E731
    provider.script(Reply(tool="lookup_order", arguments={"order_id": "1"}, on_request=halt))
    try:
        with pytest.raises(arbiter.Halted):
            tool_loop(llm, tools, "look up 1")
    finally:
        client.resume(agent, reason="done")
    assert ran == [] and provider.count == 1


def test_check_lists_live_wrapped_clients_and_forgets_collected_ones(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    import gc

    llm = wrap_openai(sync_openai(provider), llm_server.client(), agent_id=agent)
    mine = [str(w) for w in check().wrapped if w.agent_id == agent]
    assert mine == [f"openai OpenAI (agent {agent}): " + ", ".join(openai_covers())]
    del llm
    gc.collect()
    assert [w for w in check().wrapped if w.agent_id == agent] == []


def openai_covers() -> tuple[str, ...]:
    from arbiter.integrations.openai import COVERS

    return COVERS


def test_anthropic_tools_can_wait_for_an_operator(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    import threading

    from arbiter.integrations import AnthropicTools

    client = llm_server.client()
    ran: list[float] = []
    tools = AnthropicTools(
        client,
        {"refund_order": lambda amount: ran.append(amount) or "refunded"},
        agent_id=agent,
        wait_for_approval=30,
    )
    message = {
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "refund_order", "input": {"amount": 9}}
        ]
    }

    def operator() -> None:
        # The run blocks in wait_for_approval; poll until its approval exists (bounded).
        for _ in range(600):
            pending = client.list_approvals(agent_id=agent, state="pending").approvals
            if pending:
                cli_approve(llm_server, pending[0].approval_id)
                return
            time.sleep(0.05)

    desk = threading.Thread(target=operator)
    desk.start()
    (result,) = tools.run(message)
    desk.join()
    assert result == {"type": "tool_result", "tool_use_id": "toolu_1", "content": "refunded"}
    assert ran == [9]


def test_an_unreachable_arbiter_fails_closed(provider: FakeProvider, agent: str) -> None:
    from .conftest import free_port

    nobody = arbiter.Client(f"127.0.0.1:{free_port()}", timeout=2.0, retries=0)
    llm = wrap_openai(sync_openai(provider), nobody, agent_id=agent)
    with pytest.raises(arbiter.Unavailable):
        llm.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=10)
    assert provider.count == 0


def test_an_llm_call_that_needs_a_human_waits_for_the_approval_when_asked_to(
    llm_server: Server, provider: FakeProvider, agent: str
) -> None:
    import threading

    client = llm_server.client()
    plain = wrap_openai(sync_openai(provider), client, agent_id=agent)
    with pytest.raises(arbiter.ApprovalRequired):
        plain.chat.completions.create(model="gpt-test-large", messages=MESSAGES, max_tokens=20)
    assert provider.count == 0
    patient = wrap_openai(sync_openai(provider), client, agent_id=agent, wait_for_approval=30)

    def operator() -> None:
        # Approve the newest pending approval, once there are two (bounded).
        for _ in range(600):
            pending = client.list_approvals(agent_id=agent, state="pending").approvals
            if len(pending) == 2:
                cli_approve(llm_server, pending[0].approval_id)
                return
            time.sleep(0.05)

    desk = threading.Thread(target=operator)
    desk.start()
    reply = patient.chat.completions.create(
        model="gpt-test-large", messages=MESSAGES, max_tokens=20
    )
    desk.join()
    assert reply.choices[0].message.content == "ok" and provider.count == 1
    assert [r["outcome"] for r in records(client, agent)] == ["success"]
