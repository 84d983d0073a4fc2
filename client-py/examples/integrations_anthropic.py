"""An Anthropic tool loop under Arbiter: the client is wrapped (budget, model scope) and
the model's tool_use blocks run through AnthropicTools (each tool call evaluated with its
arguments; denials go back to the model as error results).

Run a server with examples/policy.yaml, set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL
for another endpoint), then:

    pip install "arbiter[anthropic]"
    python client-py/examples/integrations_anthropic.py   # ARBITER_ADDR, ARBITER_AGENT are read
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import anthropic

import arbiter
from arbiter.integrations import AnthropicTools, wrap_anthropic

AGENT = os.environ.get("ARBITER_AGENT", "support-bot")
MODEL = os.environ.get("ARBITER_MODEL", "claude-3-5-haiku-20241022")

TOOLS: list[Any] = [
    {
        "name": "read_ticket",
        "description": "Read a support ticket.",
        "input_schema": {"type": "object", "properties": {"ticket_id": {"type": "string"}}},
    },
    {
        "name": "delete_customer",
        "description": "Delete a customer record.",
        "input_schema": {"type": "object", "properties": {"customer_id": {"type": "string"}}},
    },
]


def read_ticket(ticket_id: str) -> dict[str, str]:
    return {"ticket": ticket_id, "subject": "Refund for a broken kettle"}


def delete_customer(customer_id: str) -> str:
    raise AssertionError("Arbiter denies this tool; it never runs")


def main() -> int:
    client = arbiter.Client(
        os.environ.get("ARBITER_ADDR", "127.0.0.1:50051"),
        api_key=os.environ.get("ARBITER_API_KEY"),
    )
    session = f"run-{uuid.uuid4().hex[:8]}"
    llm = wrap_anthropic(anthropic.Anthropic(), client, agent_id=AGENT, session_id=session)
    tools = AnthropicTools(
        client,
        {"read_ticket": read_ticket, "delete_customer": delete_customer},
        agent_id=AGENT,
        session_id=session,
    )
    messages: list[Any] = [{"role": "user", "content": "Read ticket 42, then delete C-7."}]
    try:
        for _ in range(5):
            message = llm.messages.create(
                model=MODEL, max_tokens=500, tools=TOOLS, messages=messages
            )
            if message.stop_reason != "tool_use":
                print("answer:", "".join(b.text for b in message.content if b.type == "text"))
                return 0
            results = tools.run(message)
            for result in results:
                print("tool result:", result["content"], "(error)" if "is_error" in result else "")
            messages += [
                {"role": "assistant", "content": message.content},
                {"role": "user", "content": results},
            ]
    except arbiter.Halted as halted:
        print("halted:", halted)
        return 1
    print("stopped after 5 turns")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
