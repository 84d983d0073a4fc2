"""A real OTLP/gRPC trace receiver for the tests: the collector's own TraceService
(opentelemetry-proto's generated service on grpcio) on a loopback port, keeping every
span it is sent with the `service.name` of its resource. The same approach as the
server's trace test (tests/e2e/traces.rs), in Python."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass
class Received:
    """(service.name, span) for every span exported to the receiver."""

    spans: list[tuple[str, Span]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def in_trace(self, trace_id: str) -> list[tuple[str, Span]]:
        wanted = bytes.fromhex(trace_id)
        with self.lock:
            return [(svc, s) for svc, s in self.spans if s.trace_id == wanted]


class _Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request: Any, context: Any) -> Any:
        with self.received.lock:
            for rs in request.resource_spans:
                service = next(
                    (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), ""
                )
                for ss in rs.scope_spans:
                    self.received.spans.extend((service, s) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def receiver() -> Iterator[tuple[str, Received]]:
    """A running receiver: its endpoint (for OTEL_EXPORTER_OTLP_ENDPOINT) and what it got."""
    received = Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Service(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(grace=None)


def attr(span: Span, key: str) -> str | None:
    for kv in span.attributes:
        if kv.key == key:
            return str(kv.value.string_value or kv.value.int_value or "")
    return None
