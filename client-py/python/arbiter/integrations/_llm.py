"""Wrapping one SDK method (``create``/``parse``) so each call is evaluated before any
request leaves the process and recorded after it. The provider modules say how to read a
call (``Plan``), a response (``read``) and a stream (``Meter``); this module does the rest,
the same way for sync and async SDKs."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from arbiter.integrations._gate import Gate, Usage
from arbiter.integrations._streams import AsyncRecordedStream, Meter, RecordedStream


class NotCovered(TypeError):
    """An SDK method the adapter cannot govern was called on a wrapped client. It is
    refused rather than run ungoverned; the message names the governed alternative."""


@dataclass
class Plan:
    """What the evaluate needs from one call, and the keyword arguments to send."""

    model: str
    max_tokens: int
    input_tokens: int
    kwargs: dict[str, Any]
    stream: bool
    meter: Optional[Callable[[], Meter]] = None


Planner = Callable[[Mapping[str, Any]], Plan]
Reader = Callable[[Any], Optional[Usage]]


def wrap_method(resource: Any, name: str, gate: Gate, plan: Planner, read: Reader) -> None:
    """Replace ``resource.name`` (on this instance only) with its governed version."""
    original = getattr(resource, name)
    # The SDKs decorate their async methods (argument checks) with sync wrappers.
    if inspect.iscoroutinefunction(inspect.unwrap(original)):
        setattr(resource, name, _async_method(original, gate, plan, read))
    else:
        setattr(resource, name, _sync_method(original, gate, plan, read))


def refuse_method(resource: Any, name: str, instead: str) -> None:
    """Make ``resource.name`` raise ``NotCovered`` instead of running ungoverned."""
    if not hasattr(resource, name):
        return
    kind = type(resource).__name__

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise NotCovered(f"{kind}.{name} is not governed by Arbiter; use {instead}")

    setattr(resource, name, refused)


class _RefusedNamespace:
    """Stands in for ``with_raw_response`` / ``with_streaming_response``: the SDK builds
    them from the unwrapped methods, so every attribute is refused. It is an
    AttributeError so that SDKs probing for it (the Agents SDK does) fall back to the
    governed ``create``."""

    def __init__(self, what: str, instead: str) -> None:
        self._what = what
        self._instead = instead

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{self._what}.{name} is not governed by Arbiter; use {self._instead}")


def refuse_namespaces(resource: Any, instead: str) -> None:
    """Refuse the raw and streaming-response namespaces of a wrapped resource."""
    kind = type(resource).__name__
    for name in ("with_raw_response", "with_streaming_response"):
        if hasattr(type(resource), name):
            setattr(resource, name, _RefusedNamespace(f"{kind}.{name}", instead))


def _sync_method(original: Callable[..., Any], gate: Gate, plan: Planner, read: Reader) -> Any:
    @functools.wraps(original)
    def governed(*args: Any, **kwargs: Any) -> Any:
        p = plan(kwargs)
        estimate = Usage(p.input_tokens, p.max_tokens)
        decision = gate.llm_decide(p.model, p.max_tokens, p.input_tokens)
        call = gate.llm_call(decision, p.model, estimate)
        try:
            result = original(*args, **p.kwargs)
        except BaseException as error:
            call.finish(None, error)
            raise
        if p.stream and p.meter is not None:
            return RecordedStream(result, call, p.meter())
        call.finish(read(result))
        return result

    return governed


def _async_method(original: Callable[..., Any], gate: Gate, plan: Planner, read: Reader) -> Any:
    @functools.wraps(original)
    async def governed(*args: Any, **kwargs: Any) -> Any:
        p = plan(kwargs)
        estimate = Usage(p.input_tokens, p.max_tokens)
        decision = await gate.allm_decide(p.model, p.max_tokens, p.input_tokens)
        call = gate.llm_call(decision, p.model, estimate)
        try:
            result = await original(*args, **p.kwargs)
        except BaseException as error:
            await call.afinish(None, error)
            raise
        if p.stream and p.meter is not None:
            return AsyncRecordedStream(result, call, p.meter())
        await call.afinish(read(result))
        return result

    return governed


def given_int(kwargs: Mapping[str, Any], *names: str) -> Optional[int]:
    """The first of ``names`` set to an int (the SDKs' ``omit``/``NOT_GIVEN`` are not)."""
    for name in names:
        value = kwargs.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def required_model(kwargs: Mapping[str, Any], method: str) -> str:
    model = kwargs.get("model")
    if not isinstance(model, str) or not model:
        # Without a model Arbiter can neither check the model scope nor price the call.
        raise NotCovered(f"{method}: a governed call must name model= (a string)")
    return model


def usage_of(obj: Any, input_name: str, output_name: str, *extra_input: str) -> Optional[Usage]:
    """Usage from an SDK object's ``usage`` field, or None when it has none."""
    usage = getattr(obj, "usage", None)
    if usage is None:
        return None
    inputs = getattr(usage, input_name, None)
    outputs = getattr(usage, output_name, None)
    if not isinstance(inputs, int) or not isinstance(outputs, int):
        return None
    for name in extra_input:
        more = getattr(usage, name, None)
        if isinstance(more, int):
            inputs += more
    return Usage(inputs, outputs)
