"""The MCP gateway's overhead: the same forwarded `tools/call` to the same Streamable HTTP
upstream (upstream.py), once directly and once through `arbiter mcp-gateway` (which adds
an Evaluate and a Record on the real server), in the same run, batches interleaved.

    ARBITER_BIN=target/release/arbiter python tests/mcp/bench_gateway.py [CALLS]

Prints the median and 90th percentile per path. Measures, never asserts (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import POLICY, Stack, first_line, mcp_client, stop


async def timed_calls(client: Client, n: int) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        await client.call_tool("read_file", {"path": f"f{i}"})
        out.append(time.perf_counter() - started)
    return out


async def measure(direct_url: str, gateway_url: str, key: str, n: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"direct": [], "gateway": []}
    http = httpx2.AsyncClient(timeout=60)
    async with (
        http,
        Client(streamable_http_client(direct_url, http_client=http), mode="legacy") as direct,
        mcp_client(gateway_url, key) as gateway,
    ):
        await timed_calls(direct, 20)  # warm-up, not counted
        await timed_calls(gateway, 20)
        for _ in range(5):
            results["direct"] += await timed_calls(direct, n // 5)
            results["gateway"] += await timed_calls(gateway, n // 5)
    return results


def main() -> None:
    import os
    import subprocess

    from conftest import ARBITER

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    tmp = Path(tempfile.mkdtemp())
    (tmp / "policy.yaml").write_text(POLICY, encoding="utf-8")
    server = subprocess.Popen(
        [
            *[ARBITER, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp / "data")],
            *["--policy", str(tmp / "policy.yaml"), "--metrics-listen", "off", "--console-listen", "off"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    stack = Stack(tmp=tmp, server=server, addr="http://" + first_line(server).rsplit(" ", 1)[-1])
    try:
        stack.keys["admin"] = ""
        stack.keys["admin"] = stack.cli(
            "principals", "create", "root", "--role", "admin", key=""
        ).stdout.strip()
        stack.keys["bot-1"] = stack.cli(
            "principals", "create", "bot", "--role", "agent", "--agent", "bot-1"
        ).stdout.strip()
        port = stack.http_upstream("calls.jsonl")
        url = f"http://127.0.0.1:{port}/mcp"
        gw = stack.gateway(upstreams=f"  - name: remote\n    http: {{url: '{url}'}}\n")
        results = asyncio.run(measure(url, gw.url, stack.keys["bot-1"], n))
        for name, xs in results.items():
            xs.sort()
            p90 = xs[int(len(xs) * 0.9)]
            print(f"{name:8} n={len(xs)} median={statistics.median(xs) * 1e3:.2f} ms p90={p90 * 1e3:.2f} ms")
        print(f"binary: {ARBITER}; load average: {os.getloadavg()[0]:.1f}")
    finally:
        for p in stack.procs:
            stop(p)
        stop(server)


if __name__ == "__main__":
    main()
