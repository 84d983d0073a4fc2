"""What the adapters have wrapped, for ``check()``: held weakly, so it never keeps a client
or tool alive."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_lock = threading.Lock()
# Keyed by identity, not equality: tools are often unhashable (pydantic models,
# dataclasses), and two equal tools are still two objects to govern. Each entry holds a
# weak reference that removes it when its object goes away, so an id is never reused
# for another object.
_wrapped: dict[int, tuple[weakref.ref[Any], Wrapped]] = {}


@dataclass(frozen=True)
class Wrapped:
    """One wrapped client or tool."""

    kind: str
    """"openai", "anthropic", "agents-tool", "langchain-tool", "langchain-callback"."""
    name: str
    """The client's class or the tool's name."""
    agent_id: str
    covers: tuple[str, ...]
    """The calls that go through Arbiter (e.g. "chat.completions.create")."""

    def __str__(self) -> str:
        return f"{self.kind} {self.name} (agent {self.agent_id}): {', '.join(self.covers)}"


def register(obj: Any, entry: Wrapped) -> None:
    key = id(obj)

    def forget(_: weakref.ref[Any]) -> None:
        with _lock:
            current = _wrapped.get(key)
            if current is not None and current[0]() is None:
                del _wrapped[key]

    with _lock:
        _wrapped[key] = (weakref.ref(obj, forget), entry)


def refuse_twice(obj: Any) -> None:
    """Wrapping twice would evaluate and record every call twice: refuse it."""
    found = lookup(obj)
    if found is not None:
        raise ValueError(f"already governed: {found}; wrap each client or tool once")


def lookup(obj: Any) -> Wrapped | None:
    with _lock:
        found = _wrapped.get(id(obj))
    if found is None or found[0]() is not obj:
        return None
    return found[1]


def live() -> list[Wrapped]:
    with _lock:
        return [entry for ref, entry in _wrapped.values() if ref() is not None]


def members(obj: Any) -> Iterable[Any]:
    """The tools inside a container check() was given (an agent, a list of tools)."""
    if isinstance(obj, (list, tuple, set)):
        return obj
    tools = getattr(obj, "tools", None)
    if isinstance(tools, (list, tuple)) and lookup(obj) is None:
        return tools
    return [obj]
