"""A local HTTP server that speaks the providers' wire formats, for the adapter tests.

It serves OpenAI ``/v1/chat/completions`` and ``/v1/responses`` and Anthropic
``/v1/messages``, plain JSON or SSE streams, from a script of replies (text or tool
calls, each with the usage to report), and counts every request it receives. The real
SDKs talk to it with ``base_url=fake.url``; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional


@dataclass
class Reply:
    """One scripted model turn: ``text``, or a call of ``tool`` with ``arguments``."""

    text: str = "ok"
    tool: Optional[str] = None
    arguments: dict[str, Any] = field(default_factory=dict)
    input_tokens: int = 1200
    output_tokens: int = 300
    status: int = 200
    """Anything but 200 answers with that status and an error body."""
    on_request: Optional[Callable[[], None]] = None
    """Called while the request is in flight (e.g. to read the budget's reservation)."""


class FakeProvider:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies = list(replies)
            self.requests = []

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def next_reply(self, path: str, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append((path, body))
            return self.replies.pop(0) if self.replies else Reply()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(fake: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            path = self.path.split("?")[0]
            reply = fake.next_reply(path, body)
            if reply.on_request is not None:
                reply.on_request()
            if reply.status != 200:
                self._json(reply.status, {"error": {"message": "scripted failure"}})
                return
            make = {
                "/v1/chat/completions": (_chat, _chat_events),
                "/v1/responses": (_response, _response_events),
                "/v1/messages": (_message, _message_events),
            }.get(path)
            if make is None:
                self._json(404, {"error": {"message": f"no route {path}"}})
            elif body.get("stream"):
                self._sse(make[1](body, reply))
            else:
                self._json(200, make[0](body, reply))

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _sse(self, events: Iterator[tuple[Optional[str], Any]]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            try:
                for name, data in events:
                    text = data if isinstance(data, str) else json.dumps(data)
                    head = f"event: {name}\n" if name else ""
                    self.wfile.write(f"{head}data: {text}\n\n".encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # The client stopped reading early: that is what some tests do.
            self.close_connection = True

    return Handler


def _pieces(text: str) -> list[str]:
    """The text in streamed pieces that join back to exactly the text."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + words[-1:]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


# OpenAI chat completions.


def _chat_message(reply: Reply) -> dict[str, Any]:
    if reply.tool is None:
        return {"role": "assistant", "content": reply.text}
    call = {
        "id": _id("call"),
        "type": "function",
        "function": {"name": reply.tool, "arguments": json.dumps(reply.arguments)},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _chat_usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }


def _chat(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    return {
        "id": _id("chatcmpl"),
        "object": "chat.completion",
        "created": 1,
        "model": body.get("model", "?"),
        "choices": [
            {
                "index": 0,
                "message": _chat_message(reply),
                "finish_reason": "stop" if reply.tool is None else "tool_calls",
            }
        ],
        "usage": _chat_usage(reply),
    }


def _chat_events(body: dict[str, Any], reply: Reply) -> Iterator[tuple[Optional[str], Any]]:
    base = {"id": _id("chatcmpl"), "object": "chat.completion.chunk", "created": 1}
    base["model"] = body.get("model", "?")
    for piece in _pieces(reply.text):
        delta = {"role": "assistant", "content": piece}
        yield None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if (body.get("stream_options") or {}).get("include_usage"):
        yield None, {**base, "choices": [], "usage": _chat_usage(reply)}
    yield None, "[DONE]"


# OpenAI responses.


def _response(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    if reply.tool is None:
        item: dict[str, Any] = {
            "type": "message",
            "id": _id("msg"),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
        }
    else:
        item = {
            "type": "function_call",
            "id": _id("fc"),
            "call_id": _id("call"),
            "name": reply.tool,
            "arguments": json.dumps(reply.arguments),
            "status": "completed",
        }
    return {
        "id": _id("resp"),
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": body.get("model", "?"),
        "output": [item],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _response_events(body: dict[str, Any], reply: Reply) -> Iterator[tuple[Optional[str], Any]]:
    done = _response(body, reply)
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    yield (
        "response.created",
        {"type": "response.created", "sequence_number": 0, "response": started},
    )
    seq = 1
    for piece in _pieces(reply.text):
        yield (
            "response.output_text.delta",
            {
                "type": "response.output_text.delta",
                "sequence_number": seq,
                "item_id": done["output"][0]["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            },
        )
        seq += 1
    yield (
        "response.completed",
        {"type": "response.completed", "sequence_number": seq, "response": done},
    )


# Anthropic messages.


def _message(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    if reply.tool is None:
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}]
    else:
        content = [
            {"type": "tool_use", "id": _id("toolu"), "name": reply.tool, "input": reply.arguments}
        ]
    return {
        "id": _id("msg"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "?"),
        "content": content,
        "stop_reason": "end_turn" if reply.tool is None else "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
    }


def _message_events(body: dict[str, Any], reply: Reply) -> Iterator[tuple[Optional[str], Any]]:
    done = _message(body, reply)
    start = {**done, "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": reply.input_tokens, "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    yield "content_block_start", block
    for piece in _pieces(reply.text):
        delta = {"type": "text_delta", "text": piece}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens},
        },
    )
    yield "message_stop", {"type": "message_stop"}
