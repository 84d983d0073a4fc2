"""An OpenAI client under Arbiter: one wrap, then the SDK as usual.

Run a server with examples/policy.yaml (it knows "support-*" agents and their models),
set OPENAI_API_KEY (and OPENAI_BASE_URL for an OpenAI-compatible endpoint), then:

    pip install "arbiter[openai]"
    python client-py/examples/integrations_openai.py     # ARBITER_ADDR, ARBITER_AGENT are read

Each call is evaluated (model scope, budget reserved for max_tokens) before it is sent
and recorded with the usage the provider reports; a refused call never leaves the process.
"""

from __future__ import annotations

import os
import uuid

import openai

import arbiter
from arbiter.integrations import check, wrap_openai

AGENT = os.environ.get("ARBITER_AGENT", "support-bot")
MODEL = os.environ.get("ARBITER_MODEL", "gpt-4o-mini")


def main() -> int:
    client = arbiter.Client(
        os.environ.get("ARBITER_ADDR", "127.0.0.1:50051"),
        api_key=os.environ.get("ARBITER_API_KEY"),
    )
    session = f"run-{uuid.uuid4().hex[:8]}"
    llm = wrap_openai(openai.OpenAI(), client, agent_id=AGENT, session_id=session)
    assert check(llm).ok

    reply = llm.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Summarize ticket 42 in one line."}],
        max_tokens=200,
    )
    print("answer:", reply.choices[0].message.content)

    stream = llm.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Draft a reply to ticket 42."}],
        max_tokens=300,
        stream=True,
    )
    print("draft:", "".join(chunk.choices[0].delta.content or "" for chunk in stream))

    try:
        llm.chat.completions.create(
            model="gpt-4o",  # not in this agent's `models`
            messages=[{"role": "user", "content": "Anything."}],
            max_tokens=50,
        )
    except arbiter.Denied as denied:
        print("refused before sending:", denied.reason)

    for budget in client.budget(AGENT, session):
        if budget.usd is not None:
            print(f"budget {budget.name}: spent {arbiter.micros_to_usd(budget.usd.spent)} USD")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
