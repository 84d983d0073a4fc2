"""Traces across the gateway: every `tools/call` is a span in the MCP client's trace (its
W3C context from `_meta`, SEP-414, or from the HTTP header), and Arbiter's RPC spans for
the call and the upstream's request are its children. Real server, real gateway, the
Python SDK as client, exported over OTLP/gRPC to a real receiver (`otlp.py`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import otlp
from conftest import POLICY, mcp_client, running_stack, stop

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def exporting(endpoint: str) -> dict[str, str]:
    # A long schedule delay: spans arrive only through the flush at shutdown.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "600000"}


async def calls(url: str, key: str, carrier: str) -> list[Any]:
    """read_file (allowed) then delete_repo (denied), in the client's trace."""
    steps = [("read_file", {"path": "/srv/t.txt"}), ("delete_repo", {"name": "x"})]
    if carrier == "header":
        headers = {"traceparent": f"00-{TRACE}-{CLIENT_SPAN}-01"}
        async with mcp_client(url, key, "legacy", headers) as c:
            return [await c.call_tool(t, a) for t, a in steps]
    # The SDK injects the current span's context into each request's `_meta`.
    ctx = SpanContext(int(TRACE, 16), int(CLIENT_SPAN, 16), is_remote=True, trace_flags=TraceFlags(1))
    async with mcp_client(url, key, "auto") as c:
        with trace.use_span(NonRecordingSpan(ctx)):
            return [await c.call_tool(t, a) for t, a in steps]


@pytest.mark.parametrize("carrier", ["meta", "header"])
def test_a_tools_call_is_a_span_of_the_clients_trace_and_the_parent_of_arbiters_spans(
    tmp_path: Path, carrier: str
) -> None:
    with otlp.receiver() as (endpoint, received):
        with running_stack(tmp_path, POLICY, env=exporting(endpoint)) as stack:
            gw = stack.gateway(env=exporting(endpoint))
            results = asyncio.run(calls(gw.url, stack.keys["bot-1"], carrier))
            upstream_calls = gw.calls()
            # Both flush their spans as they stop.
            stop(gw.proc)
            stop(stack.server)
        spans = received.in_trace(TRACE)

    assert not results[0].is_error and results[1].is_error
    names = [(svc, s.name) for svc, s in spans]

    def one(service: str, name: str, parent: bytes) -> Span:
        found = [s for svc, s in spans if svc == service and s.name == name and s.parent_span_id == parent]
        assert len(found) == 1, f"one {name!r} of {service} under {parent.hex()}: {names}"
        return found[0]

    client = bytes.fromhex(CLIENT_SPAN)
    allowed = one("arbiter-mcp-gateway", "tools/call read_file", client)
    assert allowed.kind == Span.SPAN_KIND_SERVER
    assert otlp.attr(allowed, "gen_ai.tool.name") == "read_file"
    assert otlp.attr(allowed, "mcp.method.name") == "tools/call"
    assert otlp.attr(allowed, "arbiter.agent_id") == "bot-1"
    assert otlp.attr(allowed, "arbiter.decision") == "allow"
    for rpc in ["ReportTools", "Evaluate", "Record"]:
        one("arbiter", f"arbiter.v1.DecisionService/{rpc}", allowed.span_id)

    denied = one("arbiter-mcp-gateway", "tools/call delete_repo", client)
    assert otlp.attr(denied, "arbiter.decision") == "deny"
    one("arbiter", "arbiter.v1.DecisionService/Evaluate", denied.span_id)
    assert not [s for svc, s in spans if s.name.endswith("/Record") and s.parent_span_id == denied.span_id]

    # The upstream was asked inside the allowed call's span (SEP-414 `_meta`).
    assert [c["tool"] for c in upstream_calls] == ["read_file"]
    assert upstream_calls[0]["traceparent"] == f"00-{TRACE}-{allowed.span_id.hex()}-01"


def test_a_malformed_traceparent_starts_a_new_trace_and_changes_nothing_else(tmp_path: Path) -> None:
    with otlp.receiver() as (endpoint, received):
        with running_stack(tmp_path, POLICY, env=exporting(endpoint)) as stack:
            gw = stack.gateway(env=exporting(endpoint))

            async def run() -> Any:
                headers = {"traceparent": "00-not-a-trace-01"}
                async with mcp_client(gw.url, stack.keys["bot-1"], "legacy", headers) as c:
                    return await c.call_tool("read_file", {"path": "/srv/t.txt"})

            result = asyncio.run(run())
            upstream_calls = gw.calls()
            stop(gw.proc)
            stop(stack.server)
        with received.lock:
            spans = list(received.spans)

    assert not result.is_error
    call = [s for svc, s in spans if s.name == "tools/call read_file"]
    assert len(call) == 1 and call[0].parent_span_id == b"", "a root span of its own trace"
    evaluate = [s for _, s in spans if s.name.endswith("/Evaluate")]
    assert [s.parent_span_id for s in evaluate] == [call[0].span_id]
    assert upstream_calls[0]["traceparent"].split("-")[1] == call[0].trace_id.hex()
