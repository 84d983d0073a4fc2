"""What the adapters have wrapped, for ``check()``: held weakly, so it never keeps a client
or tool alive."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_lock = threading.Lock()
_wrapped: weakref.WeakKeyDictionary[Any, Wrapped] = weakref.WeakKeyDictionary()
_by_id: dict[int, Wrapped] = {}  # objects that cannot be weakly referenced


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
    with _lock:
        try:
            _wrapped[obj] = entry
        except TypeError:
            _by_id[id(obj)] = entry


def lookup(obj: Any) -> Wrapped | None:
    with _lock:
        try:
            found = _wrapped.get(obj)
        except TypeError:
            found = None
        return found if found is not None else _by_id.get(id(obj))


def live() -> list[Wrapped]:
    with _lock:
        return [*_wrapped.values(), *_by_id.values()]


def members(obj: Any) -> Iterable[Any]:
    """The tools inside a container check() was given (an agent, a list of tools)."""
    if isinstance(obj, (list, tuple, set)):
        return obj
    tools = getattr(obj, "tools", None)
    if isinstance(tools, (list, tuple)) and lookup(obj) is None:
        return tools
    return [obj]
