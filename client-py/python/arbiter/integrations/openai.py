"""``wrap_openai``: every ``chat.completions`` and ``responses`` call of an ``openai.OpenAI``
or ``openai.AsyncOpenAI`` client (or any OpenAI-compatible endpoint it points at) is
evaluated with its model and output cap before it is sent, and recorded with the usage the
response reports. Needs ``pip install arbiter[openai]`` only to build the client: the
wrapper itself reads the SDK's objects by attribute."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, TypeVar, Union

from arbiter._client import _approval_wait
from arbiter.integrations import _registry
from arbiter.integrations._gate import (
    DEFAULT_MAX_TOKENS,
    ArbiterClient,
    Gate,
    Usage,
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
    "chat.completions.create",
    "chat.completions.parse",
    "responses.create",
    "responses.parse",
)
"""The governed calls (also under ``client.beta``). ``chat.completions.stream``,
``responses.stream`` and ``responses.connect`` raise ``NotCovered``, and the
``with_raw_response`` / ``with_streaming_response`` namespaces of these resources refuse
every attribute; everything else (embeddings, images, audio, files...) is not an LLM call
Arbiter prices and passes through untouched."""


def wrap_openai(
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
    """Put ``client`` under Arbiter and return it (the same object, still typed as the
    SDK's client). A call that names no output cap gets ``max_tokens`` as its cap, so the
    reservation bounds what the call can spend. Copies made with ``with_options()`` or
    ``copy()`` are governed as well. Either Arbiter client works with either SDK client.

    With ``wait_for_approval`` (True for 60 s, or seconds) a call that a policy rule sends
    to a human waits for the approval and is then sent; without it such a call raises
    ``arbiter.ApprovalRequired``."""
    _registry.refuse_twice(client)
    wait = _approval_wait(wait_for_approval)
    gate = Gate(arbiter_client, agent_id, session_id, budget, category, context, wait)
    _govern(client, gate, max_tokens)
    return client


def _govern(client: Any, gate: Gate, max_tokens: int) -> None:
    # The beta namespace has its own resource objects for the same calls.
    for owner in (client, getattr(client, "beta", None)):
        chat = getattr(owner, "chat", None)
        completions = getattr(chat, "completions", None)
        if completions is not None:
            _govern_chat(completions, gate, max_tokens)
        responses = getattr(owner, "responses", None)
        if responses is not None and hasattr(responses, "create"):
            _govern_responses(responses, gate, max_tokens)
    for name in ("copy", "with_options"):
        _govern_copies(client, name, gate, max_tokens)
    _registry.register(
        client, _registry.Wrapped("openai", type(client).__name__, gate.agent_id, COVERS)
    )


def _govern_chat(completions: Any, gate: Gate, max_tokens: int) -> None:
    for name in ("create", "parse"):
        if hasattr(completions, name):
            wrap_method(completions, name, gate, _chat_plan(max_tokens), _chat_usage)
    refuse_method(completions, "stream", "chat.completions.create(stream=True)")
    refuse_namespaces(completions, "chat.completions.create")


def _govern_responses(responses: Any, gate: Gate, max_tokens: int) -> None:
    for name in ("create", "parse"):
        if hasattr(responses, name):
            wrap_method(responses, name, gate, _responses_plan(max_tokens), _responses_usage)
    refuse_method(responses, "stream", "responses.create(stream=True)")
    refuse_method(responses, "connect", "responses.create")
    refuse_namespaces(responses, "responses.create")


def _govern_copies(client: Any, name: str, gate: Gate, max_tokens: int) -> None:
    original = getattr(client, name, None)
    if original is None:
        return

    def governed_copy(*args: Any, **kwargs: Any) -> Any:
        copied = original(*args, **kwargs)
        _govern(copied, gate, max_tokens)
        return copied

    setattr(client, name, governed_copy)


def _chat_plan(default_cap: int) -> Any:
    def plan(kwargs: Mapping[str, Any]) -> Plan:
        model = required_model(kwargs, "chat.completions.create")
        out = dict(kwargs)
        cap = given_int(kwargs, "max_completion_tokens", "max_tokens")
        if cap is None:
            cap = default_cap
            out["max_completion_tokens"] = cap
        stream = kwargs.get("stream") is True
        hide = False
        if stream:
            options = kwargs.get("stream_options")
            options = dict(options) if isinstance(options, Mapping) else {}
            if options.get("include_usage") is not True:
                # Usage comes only in a final chunk the caller did not ask for: ask for it,
                # and keep that chunk from the caller, whose loop may not expect it.
                options["include_usage"] = True
                out["stream_options"] = options
                hide = True
        return Plan(
            model=model,
            max_tokens=cap,
            input_tokens=estimate_tokens(kwargs.get("messages"), kwargs.get("tools")),
            kwargs=out,
            stream=stream,
            meter=lambda: _ChatMeter(hide),
        )

    return plan


def _chat_usage(response: Any) -> Optional[Usage]:
    return usage_of(response, "prompt_tokens", "completion_tokens")


class _ChatMeter:
    def __init__(self, hide_usage_chunk: bool) -> None:
        self._hide = hide_usage_chunk
        self.usage: Optional[Usage] = None

    def feed(self, chunk: Any) -> bool:
        found = _chat_usage(chunk)
        if found is None:
            return False
        self.usage = found
        return self._hide and not getattr(chunk, "choices", None)


def _responses_plan(default_cap: int) -> Any:
    def plan(kwargs: Mapping[str, Any]) -> Plan:
        model = required_model(kwargs, "responses.create")
        out = dict(kwargs)
        cap = given_int(kwargs, "max_output_tokens")
        if cap is None:
            cap = default_cap
            out["max_output_tokens"] = cap
        return Plan(
            model=model,
            max_tokens=cap,
            input_tokens=estimate_tokens(
                kwargs.get("instructions"), kwargs.get("input"), kwargs.get("tools")
            ),
            kwargs=out,
            stream=kwargs.get("stream") is True,
            meter=_ResponsesMeter,
        )

    return plan


def _responses_usage(response: Any) -> Optional[Usage]:
    return usage_of(response, "input_tokens", "output_tokens")


class _ResponsesMeter:
    """Usage arrives with the terminal event (completed, incomplete or failed)."""

    def __init__(self) -> None:
        self.usage: Optional[Usage] = None

    def feed(self, event: Any) -> bool:
        response = getattr(event, "response", None)
        if response is not None:
            found = _responses_usage(response)
            if found is not None:
                self.usage = found
        return False
