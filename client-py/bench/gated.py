"""The gated action from Python (what an adapter does per tool call), for docs/benchmarks.md.

    python client-py/bench/gated.py --addr 127.0.0.1:50051 --row gated-sync

Rows (each prints one JSON line):

- ``gated-sync``: 1 caller on ``Client``; one gated action is ``evaluate`` (with a cost)
  then ``record`` of its decision, timed as one.
- ``gated-async``: ``--tasks`` asyncio tasks on one ``AsyncClient``, the same gated action.
- ``evaluate-sync`` / ``evaluate-async``: the Evaluate alone, as ``arbiter bench --target
  evaluate`` sends it (1 micro-USD), with ``--tasks`` in flight on ``AsyncClient``.
- ``ping-sync`` / ``ping-async``: the empty ``Ping`` RPC through ``Client`` / ``AsyncClient``
  with ``--tasks`` in flight. The server does almost nothing for a Ping, so next to
  ``arbiter bench --target ping`` in the same run it isolates what the client adds.
- ``prepare``: no server at all: builds an Evaluate and a Record in Python and reads a
  canned answer back into a ``Decision`` and a ``RecordResult``; the Python facade's own
  cost per gated action.

The agent and tool are those of ``arbiter bench`` (bench-agent, bench_tool, 64 sessions),
so the rows are comparable with its ``mixed`` target (scripts/bench_python_gated.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any, Callable

import arbiter
from arbiter._types import Decision, RecordResult

# What one gated action asks and reports: a micro-dollar estimate, then the actual cost.
COST = "0.000002"
ACTUAL = "0.000001"


def percentile(sorted_ns: list[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[index] / 1e6


def report(row: str, tasks: int, latencies: list[int], seconds: float) -> None:
    latencies.sort()
    print(
        json.dumps(
            {
                "row": row,
                "tasks": tasks,
                "ok": len(latencies),
                "throughput": round(len(latencies) / seconds, 1),
                "p50_ms": round(percentile(latencies, 0.50), 3),
                "p99_ms": round(percentile(latencies, 0.99), 3),
            }
        ),
        flush=True,
    )


def gated_sync(client: arbiter.Client, n: int) -> None:
    d = client.evaluate(
        "bench-agent", tool="bench_tool", session_id=f"bench-{n % 64}", cost_usd=COST
    )
    assert d.allowed, d.reason
    client.record(d.decision_id, outcome="success", cost_usd=ACTUAL)


async def evaluate_async(client: arbiter.AsyncClient, n: int) -> None:
    d = await client.evaluate(
        "bench-agent", tool="bench_tool", session_id=f"bench-{n % 64}", cost_usd="0.000001"
    )
    assert d.allowed, d.reason


async def gated_async(client: arbiter.AsyncClient, n: int) -> None:
    d = await client.evaluate(
        "bench-agent", tool="bench_tool", session_id=f"bench-{n % 64}", cost_usd=COST
    )
    assert d.allowed, d.reason
    await client.record(d.decision_id, outcome="success", cost_usd=ACTUAL)


def run_sync(row: str, call: Callable[[int], None], warmup: float, duration: float) -> None:
    """One caller in a closed loop: the next call starts when the previous one returned."""
    latencies: list[int] = []
    start = time.monotonic() + warmup
    stop = start + duration
    n = 0
    while True:
        t0 = time.perf_counter_ns()
        call(n)
        t1 = time.perf_counter_ns()
        now = time.monotonic()
        if now >= stop:
            break
        if now >= start:
            latencies.append(t1 - t0)
        n += 1
    report(row, 1, latencies, duration)


async def run_async(
    row: str, call: Callable[[int], Any], tasks: int, warmup: float, duration: float
) -> None:
    """``tasks`` closed loops on one event loop (and one client)."""
    latencies: list[int] = []
    start = time.monotonic() + warmup
    stop = start + duration

    async def worker(w: int) -> None:
        n = w
        while True:
            t0 = time.perf_counter_ns()
            await call(n)
            t1 = time.perf_counter_ns()
            now = time.monotonic()
            if now >= stop:
                return
            if now >= start:
                latencies.append(t1 - t0)
            n += tasks

    await asyncio.gather(*(worker(w) for w in range(tasks)))
    report(row, tasks, latencies, duration)


# A canned answer shaped as the core returns it (value.rs): the `prepare` row reads it.
_DECISION = {
    "outcome": "allow",
    "reasons": [{"stage": "scope", "code": "ok", "message": "allowed", "passed": True}],
    "decision_id": "d-0123456789",
    "approval_id": None,
    "audit_seq": 42,
    "policy_version": "sha256:" + "0" * 64,
    "action_digest": "sha256:" + "1" * 64,
    "reservation_id": "r-0123456789",
    "reservation_expires_at": 1_796_000_000_000_000,
    "reserved": {"micro_usd": 2, "tokens": 0},
    "receipt": None,
    "replayed": False,
}
_RECORD = {
    "audit_seq": 43,
    "actual": {"micro_usd": 1, "tokens": 0},
    "reserved": {"micro_usd": 2, "tokens": 0},
    "overspend": False,
    "duplicate": False,
    "reservation_expired": False,
}


def run_prepare(iterations: int) -> None:
    """The facade's cost per gated action without I/O: build both requests (argument
    checks, money conversion, the core's request builders) and read both answers."""
    client = arbiter.Client("127.0.0.1:1")
    latencies: list[int] = []
    for n in range(iterations):
        t0 = time.perf_counter_ns()
        client._evaluate(
            "bench-agent", tool="bench_tool", session_id=f"bench-{n % 64}", cost_usd=COST
        )
        d = Decision._from(_DECISION)
        client._record(d.decision_id, outcome="success", cost_usd=ACTUAL)
        RecordResult._from(_RECORD)
        latencies.append(time.perf_counter_ns() - t0)
    report("prepare", 1, latencies[iterations // 10 :], 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument(
        "--row",
        choices=[
            "gated-sync",
            "gated-async",
            "evaluate-sync",
            "evaluate-async",
            "ping-sync",
            "ping-async",
            "prepare",
        ],
        required=True,
    )
    parser.add_argument("--tasks", type=int, default=1, help="calls in flight (async rows)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--iterations", type=int, default=50_000, help="for the prepare row")
    args = parser.parse_args()
    if args.row == "prepare":
        run_prepare(args.iterations)
    elif args.row == "gated-sync":
        client = arbiter.Client(args.addr)
        run_sync(args.row, lambda n: gated_sync(client, n), args.warmup, args.duration)
    elif args.row == "evaluate-sync":
        client = arbiter.Client(args.addr)

        def evaluate_sync(n: int) -> None:
            d = client.evaluate(
                "bench-agent", tool="bench_tool", session_id=f"bench-{n % 64}", cost_usd="0.000001"
            )
            assert d.allowed, d.reason

        run_sync(args.row, evaluate_sync, args.warmup, args.duration)
    elif args.row == "ping-sync":
        client = arbiter.Client(args.addr)
        run_sync(args.row, lambda n: client.ping(), args.warmup, args.duration)
    else:
        aclient = arbiter.AsyncClient(args.addr)

        def acall(n: int) -> Any:
            if args.row == "gated-async":
                return gated_async(aclient, n)
            if args.row == "evaluate-async":
                return evaluate_async(aclient, n)
            return aclient.ping()

        asyncio.run(run_async(args.row, acall, args.tasks, args.warmup, args.duration))


if __name__ == "__main__":
    main()
