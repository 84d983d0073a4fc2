"""The adapter examples run as written, against a real server with the repository's
examples/policy.yaml and the fake provider endpoint (the SDKs read OPENAI_BASE_URL and
ANTHROPIC_BASE_URL); the approval examples are approved from the CLI while they wait."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, Server, cli_approve, require, start_server
from .fake_providers import FakeProvider, Reply

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def example_server() -> Iterator[Server]:
    s = start_server((REPO / "examples" / "policy.yaml").read_text())
    yield s
    s.stop()
    shutil.rmtree(s.directory, ignore_errors=True)


def run(server: Server, provider: FakeProvider, name: str, trust: str = "") -> tuple[int, str]:
    """Run an example as a fresh agent (given ``trust`` if any, as an operator would);
    approve every approval it says it waits for."""
    agent = f"support-{uuid.uuid4().hex[:8]}"
    if trust:
        server.client().set_trust(agent, trust, reason="the example refunds")
    env = dict(
        os.environ,
        ARBITER_ADDR=server.address,
        ARBITER_AGENT=agent,
        OPENAI_BASE_URL=f"{provider.url}/v1",
        OPENAI_API_KEY="test",
        ANTHROPIC_BASE_URL=provider.url,
        ANTHROPIC_API_KEY="test",
    )
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("waiting for approval "):
                cli_approve(server, line.split()[-1])
        code = process.wait(timeout=60)
    finally:
        process.kill()
    return code, "".join(lines)


def test_the_openai_example(example_server: Server, provider: FakeProvider) -> None:
    require("openai")
    provider.script(Reply(text="Kettle broken."), Reply(text="Dear customer"))
    code, out = run(example_server, provider, "integrations_openai.py")
    assert code == 0, out
    assert "answer: Kettle broken." in out and "draft: Dear customer" in out
    assert "refused before sending: scope." in out
    assert provider.count == 2


def test_the_anthropic_example(example_server: Server, provider: FakeProvider) -> None:
    require("anthropic")
    provider.script(
        Reply(tool="read_ticket", arguments={"ticket_id": "42"}),
        Reply(tool="delete_customer", arguments={"customer_id": "C-7"}),
        Reply(text="Done."),
    )
    code, out = run(example_server, provider, "integrations_anthropic.py")
    assert code == 0, out
    assert "Refund for a broken kettle" in out
    assert "Arbiter denied" in out and "(error)" in out
    assert "answer: Done." in out


REFUND = (
    Reply(tool="read_ticket", arguments={"ticket_id": "42"}),
    Reply(tool="refund_order", arguments={"order_id": "42", "amount_usd": 180}),
    Reply(text="Refunded."),
)


@pytest.mark.parametrize(
    ("sdk", "example"),
    [("agents", "integrations_agents.py"), ("langgraph", "integrations_langgraph.py")],
)
def test_the_approval_examples_pause_and_resume(
    example_server: Server, provider: FakeProvider, sdk: str, example: str
) -> None:
    require(sdk)
    provider.script(*REFUND)
    # examples/policy.yaml: refunds need L4_ACT_REPORT, and above 100 USD an approval.
    code, out = run(example_server, provider, example, trust="L4_ACT_REPORT")
    assert code == 0, out
    assert "waiting for approval" in out and "answer: Refunded." in out
    assert provider.count == 3
