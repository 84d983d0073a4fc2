"""OpenAI Agents SDK (``pip install arbiter[agents]``): function tools gated through the
SDK's own extension points.

``govern_tools(tools, client, agent_id=...)`` changes each ``FunctionTool`` in place:

- ``needs_approval`` asks Arbiter: a PENDING_APPROVAL becomes the SDK's human-in-the-loop
  interruption (``result.interruptions``), so the run pauses.
- a tool input guardrail decides before the tool runs: ALLOW runs it; DENY is
  ``reject_content`` (the model reads why and the run goes on); a halt is
  ``raise_exception`` (``ToolInputGuardrailTripwireTriggered``: the run stops).
- ``on_invoke_tool`` records the outcome after the function returns.

``await resolve_approvals(result, client)`` waits for an operator on each interruption
Arbiter raised and approves or rejects it in the run state; ``Runner.run(agent, state)``
then resumes. Approving in the SDK alone is not enough: on resume the call is evaluated
again with the approval, and only Arbiter's ALLOW runs it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Sequence
from typing import Any, Optional

from agents import FunctionTool, RunContextWrapper
from agents.tool_context import ToolContext
from agents.tool_guardrails import (
    ToolGuardrailFunctionOutput,
    ToolInputGuardrail,
    ToolInputGuardrailData,
)

from arbiter._arbiter import ApprovalDenied, ApprovalTimeout
from arbiter._client import DEFAULT_APPROVAL_WAIT
from arbiter._types import Decision
from arbiter.integrations import _registry
from arbiter.integrations._gate import ArbiterClient, Gate, denial_text


class _Decisions:
    """The decision of each tool call id, from ``needs_approval`` to ``on_invoke_tool``."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self._lock = threading.Lock()
        self._by_call: dict[str, Decision] = {}

    def get(self, call_id: str) -> Optional[Decision]:
        with self._lock:
            return self._by_call.get(call_id)

    def put(self, call_id: str, decision: Decision) -> None:
        with self._lock:
            self._by_call[call_id] = decision

    def pop(self, call_id: str) -> Optional[Decision]:
        with self._lock:
            return self._by_call.pop(call_id, None)

    def pending(self) -> dict[str, str]:
        """call id → approval id of the calls waiting for an operator."""
        with self._lock:
            return {
                c: d.approval_id for c, d in self._by_call.items() if d.pending and d.approval_id
            }

    def request_id(self, call_id: str) -> str:
        # The model's call ids are not unique across runs; scope them to who acts.
        scope = "\x00".join([self.gate.agent_id, self.gate.session_id or "", call_id])
        return "agents:" + hashlib.sha256(scope.encode()).hexdigest()[:40]

    async def evaluate(self, tool: str, arguments: dict[str, Any], call_id: str) -> Decision:
        earlier = self.get(call_id)
        if earlier is not None and earlier.allowed:
            return earlier
        if earlier is not None and earlier.pending:
            op = self.gate.tool_op(tool, arguments, approval_id=earlier.approval_id)
        else:
            op = self.gate.tool_op(tool, arguments, request_id=self.request_id(call_id))
        decision = await op.future()
        self.put(call_id, decision)
        return decision


# Every governed tool set (alive while its tools are), for resolve_approvals.
_all: weakref.WeakSet[_Decisions] = weakref.WeakSet()


def govern_tools(
    tools: Sequence[Any],
    arbiter_client: ArbiterClient,
    *,
    agent_id: str,
    session_id: Optional[str] = None,
) -> list[Any]:
    """Govern each ``FunctionTool`` of ``tools`` (in place; returned for convenience).
    Other tools (hosted tools, handoffs, MCP) are returned unchanged and ``check()``
    reports them as not governed."""
    decisions = _Decisions(Gate(arbiter_client, agent_id, session_id))
    _all.add(decisions)
    for tool in tools:
        if isinstance(tool, FunctionTool):
            _govern(tool, decisions)
    return list(tools)


def _govern(tool: FunctionTool, decisions: _Decisions) -> None:
    _registry.refuse_twice(tool)
    own_approval = tool.needs_approval
    original = tool.on_invoke_tool
    name = tool.name

    async def needs_approval(
        ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str
    ) -> bool:
        decision = await decisions.evaluate(name, dict(params), call_id)
        if decision.pending:
            return True
        if callable(own_approval):
            return bool(await own_approval(ctx, params, call_id))
        return bool(own_approval)

    async def guard(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        context = data.context
        decision = await decisions.evaluate(name, _arguments(context), context.tool_call_id)
        if decision.allowed:
            return ToolGuardrailFunctionOutput.allow(decision.decision_id)
        decisions.pop(context.tool_call_id)
        if decision.halted:
            return ToolGuardrailFunctionOutput.raise_exception(output_info=decision)
        return ToolGuardrailFunctionOutput.reject_content(denial_text(decision), decision)

    async def invoke(ctx: ToolContext[Any], arguments: str) -> Any:
        decision = decisions.pop(ctx.tool_call_id)
        if decision is None or not decision.allowed:
            # The guardrail did not run (or did not allow): never run the tool unasked.
            decision = await decisions.evaluate(name, _arguments(ctx), ctx.tool_call_id)
            decisions.pop(ctx.tool_call_id)
            if not decision.allowed:
                return denial_text(decision)
        call = decisions.gate.tool_call(decision, name)
        try:
            out = await original(ctx, arguments)
        except Exception as error:
            await call.afinish(None, error)
            raise
        await call.afinish()
        return out

    tool.needs_approval = needs_approval
    tool.tool_input_guardrails = [
        *(tool.tool_input_guardrails or []),
        ToolInputGuardrail(guardrail_function=guard, name="arbiter"),
    ]
    tool.on_invoke_tool = invoke
    covers = (f"function tool {name}",)
    _registry.register(
        tool, _registry.Wrapped("agents-tool", name, decisions.gate.agent_id, covers)
    )


def _arguments(context: ToolContext[Any]) -> dict[str, Any]:
    try:
        parsed = json.loads(context.tool_arguments or "{}")
    except json.JSONDecodeError:
        return {"_raw": context.tool_arguments}
    return parsed if isinstance(parsed, dict) else {"_value": parsed}


def _call_id(item: Any) -> Optional[str]:
    raw = getattr(item, "raw_item", None)
    found = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
    return None if found is None else str(found)


async def resolve_approvals(result: Any, *, timeout: float = DEFAULT_APPROVAL_WAIT) -> Any:
    """The run state to resume ``result`` with: each interruption Arbiter raised is
    approved in the state once an operator grants it in Arbiter, and rejected (with the
    reason, for the model) when it is denied or not decided within ``timeout`` seconds.
    Interruptions of the tool's own ``needs_approval`` are left for the caller."""
    state = result.to_state()
    pending = {c: (a, d.gate) for d in list(_all) for c, a in d.pending().items()}
    for item in result.interruptions:
        found = pending.get(_call_id(item) or "")
        if found is None:
            continue
        approval_id, gate = found
        try:
            await gate.client._wait_for_approval(approval_id, timeout).future()
        except (ApprovalDenied, ApprovalTimeout) as error:
            state.reject(item, rejection_message=f"Arbiter: {error}")
            continue
        state.approve(item)
    return state


__all__ = ["govern_tools", "resolve_approvals"]
