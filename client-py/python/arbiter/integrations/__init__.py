"""Framework adapters: one call puts an SDK client or a framework's tools under Arbiter.

    from arbiter.integrations import wrap_openai
    client = wrap_openai(openai.OpenAI(), arbiter.Client(), agent_id="support-bot")

- ``wrap_openai`` / ``wrap_anthropic`` (this module): LLM calls, budget and model scope.
- ``arbiter.integrations.anthropic.AnthropicTools``: ``tool_use`` blocks → ``tool_result``.
- ``arbiter.integrations.openai_agents``: OpenAI Agents SDK function tools.
- ``arbiter.integrations.langchain``: LangChain tools, LangGraph ``interrupt()``, and a
  callback handler for LLM usage.

Each framework is imported only by its own module, so ``import arbiter.integrations``
needs none of them. ``check()`` says what is governed. docs/integrations.md says what
each adapter covers and what it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arbiter.integrations import _registry
from arbiter.integrations._gate import DEFAULT_MAX_TOKENS, Usage, estimate_tokens
from arbiter.integrations._llm import NotCovered
from arbiter.integrations._registry import Wrapped
from arbiter.integrations.anthropic import AnthropicTools, wrap_anthropic
from arbiter.integrations.openai import wrap_openai


@dataclass(frozen=True)
class Coverage:
    """What ``check()`` found."""

    wrapped: list[Wrapped]
    """Every live client and tool an adapter governs."""
    unwrapped: list[str] = field(default_factory=list)
    """Descriptions of the objects given to ``check()`` that no adapter governs."""

    @property
    def ok(self) -> bool:
        """True when every object given to ``check()`` is governed."""
        return not self.unwrapped

    def __str__(self) -> str:
        lines = [f"governed: {w}" for w in self.wrapped]
        lines += [f"NOT governed: {u}" for u in self.unwrapped]
        return "\n".join(lines) or "nothing is governed"


def check(*objects: Any) -> Coverage:
    """Report what is governed: every client and tool wrapped so far (still alive), and,
    of ``objects`` (clients, tools, lists of tools, or an agent with ``.tools``), those that
    are not. ``assert check(client, agent).ok`` at start-up fails on a forgotten wrap."""
    unwrapped: list[str] = []
    for obj in objects:
        for member in _registry.members(obj):
            if _registry.lookup(member) is None:
                name = getattr(member, "name", None) or type(member).__name__
                unwrapped.append(f"{type(member).__name__} {name}")
    return Coverage(_registry.live(), unwrapped)


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "AnthropicTools",
    "Coverage",
    "NotCovered",
    "Usage",
    "Wrapped",
    "check",
    "estimate_tokens",
    "wrap_anthropic",
    "wrap_openai",
]
