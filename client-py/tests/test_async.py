"""AsyncClient: the same methods, awaitable, with many calls in flight at once."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time

import pytest

import arbiter

from .conftest import Server, free_port


def test_every_async_method_answers_like_the_sync_one(server: Server, agent: str) -> None:
    async def main() -> None:
        async with server.async_client() as a:
            d = await a.evaluate(agent, tool="read_invoice", cost_usd="0.01")
            assert d.allowed and d.reserved_micro_usd == 10_000
            r = await a.record(d.decision_id, cost_usd="0.005")
            assert r.actual_micro_usd == 5_000
            assert (await a.evaluate(agent, tool="wire_money")).denied
            pending = await a.evaluate(agent, tool="refund_x")
            assert pending.pending and pending.approval_id is not None
            assert (await a.get_approval(pending.approval_id)).state == "pending"
            page = await a.list_approvals(agent_id=agent)
            assert len(page.approvals) == 1
            approval = await a.approve(pending.approval_id, reason="dev mode")
            assert approval.state == "granted"
            granted = await a.wait_for_approval(pending.approval_id, timeout=5)
            assert granted.state == "granted"
            other = await a.evaluate(agent, tool="refund_y")
            assert other.approval_id is not None
            await a.deny(other.approval_id, reason="no")
            with pytest.raises(arbiter.ApprovalDenied):
                await a.wait_for_approval(other.approval_id, timeout=5)

            halt = await a.halt(agent, mode="halt_noncritical", reason="pause")
            assert halt.mode == "halt_noncritical"
            assert (await a.evaluate(agent, tool="t")).halted
            # An agent halt stops even critical actions (only global halts spare them).
            assert (await a.evaluate(agent, tool="escalate")).halted
            assert any(h.agent_id == agent for h in await a.list_halts())
            assert (await a.heartbeat(agent)).halted
            await a.resume(agent, reason="go")

            assert (await a.set_trust(agent, "L4_ACT_REPORT")).level == 4
            assert (await a.get_trust(agent)).effective_level == arbiter.TrustLevel.L4_ACT_REPORT
            assert len(await a.list_trust(agent)) == 1
            grant = await a.grant_consent(agent, "user_email")
            assert grant.purpose is None
            assert len(await a.list_consents(agent)) == 1
            assert await a.revoke_consent(agent, "user_email") > 0
            assert await a.filter_tools(agent, ["a", "admin_b"]) == ["a"]
            assert any(b.name == "cap" for b in await a.budget(agent))
            assert any(x.agent_id == agent for x in await a.list_agents())
            assert (await a.get_policy()).agent_rules == 1
            await a.ping()

            entries = (await a.audit.query(agent_id=agent)).entries
            assert entries and all(e.agent_id == agent for e in entries)
            every = [e async for e in a.audit.entries(agent_id=agent)]
            assert [e.seq for e in every] == [e.seq for e in entries]
            verified = await a.audit.verify()
            assert verified.ok and verified.first_bad_seq is None
            checkpoint = await a.audit.checkpoint()
            proof = await a.audit.inclusion_proof(d.audit_seq)
            assert proof.leaf_index == d.audit_seq - 1
            assert proof.tree_size == checkpoint.tree_size
            consistency = await a.audit.consistency_proof(1)
            assert consistency.from_size == 1
            lines = [line async for line in a.audit.export(from_seq=1, to_seq=3)]
            assert [json.loads(line)["entry"]["seq"] for line in lines] == [1, 2, 3]

    asyncio.run(main())


def test_hundreds_of_concurrent_evaluates_on_one_client(server: Server, agent: str) -> None:
    async def main() -> list[arbiter.Decision]:
        a = server.async_client()
        return await asyncio.gather(
            *(a.evaluate(f"{agent}-{i % 10}", tool="t", session_id=f"s-{i}") for i in range(300))
        )

    decisions = asyncio.run(main())
    assert len(decisions) == 300
    assert all(d.allowed for d in decisions)
    assert len({d.decision_id for d in decisions}) == 300
    assert len({d.audit_seq for d in decisions}) == 300


def test_the_event_loop_keeps_running_while_calls_wait(server: Server, agent: str) -> None:
    async def main() -> int:
        a = server.async_client()
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.gather(*(a.evaluate(agent, tool="t") for _ in range(50)))
        stop.set()
        await task
        return ticks

    assert asyncio.run(main()) > 1


def test_async_guard_records_and_fails_closed(server: Server, agent: str) -> None:
    async def main() -> None:
        a = server.async_client()
        async with a.guard(agent, tool="t", cost_usd=1) as g:
            g.report(cost_usd="0.5")
        assert g.recorded is not None and g.recorded.actual_micro_usd == 500_000
        with pytest.raises(arbiter.Denied):
            async with a.guard(agent, tool="wire_money"):
                pytest.fail("ran while denied")

        @a.governed(agent)
        async def summarize() -> str:
            return "done"

        assert await summarize() == "done"

        down = arbiter.AsyncClient(f"127.0.0.1:{free_port()}", retries=0, timeout=2)
        with pytest.raises(arbiter.Unavailable):
            async with down.guard(agent, tool="t"):
                pytest.fail("ran while Arbiter was down")

    asyncio.run(main())


def test_cancelling_an_await_cancels_the_wait(server: Server, agent: str) -> None:
    async def main() -> float:
        a = server.async_client()
        d = await a.evaluate(agent, tool="refund_slow")
        assert d.approval_id is not None
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(a.wait_for_approval(d.approval_id, timeout=30), 0.3)
        return time.monotonic() - started

    assert asyncio.run(main()) < 5


def test_async_tail_yields_new_entries(server: Server, agent: str) -> None:
    async def main() -> list[arbiter.AuditEntry]:
        a = server.async_client()
        for i in range(3):
            await a.evaluate(agent, tool=f"t{i}")
        first = (await a.audit.query(agent_id=agent)).entries[0].seq
        async with a.audit.tail(agent_id=agent, from_seq=first, limit=3) as tail:
            return [e async for e in tail]

    entries = asyncio.run(main())
    assert [e.kind for e in entries] == ["evaluate"] * 3
    assert entries[0].seq < entries[1].seq < entries[2].seq


class _LoopWithoutReaders(asyncio.SelectorEventLoop):
    """A loop that cannot watch a file descriptor, as Windows' proactor loop."""

    def add_reader(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError


async def _gated_actions(a: arbiter.AsyncClient, agent: str, n: int) -> list[arbiter.RecordResult]:
    """``n`` gated actions at once: evaluate, then record what it cost."""

    async def one(i: int) -> arbiter.RecordResult:
        d = await a.evaluate(agent, tool="t", session_id=f"s-{i}", cost_usd="0.01")
        assert d.allowed
        return await a.record(d.decision_id, cost_usd="0.005")

    return await asyncio.gather(*(one(i) for i in range(n)))


def test_results_reach_a_loop_that_cannot_watch_sockets(server: Server, agent: str) -> None:
    async def main() -> None:
        a = server.async_client()
        await a.ping()
        recorded = await _gated_actions(a, agent, 40)
        assert len(recorded) == 40
        with pytest.raises(arbiter.InvalidArgument):
            await a.evaluate("", tool="t")

    loop = _LoopWithoutReaders()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_one_client_serves_each_new_event_loop_and_loops_in_threads(
    server: Server, agent: str
) -> None:
    a = server.async_client()
    # A new loop per asyncio.run, as pytest-asyncio and scripts make them.
    for _ in range(3):
        assert len(asyncio.run(_gated_actions(a, agent, 20))) == 20

    results: list[int] = []
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            results.append(len(asyncio.run(_gated_actions(a, agent, 30))))
        except BaseException as error:  # the assertion below names it
            errors.append(error)

    threads = [threading.Thread(target=in_thread) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [30, 30, 30]


def test_an_error_and_a_cancellation_leave_the_loop_serving(server: Server, agent: str) -> None:
    async def main() -> None:
        a = server.async_client()
        d = await a.evaluate(agent, tool="refund_slow")
        assert d.approval_id is not None
        waiting = asyncio.ensure_future(a.wait_for_approval(d.approval_id, timeout=30))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        with pytest.raises(arbiter.InvalidArgument):
            await a.evaluate("", tool="t")
        assert len(await _gated_actions(a, agent, 10)) == 10

    asyncio.run(main())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_closed_event_loops_leave_no_descriptors_behind(server: Server, agent: str) -> None:
    a = server.async_client()

    def descriptors() -> int:
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    asyncio.run(a.ping())
    before = descriptors()
    # A loop per run, as pytest-asyncio makes one per test, each kept referenced after
    # it is closed: its wake-up sockets close with the loop, not when the loop is freed.
    closed: list[asyncio.AbstractEventLoop] = []
    for _ in range(50):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(a.ping())
        loop.close()
        closed.append(loop)
    assert descriptors() - before <= 4
