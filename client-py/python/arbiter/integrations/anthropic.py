"""Anthropic: ``wrap_anthropic`` governs every ``messages.create`` of an
``anthropic.Anthropic`` or ``anthropic.AsyncAnthropic`` client, and ``AnthropicTools``
runs the ``tool_use`` blocks of a response through Arbiter and returns the
``tool_result`` blocks to send back (``pip install arbiter[anthropic]``)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any, Callable, Optional, TypeVar, Union

from arbiter._arbiter import ApprovalDenied, ApprovalTimeout
from arbiter._client import _approval_wait
from arbiter._types import Decision
from arbiter.integrations import _registry
from arbiter.integrations._gate import (
    DEFAULT_MAX_TOKENS,
    ArbiterClient,
    Call,
    Gate,
    Usage,
    denial_text,
    estimate_tokens,
)
from arbiter.integrations._llm import (
    Plan,
    given_int,
    refuse_method,
    refuse_namespaces,
    required_model,
    usage_of,
    wrap_method,
)

C = TypeVar("C")

COVERS = (
    "messages.create",
    "messages.parse",
    "messages.stream",
    "beta.messages.create",
    "beta.messages.parse",
    "beta.messages.stream",
)
"""The governed calls. ``beta.messages.tool_runner`` and ``messages.batches.create`` raise
``NotCovered``; ``count_tokens`` and the rest pass through (they spend no tokens)."""

_CACHE_INPUTS = ("cache_creation_input_tokens", "cache_read_input_tokens")


def wrap_anthropic(
    client: C,
    arbiter_client: ArbiterClient,
    *,
    agent_id: str,
    session_id: Optional[str] = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    budget: Optional[str] = None,
    category: Optional[str] = None,
    context: Optional[Mapping[str, str]] = None,
    wait_for_approval: Union[bool, float] = False,
) -> C:
    """Put ``client`` under Arbiter and return it (the same object). ``max_tokens`` is only
    used when a call names none (the Messages API requires one). Copies made with
    ``with_options()`` or ``copy()`` are governed as well.

    With ``wait_for_approval`` (True for 60 s, or seconds) a call that a policy rule sends
    to a human waits for the approval and is then sent; without it such a call raises
    ``arbiter.ApprovalRequired``."""
    _registry.refuse_twice(client)
    wait = _approval_wait(wait_for_approval)
    gate = Gate(arbiter_client, agent_id, session_id, budget, category, context, wait)
    _govern(client, gate, max_tokens)
    return client


def _govern(client: Any, gate: Gate, max_tokens: int) -> None:
    for owner in (client, getattr(client, "beta", None)):
        messages = getattr(owner, "messages", None)
        if messages is None or not hasattr(messages, "create"):
            continue
        for name in ("create", "parse"):
            if hasattr(messages, name):
                wrap_method(messages, name, gate, _plan(max_tokens), _usage)
        if hasattr(messages, "stream"):
            _wrap_stream(messages, gate, max_tokens)
        refuse_method(messages, "tool_runner", "messages.create and AnthropicTools")
        refuse_namespaces(messages, "messages.create")
        batches = getattr(messages, "batches", None)
        if batches is not None:
            refuse_method(batches, "create", "messages.create")
    for name in ("copy", "with_options"):
        original = getattr(client, name, None)
        if original is not None:
            setattr(client, name, _governed_copy(original, gate, max_tokens))
    _registry.register(
        client, _registry.Wrapped("anthropic", type(client).__name__, gate.agent_id, COVERS)
    )


def _governed_copy(original: Callable[..., Any], gate: Gate, max_tokens: int) -> Any:
    def governed_copy(*args: Any, **kwargs: Any) -> Any:
        copied = original(*args, **kwargs)
        _govern(copied, gate, max_tokens)
        return copied

    return governed_copy


def _plan(default_cap: int) -> Any:
    def plan(kwargs: Mapping[str, Any]) -> Plan:
        model = required_model(kwargs, "messages.create")
        out = dict(kwargs)
        cap = given_int(kwargs, "max_tokens")
        if cap is None:
            cap = default_cap
            out["max_tokens"] = cap
        return Plan(
            model=model,
            max_tokens=cap,
            input_tokens=estimate_tokens(
                kwargs.get("system"), kwargs.get("messages"), kwargs.get("tools")
            ),
            kwargs=out,
            stream=kwargs.get("stream") is True,
            meter=_Meter,
        )

    return plan


def _wrap_stream(messages: Any, gate: Gate, default_cap: int) -> None:
    original = messages.stream
    plan = _plan(default_cap)

    def stream(*args: Any, **kwargs: Any) -> Any:
        p = plan(kwargs)
        return _StreamManager(original(*args, **p.kwargs), gate, p)

    messages.stream = stream


class _StreamManager:
    """``messages.stream(...)``: the SDK sends the request when the ``with`` block is
    entered, so the evaluate happens there; the record happens when the block is left,
    with the usage of the SDK's own message snapshot."""

    def __init__(self, inner: Any, gate: Gate, plan: Plan) -> None:
        self._inner = inner
        self._gate = gate
        self._plan = plan
        self._call: Optional[Call] = None
        self._stream: Any = None

    def _begin(self, decision: Decision) -> Call:
        estimate = Usage(self._plan.input_tokens, self._plan.max_tokens)
        return self._gate.llm_call(decision, self._plan.model, estimate)

    def _op(self) -> Any:
        return self._gate.llm_op(self._plan.model, self._plan.max_tokens, self._plan.input_tokens)

    def __enter__(self) -> Any:
        call = self._call = self._begin(self._op().wait())
        try:
            self._stream = self._inner.__enter__()
        except BaseException as error:
            call.finish(None, error)
            raise
        return self._stream

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        try:
            self._inner.__exit__(exc_type, exc, tb)
        finally:
            if self._call is not None:
                self._call.finish(_snapshot_usage(self._stream), exc)

    async def __aenter__(self) -> Any:
        call = self._call = self._begin(await self._op().future())
        try:
            self._stream = await self._inner.__aenter__()
        except BaseException as error:
            await call.afinish(None, error)
            raise
        return self._stream

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        finally:
            if self._call is not None:
                await self._call.afinish(_snapshot_usage(self._stream), exc)


def _snapshot_usage(stream: Any) -> Optional[Usage]:
    """The usage of a finished stream; None for one left early (the worst case is then
    charged), since its snapshot counts only what had arrived."""
    try:
        snapshot = stream.current_message_snapshot
    except (AssertionError, AttributeError):
        return None
    if getattr(snapshot, "stop_reason", None) is None:
        return None
    return _usage(snapshot)


def _usage(message: Any) -> Optional[Usage]:
    # Cached input is still input: it is charged at the input price (a ceiling).
    return usage_of(message, "input_tokens", "output_tokens", *_CACHE_INPUTS)


class _Meter:
    """``message_start`` carries the input tokens, each ``message_delta`` the output so far."""

    def __init__(self) -> None:
        self._input: Optional[int] = None
        self._output: Optional[int] = None

    @property
    def usage(self) -> Optional[Usage]:
        if self._input is None or self._output is None:
            return None
        return Usage(self._input, self._output)

    def feed(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            found = _usage(getattr(event, "message", None))
            if found is not None:
                self._input, self._output = found.input_tokens, found.output_tokens
        elif kind == "message_delta":
            usage = getattr(event, "usage", None)
            outputs = getattr(usage, "output_tokens", None)
            if isinstance(outputs, int):
                self._output = outputs
            inputs = getattr(usage, "input_tokens", None)
            if isinstance(inputs, int):
                cached = sum(getattr(usage, n, None) or 0 for n in _CACHE_INPUTS)
                self._input = inputs + cached
        return False


Tool = Callable[..., Any]


class AnthropicTools:
    """Run the ``tool_use`` blocks of a Messages API response through Arbiter.

    ``run(message)`` (or ``await arun(message)``) evaluates each ``tool_use`` block with
    the tool's name and its ``input`` bound as the arguments, runs the allowed ones,
    records each outcome, and returns the ``tool_result`` blocks for the next user turn.
    A denial, a pending approval, an unknown tool or a tool that raised becomes a
    ``tool_result`` with ``is_error: true`` and a text the model can read. A halt
    raises ``arbiter.Halted``: the loop must stop, not tell the model.

    ``wait_for_approval`` (True for 60 s, or seconds) waits for an operator on a
    pending call and runs it once granted."""

    def __init__(
        self,
        arbiter_client: ArbiterClient,
        tools: Mapping[str, Tool],
        *,
        agent_id: str,
        session_id: Optional[str] = None,
        wait_for_approval: bool | float = False,
    ) -> None:
        self._gate = Gate(arbiter_client, agent_id, session_id)
        self._tools = dict(tools)
        self._wait = _approval_wait(wait_for_approval)
        covers = tuple(f"tool_use {name}" for name in self._tools)
        _registry.register(
            self, _registry.Wrapped("anthropic-tools", "AnthropicTools", agent_id, covers)
        )

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def run(self, message: Any) -> list[dict[str, Any]]:
        return [self._run_one(block) for block in _tool_uses(message)]

    async def arun(self, message: Any) -> list[dict[str, Any]]:
        return [await self._arun_one(block) for block in _tool_uses(message)]

    def _decide(self, name: str, arguments: dict[str, Any]) -> Decision:
        decision = self._gate.tool_op(name, arguments).wait()
        if decision.pending and self._wait is not None and decision.approval_id:
            try:
                self._gate.client._wait_for_approval(decision.approval_id, self._wait).wait()
            except (ApprovalDenied, ApprovalTimeout):
                return decision
            return self._gate.tool_op(name, arguments, approval_id=decision.approval_id).wait()
        return decision

    async def _adecide(self, name: str, arguments: dict[str, Any]) -> Decision:
        decision = await self._gate.tool_op(name, arguments).future()
        if decision.pending and self._wait is not None and decision.approval_id:
            wait = self._gate.client._wait_for_approval(decision.approval_id, self._wait)
            try:
                await wait.future()
            except (ApprovalDenied, ApprovalTimeout):
                return decision
            again = self._gate.tool_op(name, arguments, approval_id=decision.approval_id)
            return await again.future()
        return decision

    def _run_one(self, block: Any) -> dict[str, Any]:
        name, arguments, use_id = _block(block)
        tool = self._tools.get(name)
        if tool is None:
            return _result(use_id, f"unknown tool {name!r}", error=True)
        if inspect.iscoroutinefunction(tool):
            raise TypeError(f"tool {name!r} is async: use arun()")
        decision = self._decide(name, arguments)
        if not decision.allowed:
            return _refusal(decision, use_id)
        call = self._gate.tool_call(decision, name)
        try:
            value = tool(**arguments)
        except Exception as error:
            call.finish(None, error)
            return _result(use_id, f"{type(error).__name__}: {error}", error=True)
        call.finish()
        return _result(use_id, value)

    async def _arun_one(self, block: Any) -> dict[str, Any]:
        name, arguments, use_id = _block(block)
        tool = self._tools.get(name)
        if tool is None:
            return _result(use_id, f"unknown tool {name!r}", error=True)
        decision = await self._adecide(name, arguments)
        if not decision.allowed:
            return _refusal(decision, use_id)
        call = self._gate.tool_call(decision, name)
        try:
            value = tool(**arguments)
            if inspect.isawaitable(value):
                value = await value
        except Exception as error:
            await call.afinish(None, error)
            return _result(use_id, f"{type(error).__name__}: {error}", error=True)
        await call.afinish()
        return _result(use_id, value)


def _refusal(decision: Decision, use_id: str) -> dict[str, Any]:
    """A refused call as the model reads it; a halt is not the model's business."""
    if decision.halted:
        decision.raise_for_outcome()
    return _result(use_id, denial_text(decision), error=True)


def _field(block: Any, name: str) -> Any:
    return block.get(name) if isinstance(block, Mapping) else getattr(block, name, None)


def _tool_uses(message: Any) -> list[Any]:
    content = _field(message, "content") or []
    return [b for b in content if _field(b, "type") == "tool_use"]


def _block(block: Any) -> tuple[str, dict[str, Any], str]:
    arguments = _field(block, "input")
    return (
        str(_field(block, "name")),
        dict(arguments) if isinstance(arguments, Mapping) else {},
        str(_field(block, "id")),
    )


def _result(use_id: str, value: Any, *, error: bool = False) -> dict[str, Any]:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": use_id, "content": text}
    if error:
        block["is_error"] = True
    return block


__all__ = ["COVERS", "AnthropicTools", "wrap_anthropic"]
