"""Many agents at once under asyncio, sharing one AsyncClient.

    python client-py/examples/async_agents.py

`governed` wraps a coroutine: every call is evaluated first and recorded after.
"""

from __future__ import annotations

import asyncio
import os
import sys

import arbiter

AGENT = os.environ.get("ARBITER_AGENT", "billing-agent")


async def main() -> int:
    client = arbiter.AsyncClient(
        os.environ.get("ARBITER_ADDR", "127.0.0.1:50051"),
        api_key=os.environ.get("ARBITER_API_KEY"),
    )

    @client.governed(AGENT, session_id="async-demo")
    async def read_invoice(number: int) -> str:
        await asyncio.sleep(0.01)  # stands in for real I/O
        arbiter.current_guard().report(metadata={"invoice": str(number)})
        return f"invoice #{number}"

    results = await asyncio.gather(*(read_invoice(n) for n in range(20)), return_exceptions=True)
    done = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, arbiter.ArbiterError)]
    print(f"{len(done)} invoices read, {len(refused)} refused")

    page = await client.audit.query(agent_id=AGENT, kinds=["record"], page_size=5)
    for entry in page.entries:
        print(f"audit #{entry.seq}: {entry.kind} {entry.outcome}")
    return 0 if not refused else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
