"""A small agent loop governed by Arbiter, using only the `arbiter` package.

Run a server with a policy that knows "billing-agent" (examples/policy.yaml in the
repository), then:

    python client-py/examples/agent_loop.py            # ARBITER_ADDR, ARBITER_API_KEY are read

Each step asks Arbiter first (guard), acts only on ALLOW, and records the outcome,
the duration and the cost. Denials, halts and approvals are handled, not crashed on.
"""

from __future__ import annotations

import os
import sys
import uuid
from decimal import Decimal

import arbiter

AGENT = os.environ.get("ARBITER_AGENT", "billing-agent")


def read_invoice(number: int) -> str:
    return f"invoice #{number}: 42.00 USD"


def summarize(text: str) -> tuple[str, int, int]:
    """Stands in for an LLM call: returns (summary, input tokens, output tokens)."""
    return text.split(":")[0], len(text) // 4, 8


def main() -> int:
    client = arbiter.Client(
        os.environ.get("ARBITER_ADDR", "127.0.0.1:50051"),
        api_key=os.environ.get("ARBITER_API_KEY"),
    )
    session = f"run-{uuid.uuid4().hex[:8]}"
    beat = client.heartbeat(AGENT, session)
    if beat.halted:
        print(f"{AGENT} is halted: {beat.halt.reason if beat.halt else ''}")
        return 1

    tools = client.filter_tools(AGENT, ["read_invoice", "send_email", "admin_reset"])
    print(f"tools this agent may see: {tools}")

    spent = Decimal(0)
    for number in range(1, 4):
        try:
            with client.guard(AGENT, tool="read_invoice", session_id=session):
                text = read_invoice(number)
            with client.guard(
                AGENT, model="gpt-4o-mini", max_tokens=64, session_id=session, cost_usd="0.0005"
            ) as g:
                summary, tokens_in, tokens_out = summarize(text)
                g.report(model="gpt-4o-mini", input_tokens=tokens_in, output_tokens=tokens_out)
            if g.recorded is not None:
                spent += g.recorded.actual_usd
            print(f"step {number}: {summary}")
        except arbiter.Halted as e:
            print(f"halted by an operator: {e.decision.reason}")
            return 1
        except arbiter.ApprovalRequired as e:
            print(f"waiting for a human: approval {e.approval_id}")
        except arbiter.Denied as e:
            print(f"denied: {e.decision.reason}")
        except arbiter.Unavailable:
            print("Arbiter is unreachable; not acting (fail closed)")
            return 2

    for budget in client.budget(AGENT, session):
        money = budget.usd
        if money is not None:
            print(f"budget {budget.name}: spent {money.spent_usd} of {money.cap_usd} USD")
    print(f"this run spent {spent} USD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
