"""The gate every adapter shares: evaluate before an LLM call or tool, record after it.

An adapter turns its framework's call into a ``_Gate.llm`` or ``_Gate.tool`` evaluate and
gets back a ``Call`` that records exactly once (success with usage, or failure). Either
client works for either kind of framework: the prepared ``_Op`` can be waited on
(blocking, for sync SDKs) or awaited (for async SDKs), whichever the SDK needs.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from arbiter._client import AsyncClient, Client, _Op
from arbiter._types import ActionOutcome, Decision, RecordResult

logger = logging.getLogger("arbiter.integrations")

ArbiterClient = Union[Client, AsyncClient]

DEFAULT_MAX_TOKENS = 4096
"""Output tokens reserved for a call that names no cap of its own (and sent as its cap)."""

CHARS_PER_TOKEN = 4
"""How the input estimate counts: one token per four characters of the request's JSON,
rounded up. Real usage replaces the estimate when the call is recorded."""


def estimate_tokens(*parts: Any) -> int:
    """A conservative-enough input token estimate for the reservation (never 0)."""
    text = json.dumps(parts, default=str, ensure_ascii=False, separators=(",", ":"))
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class Usage:
    """Tokens an LLM call used, as the provider reported them."""

    input_tokens: int
    output_tokens: int


@dataclass
class Call:
    """One allowed action between its evaluate and its record. ``finish*`` records once."""

    client: ArbiterClient
    decision: Decision
    what: str
    model: Optional[str] = None
    estimate: Optional[Usage] = None
    started: float = field(default_factory=time.monotonic)
    recorded: Optional[RecordResult] = None
    _done: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _op(
        self,
        usage: Optional[Usage],
        error: Optional[BaseException],
        metadata: Optional[Mapping[str, str]],
    ) -> Optional[_Op[RecordResult]]:
        with self._lock:
            if self._done:
                return None
            self._done = True
        meta = dict(metadata or {})
        outcome: ActionOutcome = "success"
        if error is not None:
            outcome = "failure"
            meta.setdefault("error", type(error).__name__)
        if usage is None and error is None and self.estimate is not None:
            # The provider reported nothing: charge what was reserved rather than nothing.
            usage = self.estimate
            meta["usage"] = "estimated"
        tokens: dict[str, Any] = {}
        if usage is not None:
            tokens = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
        return self.client._record(
            self.decision.decision_id,
            outcome=outcome,
            model=self.model,
            duration_ms=int((time.monotonic() - self.started) * 1000),
            metadata=meta,
            **tokens,
        )

    def finish(
        self,
        usage: Optional[Usage] = None,
        error: Optional[BaseException] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Record (blocking). A failed record is logged: the action has happened."""
        op = self._op(usage, error, metadata)
        if op is None:
            return
        try:
            self.recorded = op.wait()
        except Exception as e:
            logger.warning("recording %s failed: %s", self.what, e)

    async def afinish(
        self,
        usage: Optional[Usage] = None,
        error: Optional[BaseException] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Record (awaited)."""
        op = self._op(usage, error, metadata)
        if op is None:
            return
        try:
            self.recorded = await op.future()
        except Exception as e:
            logger.warning("recording %s failed: %s", self.what, e)


@dataclass(frozen=True)
class Gate:
    """Who acts (agent, session) and the evaluate fields every call of an adapter adds."""

    client: ArbiterClient
    agent_id: str
    session_id: Optional[str] = None
    budget: Optional[str] = None
    category: Optional[str] = None
    context: Optional[Mapping[str, str]] = None
    wait_for_approval: Optional[float] = None
    """Seconds an LLM call that needs a human waits for one (None: raise at once)."""

    def _fields(self) -> dict[str, Any]:
        return dict(
            session_id=self.session_id,
            budget=self.budget,
            category=self.category,
            context=self.context,
        )

    def llm_op(self, model: str, max_tokens: int, input_tokens: int) -> _Op[Decision]:
        """The evaluate of an LLM call: the model is checked against the agent's
        ``models`` and the price table prices ``input_tokens`` in, ``max_tokens`` out."""
        return self.client._evaluate(
            self.agent_id, model=model, max_tokens=max_tokens, tokens=input_tokens, **self._fields()
        )

    def llm_decide(self, model: str, max_tokens: int, input_tokens: int) -> Decision:
        """The decision of an LLM call (blocking), waiting for an approval if asked to."""
        decision = self.llm_op(model, max_tokens, input_tokens).wait()
        if decision.pending and self.wait_for_approval is not None and decision.approval_id:
            self.client._wait_for_approval(decision.approval_id, self.wait_for_approval).wait()
            decision = self._llm_again(model, max_tokens, input_tokens, decision).wait()
        return decision

    async def allm_decide(self, model: str, max_tokens: int, input_tokens: int) -> Decision:
        """The decision of an LLM call (awaited), waiting for an approval if asked to."""
        decision = await self.llm_op(model, max_tokens, input_tokens).future()
        if decision.pending and self.wait_for_approval is not None and decision.approval_id:
            wait = self.client._wait_for_approval(decision.approval_id, self.wait_for_approval)
            await wait.future()
            decision = await self._llm_again(model, max_tokens, input_tokens, decision).future()
        return decision

    def _llm_again(
        self, model: str, max_tokens: int, input_tokens: int, pending: Decision
    ) -> _Op[Decision]:
        # The approval is bound to the action: the same model, cap and estimate.
        return self.client._evaluate(
            self.agent_id,
            model=model,
            max_tokens=max_tokens,
            tokens=input_tokens,
            approval_id=pending.approval_id,
            **self._fields(),
        )

    def tool_op(
        self,
        tool: str,
        arguments: Optional[Mapping[str, Any]],
        *,
        approval_id: Optional[str] = None,
        request_id: Optional[str] = None,
    ) -> _Op[Decision]:
        """The evaluate of a tool call with its arguments bound."""
        return self.client._evaluate(
            self.agent_id,
            tool=tool,
            arguments=arguments,
            approval_id=approval_id,
            request_id=request_id,
            **self._fields(),
        )

    def llm_call(self, decision: Decision, model: str, estimate: Usage) -> Call:
        """Raise for anything but ALLOW; otherwise the call to record."""
        decision.raise_for_outcome()
        return Call(self.client, decision, f"{self.agent_id}/{model}", model, estimate)

    def tool_call(self, decision: Decision, tool: str) -> Call:
        return Call(self.client, decision, f"{self.agent_id}/{tool}")


def denial_text(decision: Decision) -> str:
    """What a model reads when Arbiter refused its tool call."""
    reason = decision.reason
    why = f"{reason.code}: {reason.message}" if reason is not None else decision.outcome
    if decision.pending:
        return f"Arbiter: this call needs a human approval ({decision.approval_id}); {why}"
    return f"Arbiter denied this call ({why})"
