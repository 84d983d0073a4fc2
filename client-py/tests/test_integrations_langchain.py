"""The LangChain/LangGraph adapter with real langchain-core and langgraph and a real
arbiter server: tools gated in a LangGraph ToolNode, denials as tool errors the model
reads, a pending call paused with interrupt() and resumed from the checkpoint after a
CLI approval, halts, and the callback handler recording LLM usage."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import arbiter
from arbiter.integrations import check

from .conftest import Server, cli_approve, require

require("langgraph")
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import BaseTool, tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import ToolNode, tools_condition  # noqa: E402
from langgraph.types import Command  # noqa: E402

from arbiter.integrations.langchain import (  # noqa: E402
    ArbiterCallbackHandler,
    AsyncArbiterCallbackHandler,
    govern_tools,
)

RAN: list[tuple[str, dict[str, Any]]] = []


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order."""
    RAN.append(("lookup_order", {"order_id": order_id}))
    return f"order {order_id}: shipped"


@tool
def refund_order(order_id: str, amount: float) -> str:
    """Refund an order."""
    RAN.append(("refund_order", {"order_id": order_id, "amount": amount}))
    return f"refunded {amount} on {order_id}"


@tool
def delete_account(user: str) -> str:
    """Delete a user's account."""
    RAN.append(("delete_account", {"user": user}))
    return "deleted"


def calls(name: str, **args: Any) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:8]}"}]
    )


class Graph:
    """agent → tools → agent, the agent replaying a script and keeping what it was shown."""

    def __init__(self, tools: list[BaseTool], *script: AIMessage) -> None:
        self.script = list(script)
        self.seen: list[list[Any]] = []
        graph = StateGraph(MessagesState)
        graph.add_node("agent", self._agent)
        graph.add_node("tools", ToolNode(tools))
        graph.add_edge(START, "agent")
        graph.add_conditional_edges("agent", tools_condition)
        graph.add_edge("tools", "agent")
        self.app = graph.compile(checkpointer=InMemorySaver())
        self.config: Any = {"configurable": {"thread_id": "t-1"}}

    def _agent(self, state: MessagesState) -> dict[str, Any]:
        self.seen.append(list(state["messages"]))
        return {"messages": [self.script.pop(0)]}

    def run(self, value: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.app.invoke(value, self.config)
        return out


def start(text: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


def governed(server: Server, agent: str) -> list[BaseTool]:
    return govern_tools(
        [lookup_order, refund_order, delete_account], server.client(), agent_id=agent
    )


def test_an_allowed_tool_runs_and_is_recorded(llm_server: Server, agent: str) -> None:
    tools = governed(llm_server, agent)
    graph = Graph(tools, calls("lookup_order", order_id="42"), AIMessage("done"))
    out = graph.run(start("where is 42?"))
    assert out["messages"][-1].content == "done"
    assert RAN == [("lookup_order", {"order_id": "42"})]
    page = llm_server.client().audit.query(agent_id=agent, kinds=["record"])
    assert [e.outcome for e in page.entries] == ["success"]
    assert check(tools).ok and not check([lookup_order]).ok


def test_a_denied_tool_never_runs_and_the_model_reads_the_error(
    llm_server: Server, agent: str
) -> None:
    graph = Graph(
        governed(llm_server, agent), calls("delete_account", user="u1"), AIMessage("sorry")
    )
    graph.run(start("delete u1"))
    assert RAN == []
    message = graph.seen[1][-1]
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert "Arbiter denied" in str(message.content)


def test_a_direct_call_raises_denied_or_approval_required(llm_server: Server, agent: str) -> None:
    _, refund, delete = governed(llm_server, agent)
    with pytest.raises(arbiter.Denied):
        delete.invoke({"user": "u1"})
    # Outside a graph there is nothing to pause: the pending call is an exception.
    with pytest.raises(arbiter.ApprovalRequired):
        refund.invoke({"order_id": "9", "amount": 1.0})
    assert RAN == []


def test_run_and_arun_take_the_governed_path_too(llm_server: Server, agent: str) -> None:
    lookup, _, delete = governed(llm_server, agent)
    with pytest.raises(arbiter.Denied):
        delete.run({"user": "u1"})
    with pytest.raises(arbiter.Denied):
        asyncio.run(delete.arun({"user": "u1"}))
    assert RAN == []
    assert "42" in str(lookup.run({"order_id": "42"}))
    assert RAN == [("lookup_order", {"order_id": "42"})]
    page = llm_server.client().audit.query(agent_id=agent, kinds=["record"])
    assert [e.outcome for e in page.entries] == ["success"]


def test_a_pending_tool_pauses_the_graph_and_resumes_after_a_cli_approval(
    llm_server: Server, agent: str
) -> None:
    graph = Graph(
        governed(llm_server, agent),
        calls("refund_order", order_id="42", amount=12.5),
        AIMessage("refunded"),
    )
    out = graph.run(start("refund 42"))
    (paused,) = out["__interrupt__"]
    approval_id = paused.value["arbiter_approval_id"]
    assert paused.value["arguments"] == {"order_id": "42", "amount": 12.5}
    # Resuming before anyone approved pauses again, and the tool still has not run.
    out = graph.run(Command(resume="go"))
    assert out["__interrupt__"] and RAN == []
    cli_approve(llm_server, approval_id)
    out = graph.run(Command(resume="approved"))
    assert "__interrupt__" not in out
    assert out["messages"][-1].content == "refunded"
    assert RAN == [("refund_order", {"order_id": "42", "amount": 12.5})]
    # Re-running the node on each resume asked for one approval, not one per run.
    approvals = llm_server.client().list_approvals(agent_id=agent).approvals
    assert [a.approval_id for a in approvals] == [approval_id]


def test_a_halt_mid_run_stops_the_graph(llm_server: Server, agent: str) -> None:
    client = llm_server.client()
    graph = Graph(
        governed(llm_server, agent),
        calls("lookup_order", order_id="1"),
        calls("lookup_order", order_id="2"),
        AIMessage("done"),
    )
    graph.app.invoke(start("one"), graph.config, interrupt_after=["tools"])
    client.halt(agent, reason="stop the run")
    try:
        with pytest.raises(arbiter.Halted):
            graph.run(None)
    finally:
        client.resume(agent, reason="done")
    assert RAN == [("lookup_order", {"order_id": "1"})]


def test_the_callback_handler_gates_and_records_llm_usage(llm_server: Server, agent: str) -> None:
    client = llm_server.client()
    usage = {"input_tokens": 800, "output_tokens": 70, "total_tokens": 870}
    replies = iter([AIMessage("hi", usage_metadata=usage)])  # type: ignore[arg-type]
    model = GenericFakeChatModel(messages=replies)
    handler = ArbiterCallbackHandler(client, agent_id=agent, model="gpt-test", max_tokens=100)
    assert model.invoke("hello", config={"callbacks": [handler]}).content == "hi"
    (budget,) = [b for b in client.budget(agent) if b.name == "cap"]
    assert budget.usd is not None and (budget.usd.spent, budget.usd.reserved) == (800 + 140, 0)
    outside = ArbiterCallbackHandler(client, agent_id=agent, model="gpt-4o")
    untouched = iter([AIMessage("never")])
    with pytest.raises(arbiter.Denied):
        GenericFakeChatModel(messages=untouched).invoke("x", config={"callbacks": [outside]})
    assert next(untouched).content == "never"


def test_an_async_graph_pauses_and_resumes_the_same_way(llm_server: Server, agent: str) -> None:
    tools = govern_tools([lookup_order, refund_order], llm_server.async_client(), agent_id=agent)
    graph = Graph(
        tools,
        calls("lookup_order", order_id="5"),
        calls("refund_order", order_id="5", amount=3.0),
        AIMessage("done"),
    )

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = await graph.app.ainvoke(start("refund 5"), graph.config)
        (paused,) = out["__interrupt__"]
        await asyncio.to_thread(cli_approve, llm_server, paused.value["arbiter_approval_id"])
        done: dict[str, Any] = await graph.app.ainvoke(Command(resume=True), graph.config)
        return done

    assert asyncio.run(run())["messages"][-1].content == "done"
    assert RAN == [
        ("lookup_order", {"order_id": "5"}),
        ("refund_order", {"order_id": "5", "amount": 3.0}),
    ]


def test_the_async_callback_handler_records_and_reports_failures(
    llm_server: Server, agent: str
) -> None:
    import asyncio

    usage = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
    replies = iter([AIMessage("ok", usage_metadata=usage)])  # type: ignore[arg-type]
    handler = AsyncArbiterCallbackHandler(
        llm_server.async_client(), agent_id=agent, model="gpt-test", max_tokens=50
    )

    async def run() -> None:
        model = GenericFakeChatModel(messages=replies)
        await model.ainvoke("hello", config={"callbacks": [handler]})
        with pytest.raises(RuntimeError):  # the script is used up: the model call fails
            await model.ainvoke("again", config={"callbacks": [handler]})

    asyncio.run(run())
    client = llm_server.client()
    (budget,) = [b for b in client.budget(agent) if b.name == "cap"]
    assert budget.usd is not None and (budget.usd.spent, budget.usd.reserved) == (100 + 20, 0)
    page = client.audit.query(agent_id=agent, kinds=["record"])
    assert [e.outcome for e in page.entries] == ["success", "failure"]
