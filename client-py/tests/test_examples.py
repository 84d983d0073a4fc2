"""The examples run, against a real server, with nothing but the arbiter package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Server

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(server: Server, name: str, agent: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ARBITER_ADDR=server.address, ARBITER_AGENT=agent)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_agent_loop_reads_summarizes_and_spends(server: Server, agent: str) -> None:
    done = run(server, "agent_loop.py", agent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tools this agent may see: ['read_invoice', 'send_email']" in done.stdout
    assert "step 3: invoice #3" in done.stdout
    assert "this run spent" in done.stdout


def test_the_agent_loop_stops_when_halted(server: Server, agent: str) -> None:
    client = server.client()
    client.halt(agent, reason="maintenance")
    try:
        done = run(server, "agent_loop.py", agent)
    finally:
        client.resume(agent, reason="done")
    assert done.returncode == 1
    assert "halted" in done.stdout and "maintenance" in done.stdout


def test_the_async_example_governs_every_call(server: Server, agent: str) -> None:
    done = run(server, "async_agents.py", agent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20 invoices read, 0 refused" in done.stdout


@pytest.mark.parametrize("approve", [False, True])
def test_the_operator_example_lists_and_approves(server: Server, agent: str, approve: bool) -> None:
    pending = server.client().evaluate(agent, tool="refund_example")
    assert pending.approval_id is not None
    done = run(server, "operator_desk.py", agent, *(["--approve-all"] if approve else []))
    assert done.returncode == 0, done.stdout + done.stderr
    assert pending.approval_id in done.stdout
    assert "audit chain ok" in done.stdout
    state = server.client().get_approval(pending.approval_id).state
    assert state == ("granted" if approve else "pending")
