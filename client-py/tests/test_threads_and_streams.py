"""One Client shared by many threads; the audit tail as a blocking iterator."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import arbiter
from arbiter import Client

from .conftest import Server


def test_many_threads_share_one_client(client: Client, agent: str) -> None:
    def work(i: int) -> arbiter.Decision:
        d = client.evaluate(f"{agent}-{i % 4}", tool="t", cost_usd="0.000001")
        client.record(d.decision_id, cost_usd="0.000001")
        return d

    with ThreadPoolExecutor(max_workers=16) as pool:
        decisions = list(pool.map(work, range(200)))
    assert all(d.allowed for d in decisions)
    assert len({d.decision_id for d in decisions}) == 200
    spent = 0
    for i in range(4):
        usd = next(b for b in client.budget(f"{agent}-{i}") if b.name == "cap").usd
        assert usd is not None
        spent += usd.spent
    assert spent == 200


def test_waiting_threads_release_the_gil(client: Client, agent: str) -> None:
    """A thread blocked in wait_for_approval must not stop others from running Python."""
    d = client.evaluate(agent, tool="refund_gil")
    assert d.approval_id is not None
    waiter = threading.Thread(target=_expect_timeout, args=(client, d.approval_id))
    waiter.start()
    counted = 0
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        counted += 1
    waiter.join()
    assert counted > 10_000


def _expect_timeout(client: Client, approval_id: str) -> None:
    try:
        client.wait_for_approval(approval_id, timeout=1.0)
    except arbiter.ApprovalTimeout:
        return
    raise AssertionError("expected ApprovalTimeout")


def test_tail_iterates_committed_and_new_entries(server: Server, agent: str) -> None:
    client = server.client()
    first = client.evaluate(agent, tool="t0")
    seen: list[arbiter.AuditEntry] = []
    with client.audit.tail(agent_id=agent, from_seq=first.audit_seq, limit=3) as tail:
        for entry in tail:
            seen.append(entry)
            if len(seen) == 1:
                # Entries committed while we follow arrive as they commit.
                client.evaluate(agent, tool="t1")
                client.evaluate(agent, tool="t2")
    assert next(e.seq for e in seen) == first.audit_seq
    assert [json.loads(e.canonical)["seq"] for e in seen] == [e.seq for e in seen]
    assert len(seen) == 3 and all(e.kind == "evaluate" for e in seen)
    assert all(e.time is not None and e.mac for e in seen)


def test_closing_a_tail_from_another_thread_ends_the_iteration(server: Server, agent: str) -> None:
    client = server.client()
    tail = client.audit.tail(agent_id=agent)  # only new entries: none will come
    threading.Timer(0.3, tail.close).start()
    started = time.monotonic()
    assert list(tail) == []
    assert time.monotonic() - started < 5


def test_query_pages_verify_checkpoint_proofs_and_export(client: Client, agent: str) -> None:
    for i in range(5):
        client.evaluate(agent, tool=f"t{i}")
    page = client.audit.query(agent_id=agent, page_size=2)
    assert len(page.entries) == 2 and page.next_page_token is not None
    every = list(client.audit.entries(agent_id=agent, kinds=["evaluate"]))
    assert len(every) == 5
    assert client.audit.query(agent_id=agent, outcome="deny").entries == []

    result = client.audit.verify()
    assert result.ok and result.checked == result.head_seq and result.fault is None
    checkpoint = client.audit.checkpoint()
    assert checkpoint.tree_size >= every[-1].seq
    assert len(checkpoint.root_hash) == 64
    proof = client.audit.inclusion_proof(every[0].seq)
    assert proof.tree_size == checkpoint.tree_size and proof.hashes
    consistency = client.audit.consistency_proof(every[0].seq, to_size=checkpoint.tree_size)
    assert consistency.to_size == checkpoint.tree_size
    lines = list(client.audit.export(from_seq=every[0].seq, to_seq=every[-1].seq))
    assert len(lines) == every[-1].seq - every[0].seq + 1
    assert json.loads(lines[0])["mac"] == every[0].mac
