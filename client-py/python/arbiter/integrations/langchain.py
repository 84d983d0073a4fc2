"""LangChain and LangGraph (``pip install arbiter[langchain]``).

- ``govern_tools(tools, client, agent_id=...)`` wraps LangChain tools (``@tool``,
  ``StructuredTool``, any ``BaseTool``) so each call is evaluated with its arguments bound
  and recorded after it runs: in LangGraph's ``ToolNode`` (sync or async) or through a
  direct ``tool.invoke``.
- A denial reaches the model as a ``ToolMessage`` with ``status="error"`` when the tool was
  called with a tool call (as ``ToolNode`` does), and raises ``arbiter.Denied`` when code
  invoked the tool with plain arguments. A halt raises ``arbiter.Halted``.
- PENDING_APPROVAL calls LangGraph's ``interrupt()``: the graph pauses (it needs a
  checkpointer and a ``thread_id``) and ``graph.invoke(Command(resume=...), config)``
  resumes it from its checkpoint. On resume the call is evaluated again with the approval:
  Arbiter's decision, not the resume value, decides whether the tool runs.
- ``ArbiterCallbackHandler`` evaluates each chat model call (model scope, budget) before it
  is sent and records its token usage when it ends.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Optional

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import BaseMessage, ToolCall, ToolMessage
from langchain_core.outputs import LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import ConfigDict

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

Pending = Literal["interrupt", "error"]


def govern_tools(
    tools: Sequence[BaseTool],
    arbiter_client: ArbiterClient,
    *,
    agent_id: str,
    session_id: Optional[str] = None,
    on_pending: Pending = "interrupt",
) -> list[BaseTool]:
    """The tools, each governed by Arbiter (see the module docstring). ``on_pending``
    "interrupt" pauses a LangGraph graph for the approval; "error" returns the pending
    approval to the model as a tool error instead (or raises ``ApprovalRequired`` when
    code invoked the tool directly)."""
    gate = Gate(arbiter_client, agent_id, session_id)
    return [GovernedTool.wrap(tool, gate, on_pending) for tool in tools]


class GovernedTool(BaseTool):
    """A LangChain tool whose every call goes through Arbiter first."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseTool
    gate: Any  # a Gate; Any keeps pydantic from copying it
    on_pending: Pending = "interrupt"

    @classmethod
    def wrap(cls, tool: BaseTool, gate: Gate, on_pending: Pending) -> GovernedTool:
        _registry.refuse_twice(tool)
        governed = cls(
            name=tool.name,
            description=tool.description,
            args_schema=tool.args_schema,
            return_direct=tool.return_direct,
            response_format=tool.response_format,
            inner=tool,
            gate=gate,
            on_pending=on_pending,
        )
        covers = (f"tool {tool.name}",)
        _registry.register(
            governed, _registry.Wrapped("langchain-tool", tool.name, gate.agent_id, covers)
        )
        return governed

    # BaseTool.run()/arun() land here with the parsed input: they take the same
    # governed path as invoke(), so no entry point of the tool runs it ungoverned.
    def _run(self, *args: Any, run_manager: Any = None, **kwargs: Any) -> Any:
        return self.invoke(_run_input(args, kwargs))

    async def _arun(self, *args: Any, run_manager: Any = None, **kwargs: Any) -> Any:
        return await self.ainvoke(_run_input(args, kwargs))

    def invoke(
        self,
        input: str | dict[str, Any] | ToolCall,
        config: Optional[RunnableConfig] = None,
        **kwargs: Any,
    ) -> Any:
        arguments, call_id = self._call(input)
        decision = self._decide(arguments, self._request_id(call_id, config))
        refused = self._refusal(decision, call_id)
        if refused is not None:
            return refused
        call = self.gate.tool_call(decision, self.name)
        try:
            out = self.inner.invoke(input, config, **kwargs)
        except Exception as error:
            call.finish(None, error)
            raise
        call.finish()
        return out

    async def ainvoke(
        self,
        input: str | dict[str, Any] | ToolCall,
        config: Optional[RunnableConfig] = None,
        **kwargs: Any,
    ) -> Any:
        arguments, call_id = self._call(input)
        decision = await self._adecide(arguments, self._request_id(call_id, config))
        refused = self._refusal(decision, call_id)
        if refused is not None:
            return refused
        call = self.gate.tool_call(decision, self.name)
        try:
            out = await self.inner.ainvoke(input, config, **kwargs)
        except Exception as error:
            await call.afinish(None, error)
            raise
        await call.afinish()
        return out

    def _call(self, input: Any) -> tuple[dict[str, Any], Optional[str]]:
        """The model-visible arguments (not what ToolNode injects) and the call id."""
        if isinstance(input, Mapping) and input.get("type") == "tool_call":
            args, call_id = dict(input.get("args") or {}), input.get("id")
        elif isinstance(input, Mapping):
            args, call_id = dict(input), None
        else:
            args, call_id = {"input": input}, None
        visible = _visible_fields(self.inner)
        if visible is not None:
            args = {k: v for k, v in args.items() if k in visible}
        return args, None if call_id is None else str(call_id)

    def _first(self, arguments: dict[str, Any], request_id: Optional[str]) -> Any:
        return self.gate.tool_op(self.name, arguments, request_id=request_id)

    def _request_id(
        self, call_id: Optional[str], config: Optional[RunnableConfig]
    ) -> Optional[str]:
        """A graph re-runs the whole node on resume; the same request id replays the first
        answer (the same pending approval) instead of asking a second time. Models reuse
        call ids across conversations, so the id is scoped to the agent, session and
        graph thread."""
        if call_id is None:
            return None
        configurable = (config or _current_config()).get("configurable") or {}
        scope = [
            self.gate.agent_id,
            self.gate.session_id or "",
            str(configurable.get("thread_id", "")),
            str(configurable.get("checkpoint_ns", "")),
            call_id,
        ]
        return "langchain:" + hashlib.sha256("\x00".join(scope).encode()).hexdigest()[:40]

    def _decide(self, arguments: dict[str, Any], request_id: Optional[str]) -> Decision:
        decision: Decision = self._first(arguments, request_id).wait()
        while decision.pending and self._pause(decision, arguments):
            op = self.gate.tool_op(self.name, arguments, approval_id=decision.approval_id)
            decision = op.wait()
        return decision

    async def _adecide(self, arguments: dict[str, Any], request_id: Optional[str]) -> Decision:
        decision: Decision = await self._first(arguments, request_id).future()
        while decision.pending and self._pause(decision, arguments):
            op = self.gate.tool_op(self.name, arguments, approval_id=decision.approval_id)
            decision = await op.future()
        return decision

    def _pause(self, decision: Decision, arguments: dict[str, Any]) -> bool:
        """Pause the graph for the approval; False when there is no graph to pause (the
        pending call is then refused like a denial)."""
        if self.on_pending != "interrupt" or not _in_graph():
            return False
        from langgraph.types import interrupt

        # Returns only when the graph is resumed; the resume value is deliberately unused.
        interrupt(
            {
                "arbiter_approval_id": decision.approval_id,
                "tool": self.name,
                "arguments": arguments,
                "reason": denial_text(decision),
            }
        )
        return True

    def _refusal(self, decision: Decision, call_id: Optional[str]) -> Optional[ToolMessage]:
        if decision.allowed:
            return None
        if decision.halted or call_id is None:
            decision.raise_for_outcome()
        return ToolMessage(
            content=denial_text(decision),
            tool_call_id=call_id,
            name=self.name,
            status="error",
        )


def _in_graph() -> bool:
    """True inside a LangGraph node (where ``interrupt()`` can pause)."""
    configurable = _current_config().get("configurable") or {}
    return any(str(key).startswith("__pregel_") for key in configurable)


def _current_config() -> Mapping[str, Any]:
    try:
        from langchain_core.runnables.config import var_child_runnable_config

        return var_child_runnable_config.get() or {}
    except ImportError:
        return {}


def _visible_fields(tool: BaseTool) -> Optional[set[str]]:
    try:
        schema = tool.tool_call_schema
        if isinstance(schema, dict):
            properties = schema.get("properties")
            return set(properties) if isinstance(properties, dict) else None
        fields = getattr(schema, "model_fields", None) or getattr(schema, "__fields__", None)
        return set(fields) if isinstance(fields, dict) else None
    except Exception:
        # A schema that cannot be read: bind every argument given (the safe side).
        return None


class _Metering:
    """What both callback handlers share: which model a call uses, and its open calls."""

    def __init__(
        self,
        arbiter_client: ArbiterClient,
        *,
        agent_id: str,
        session_id: Optional[str] = None,
        model: Optional[str] = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self._gate = Gate(arbiter_client, agent_id, session_id)
        self._model = model
        self._max_tokens = max_tokens
        self._calls: dict[uuid.UUID, Call] = {}
        name = type(self).__name__
        covers = ("chat model calls",)
        _registry.register(self, _registry.Wrapped("langchain-callback", name, agent_id, covers))

    def _plan(self, prompt: Any, kwargs: Mapping[str, Any]) -> tuple[str, Usage]:
        """The model and the estimate (input tokens, output cap) of one call."""
        params = kwargs.get("invocation_params") or {}
        metadata = kwargs.get("metadata") or {}
        model = params.get("model") or params.get("model_name") or metadata.get("ls_model_name")
        model = model or self._model
        if not isinstance(model, str):
            raise ValueError(f"{type(self).__name__}: the model names no model; pass model=")
        cap = params.get("max_completion_tokens") or params.get("max_tokens")
        cap = cap or metadata.get("ls_max_tokens") or self._max_tokens
        return model, Usage(estimate_tokens(prompt), int(cap))


def _prompt(messages: list[list[BaseMessage]]) -> Any:
    return [[m.content for m in turn] for turn in messages]


class ArbiterCallbackHandler(_Metering, BaseCallbackHandler):
    """Evaluate each LLM call of a LangChain model before it is sent, record its usage
    after. Pass it in ``callbacks=[...]`` of the model or of the run. The model name and
    output cap come from the model's invocation parameters (``model``/``model_name``,
    ``max_tokens``/``max_completion_tokens``), else ``model`` and ``max_tokens`` here.
    A denial raises ``arbiter.Denied`` out of the model call (``raise_error`` is set, so
    LangChain does not swallow it). For async runs use ``AsyncArbiterCallbackHandler``
    (this one would block the event loop while it asks Arbiter). Do not also wrap the
    same model's SDK client with ``wrap_openai``: each call would be counted twice."""

    raise_error = True
    run_inline = True

    def _start(self, run_id: uuid.UUID, prompt: Any, kwargs: Mapping[str, Any]) -> None:
        model, estimate = self._plan(prompt, kwargs)
        op = self._gate.llm_op(model, estimate.output_tokens, estimate.input_tokens)
        self._calls[run_id] = self._gate.llm_call(op.wait(), model, estimate)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: uuid.UUID,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, _prompt(messages), kwargs)

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: uuid.UUID, **kwargs: Any
    ) -> None:
        self._start(run_id, prompts, kwargs)

    def on_llm_end(self, response: LLMResult, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        call = self._calls.pop(run_id, None)
        if call is not None:
            call.finish(_usage(response))

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        call = self._calls.pop(run_id, None)
        if call is not None:
            call.finish(None, error)


class AsyncArbiterCallbackHandler(_Metering, AsyncCallbackHandler):
    """``ArbiterCallbackHandler`` for async runs (``ainvoke``, ``astream``): the same
    evaluate before and record after, awaited on the run's event loop."""

    raise_error = True
    run_inline = True

    async def _start(self, run_id: uuid.UUID, prompt: Any, kwargs: Mapping[str, Any]) -> None:
        model, estimate = self._plan(prompt, kwargs)
        op = self._gate.llm_op(model, estimate.output_tokens, estimate.input_tokens)
        self._calls[run_id] = self._gate.llm_call(await op.future(), model, estimate)

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: uuid.UUID,
        **kwargs: Any,
    ) -> None:
        await self._start(run_id, _prompt(messages), kwargs)

    async def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: uuid.UUID, **kwargs: Any
    ) -> None:
        await self._start(run_id, prompts, kwargs)

    async def on_llm_end(self, response: LLMResult, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        call = self._calls.pop(run_id, None)
        if call is not None:
            await call.afinish(_usage(response))

    async def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        call = self._calls.pop(run_id, None)
        if call is not None:
            await call.afinish(None, error)


def _usage(response: LLMResult) -> Optional[Usage]:
    inputs = outputs = 0
    found = False
    for generations in response.generations:
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage:
                inputs += int(usage.get("input_tokens", 0))
                outputs += int(usage.get("output_tokens", 0))
                found = True
    if found:
        return Usage(inputs, outputs)
    token_usage = (response.llm_output or {}).get("token_usage") or {}
    if "prompt_tokens" in token_usage and "completion_tokens" in token_usage:
        return Usage(int(token_usage["prompt_tokens"]), int(token_usage["completion_tokens"]))
    return None


__all__ = [
    "ArbiterCallbackHandler",
    "AsyncArbiterCallbackHandler",
    "GovernedTool",
    "govern_tools",
]


def _run_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | dict[str, Any]:
    """The tool input that BaseTool.run() parsed, back in the form invoke() takes."""
    if len(args) == 1 and not kwargs and isinstance(args[0], str):
        return args[0]
    if args:
        raise TypeError(f"{len(args)} positional tool arguments; pass them by name")
    return dict(kwargs)
