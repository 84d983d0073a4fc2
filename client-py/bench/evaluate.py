"""Closed-loop Evaluate round trips from Python, for docs/benchmarks.md.

    python client-py/bench/evaluate.py --addr 127.0.0.1:50051 --mode sync --concurrency 1

Same request as `arbiter bench --target evaluate` (agent bench-agent, tool bench_tool,
1 micro-USD, 64 sessions), so the two are comparable in one run (scripts/bench_python.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time

import arbiter


def percentile(sorted_ns: list[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[index] / 1e6


def report(mode: str, concurrency: int, latencies: list[int], seconds: float) -> None:
    latencies.sort()
    print(
        json.dumps(
            {
                "client": f"python-{mode}",
                "concurrency": concurrency,
                "throughput": round(len(latencies) / seconds, 1),
                "p50_ms": round(percentile(latencies, 0.50), 3),
                "p99_ms": round(percentile(latencies, 0.99), 3),
            }
        )
    )


def run_sync(addr: str, concurrency: int, warmup: float, duration: float) -> None:
    client = arbiter.Client(addr)
    latencies: list[int] = []
    lock = threading.Lock()
    start = time.monotonic() + warmup
    stop = start + duration

    def worker(w: int) -> None:
        n = 0
        mine: list[int] = []
        while True:
            t0 = time.perf_counter_ns()
            d = client.evaluate(
                "bench-agent", tool="bench_tool", session_id=f"bench-{n % 64}", cost_usd=0.000001
            )
            t1 = time.perf_counter_ns()
            assert d.allowed, d.reason
            now = time.monotonic()
            if now >= stop:
                break
            if now >= start:
                mine.append(t1 - t0)
            n += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report("sync", concurrency, latencies, duration)


async def run_async(addr: str, concurrency: int, warmup: float, duration: float) -> None:
    client = arbiter.AsyncClient(addr)
    latencies: list[int] = []
    start = time.monotonic() + warmup
    stop = start + duration

    async def worker(w: int) -> None:
        n = 0
        while True:
            t0 = time.perf_counter_ns()
            d = await client.evaluate(
                "bench-agent", tool="bench_tool", session_id=f"bench-{n % 64}", cost_usd=0.000001
            )
            t1 = time.perf_counter_ns()
            assert d.allowed, d.reason
            now = time.monotonic()
            if now >= stop:
                return
            if now >= start:
                latencies.append(t1 - t0)
            n += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    report("async", concurrency, latencies, duration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    if args.mode == "sync":
        run_sync(args.addr, args.concurrency, args.warmup, args.duration)
    else:
        asyncio.run(run_async(args.addr, args.concurrency, args.warmup, args.duration))


if __name__ == "__main__":
    main()
