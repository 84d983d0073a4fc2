"""An OpenAI Agents SDK agent under Arbiter: its model client is wrapped (budget, model
scope) and its function tools are governed. A refund above 100 USD needs an operator
(examples/policy.yaml): the run pauses as an SDK interruption and resumes once someone
runs `arbiter approvals approve <id>`
(refunds also need trust L4_ACT_REPORT: `arbiter trust set <agent> L4_ACT_REPORT`).

    pip install "arbiter[agents]"
    python client-py/examples/integrations_agents.py   # ARBITER_ADDR, ARBITER_AGENT, OPENAI_*
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import agents
import openai

import arbiter
from arbiter.integrations import check, wrap_openai
from arbiter.integrations.openai_agents import govern_tools, resolve_approvals

AGENT = os.environ.get("ARBITER_AGENT", "support-bot")
MODEL = os.environ.get("ARBITER_MODEL", "gpt-4o-mini")


@agents.function_tool
def read_ticket(ticket_id: str) -> str:
    """Read a support ticket."""
    return f"ticket {ticket_id}: kettle arrived broken, order total 180 USD"


@agents.function_tool
def refund_order(order_id: str, amount_usd: float) -> str:
    """Refund part or all of an order."""
    return f"refunded {amount_usd} USD on {order_id}"


async def main() -> int:
    agents.set_tracing_disabled(True)
    client = arbiter.AsyncClient(
        os.environ.get("ARBITER_ADDR", "127.0.0.1:50051"),
        api_key=os.environ.get("ARBITER_API_KEY"),
    )
    session = f"run-{uuid.uuid4().hex[:8]}"
    llm = wrap_openai(openai.AsyncOpenAI(), client, agent_id=AGENT, session_id=session)
    bot = agents.Agent(
        name="support",
        instructions="Resolve the customer's ticket.",
        model=agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=llm),
        tools=govern_tools([read_ticket, refund_order], client, agent_id=AGENT, session_id=session),
    )
    assert check(llm, bot).ok
    try:
        result: Any = await agents.Runner.run(bot, "Ticket 42: refund the kettle.")
        while result.interruptions:
            page = await client.list_approvals(agent_id=AGENT, state="pending")
            for approval in page.approvals:
                print(f"waiting for approval {approval.approval_id}", flush=True)
            state = await resolve_approvals(result, timeout=120)
            result = await agents.Runner.run(bot, state)
    except agents.exceptions.ToolInputGuardrailTripwireTriggered:
        print("halted by an operator")
        return 1
    except arbiter.Halted as halted:
        print("halted:", halted)
        return 1
    print("answer:", result.final_output)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
