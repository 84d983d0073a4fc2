"""A LangGraph agent under Arbiter: the model node calls a wrapped OpenAI client, the
tool node runs governed LangChain tools, and a refund above 100 USD
(examples/policy.yaml) pauses the graph with interrupt() until an operator runs
`arbiter approvals approve <id>`; the graph then resumes from its checkpoint.

    pip install "arbiter[langchain,openai]"
    python client-py/examples/integrations_langgraph.py   # ARBITER_ADDR, ARBITER_AGENT, OPENAI_*
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import openai
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

import arbiter
from arbiter.integrations import wrap_openai
from arbiter.integrations.langchain import govern_tools

AGENT = os.environ.get("ARBITER_AGENT", "support-bot")
MODEL = os.environ.get("ARBITER_MODEL", "gpt-4o-mini")


@tool
def read_ticket(ticket_id: str) -> str:
    """Read a support ticket."""
    return f"ticket {ticket_id}: kettle arrived broken, order total 180 USD"


@tool
def refund_order(order_id: str, amount_usd: float) -> str:
    """Refund part or all of an order."""
    return f"refunded {amount_usd} USD on {order_id}"


def wire(message: BaseMessage) -> dict[str, Any]:
    """A LangChain message in the Chat Completions format."""
    if isinstance(message, ToolMessage):
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    if isinstance(message, AIMessage):
        calls = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
            }
            for c in message.tool_calls
        ]
        return {
            "role": "assistant",
            "content": message.text,
            **({"tool_calls": calls} if calls else {}),
        }
    return {"role": "user", "content": message.text}


def main() -> int:
    client = arbiter.Client(
        os.environ.get("ARBITER_ADDR", "127.0.0.1:50051"),
        api_key=os.environ.get("ARBITER_API_KEY"),
    )
    session = f"run-{uuid.uuid4().hex[:8]}"
    llm = wrap_openai(openai.OpenAI(), client, agent_id=AGENT, session_id=session)
    tools = govern_tools([read_ticket, refund_order], client, agent_id=AGENT, session_id=session)
    schemas: Any = [convert_to_openai_tool(t) for t in (read_ticket, refund_order)]

    def model(state: MessagesState) -> dict[str, Any]:
        messages: Any = [wire(m) for m in state["messages"]]
        reply = llm.chat.completions.create(
            model=MODEL,
            max_tokens=400,
            tools=schemas,
            messages=messages,
        )
        choice = reply.choices[0].message
        calls = [
            {"name": c.function.name, "args": json.loads(c.function.arguments), "id": c.id}
            for c in choice.tool_calls or []
            if c.type == "function"
        ]
        return {"messages": [AIMessage(content=choice.content or "", tool_calls=calls)]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    app = graph.compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": session}}

    try:
        out = app.invoke({"messages": [HumanMessage("Ticket 42: refund the kettle.")]}, config)
        while out.get("__interrupt__"):
            for pause in out["__interrupt__"]:
                approval_id = pause.value["arbiter_approval_id"]
                print(f"waiting for approval {approval_id}", flush=True)
                client.wait_for_approval(approval_id, timeout=120)
            out = app.invoke(Command(resume="approved"), config)
    except (arbiter.Halted, arbiter.ApprovalDenied, arbiter.ApprovalTimeout) as stopped:
        print("stopped:", stopped)
        return 1
    print("answer:", out["messages"][-1].text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
