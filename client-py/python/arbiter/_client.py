"""``Client``, ``AsyncClient``, their audit namespaces, ``guard`` and ``governed``.

Every RPC is prepared once, in ``_Base``: arguments are checked and converted (money to
micro-USD, enums to wire values) and the Rust core returns a call that has not started.
``Client`` waits for it with the GIL released; ``AsyncClient`` awaits it on the running
event loop. The two classes therefore differ only in ``await``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Callable, Generic, Optional, TypeVar, Union, cast

from arbiter import _arbiter
from arbiter._money import Money, usd_to_micros
from arbiter._types import (
    ActionOutcome,
    Agent,
    Approval,
    ApprovalPage,
    ApprovalState,
    AuditEntry,
    AuditPage,
    Budget,
    Checkpoint,
    ConsentGrant,
    ConsistencyProof,
    Decision,
    DelegationToken,
    Halt,
    HaltMode,
    HeartbeatResult,
    InclusionProof,
    NewPrincipal,
    PolicyInfo,
    PolicyLoad,
    Presence,
    Principal,
    RecordResult,
    Role,
    TrustAssignment,
    TrustInfo,
    TrustLevel,
    VerifyResult,
    _error,
    _micros,
    _trust,
    _trust_to_wire,
)

logger = logging.getLogger("arbiter")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

Api = Union[str, "tuple[str, str]"]
"""An HTTP API call: ``("POST", "https://api.example.com/v1/x")`` or ``"POST https://..."``."""
DataAccess = Union[str, "tuple[str, Optional[str]]"]
"""A personal-data access: ``"user_email"`` or ``("user_email", "notifications")``."""
Pem = Union[str, bytes, "os.PathLike[str]"]
"""TLS material: a file path (``str`` or ``os.PathLike``), or the PEM text itself
(``bytes``, or a ``str`` that contains ``-----BEGIN``)."""
Token = Union[str, DelegationToken]
"""A delegation token: what ``delegate`` returned, or its ``.token`` text."""

DEFAULT_DELEGATION_TTL = 300.0
"""Seconds a token from ``delegate`` lives unless ``ttl`` says otherwise (at most 86 400)."""

DEFAULT_APPROVAL_WAIT = 60.0
"""Seconds ``guard(..., wait_for_approval=True)`` waits for a human."""

_OUTCOMES = {"success": 1, "failure": 2, "error": 3}
_MODES = {"halt_noncritical": 1, "halt_all": 2, "emergency": 3}
_STATES = {"pending": 1, "granted": 2, "denied": 3, "expired": 4, "consumed": 5}
_PRESENCES = {"live": 1, "idle": 2, "unresponsive": 3}
_ROLE_VALUES = {"agent": 1, "operator": 2, "admin": 3, "auditor": 4}


class _Op(Generic[T]):
    """A prepared call and how to read its result."""

    __slots__ = ("_parse", "_pending")

    def __init__(self, pending: _arbiter.Pending, parse: Callable[[Any], T]) -> None:
        self._pending = pending
        self._parse = parse

    def wait(self) -> T:
        return self._parse(self._pending.wait())

    async def future(self) -> T:
        return self._parse(await self._pending.future())


def _int(value: Any) -> int:
    return int(value)


def _strs(value: Any) -> list[str]:
    return [str(v) for v in value]


def _nothing(value: Any) -> None:
    return None


def _lookup(table: Mapping[str, int], value: str, what: str) -> int:
    try:
        return table[value.lower()]
    except KeyError:
        raise ValueError(f"{what}: expected one of {', '.join(table)}, got {value!r}") from None


def _api(api: Optional[Api]) -> Optional[tuple[str, str]]:
    if api is None:
        return None
    if isinstance(api, str):
        method, _, url = api.strip().partition(" ")
        if not url:
            raise ValueError(f"api: expected 'METHOD URL', got {api!r}")
        return (method.upper(), url.strip())
    method, url = api
    return (method.upper(), url)


def _data(data: Optional[Sequence[DataAccess]]) -> list[tuple[str, Optional[str]]]:
    if data is None:
        return []
    if isinstance(data, (str, tuple)):
        raise TypeError('data: expected a list, e.g. [("user_email", "notifications")]')
    out: list[tuple[str, Optional[str]]] = []
    for item in data:
        if isinstance(item, str):
            out.append((item, None))
        else:
            data_type, purpose = item
            out.append((data_type, purpose))
    return out


def _halt_target(agent_id: Optional[str], session_id: Optional[str]) -> tuple[int, str, str]:
    if session_id is not None:
        if agent_id is None:
            raise ValueError("session_id: a session halt also needs agent_id")
        return (3, agent_id, session_id)
    if agent_id is not None:
        return (2, agent_id, "")
    return (1, "", "")


def _pem(value: Optional[Pem], what: str) -> Optional[bytes]:
    """The PEM bytes of a TLS argument: read from a path, or taken as given."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and "-----BEGIN" in value:
        return value.encode()
    if isinstance(value, (str, os.PathLike)):
        try:
            with open(value, "rb") as f:
                return f.read()
        except OSError as error:
            raise ValueError(f"{what}: cannot read {os.fspath(value)!r}: {error}") from error
    raise TypeError(f"{what}: expected a file path or PEM bytes, got {type(value).__name__}")


def _token(value: Optional[Token]) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, DelegationToken):
        return value.token
    raise TypeError(
        f"delegation token: expected a DelegationToken or str, got {type(value).__name__}"
    )


def _ttl_seconds(ttl: Union[float, timedelta]) -> int:
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not math.isfinite(seconds) or seconds != int(seconds):
        raise ValueError(f"ttl: must be a whole number of seconds, got {ttl!r}")
    return int(seconds)


def _api_pattern(api: Api) -> str:
    method, url = _api(api) or ("", "")
    return f"{method} {url}"


def _non_negative(value: Optional[int], what: str) -> Optional[int]:
    if value is not None and value < 0:
        raise ValueError(f"{what}: must not be negative, got {value}")
    return value


def _min_trust(level: Union[TrustLevel, int, str, None]) -> Optional[int]:
    """``min_trust`` as the proto value the core sends; None leaves the policy's level."""
    return None if level is None else _trust_to_wire(TrustLevel.parse(level, "min_trust"))


def _wait_result(approval_id: str) -> Callable[[dict[str, Any]], Approval]:
    def parse(d: dict[str, Any]) -> Approval:
        last = None if d["approval"] is None else Approval._from(d["approval"])
        if d["timed_out"]:
            raise _error(
                _arbiter.ApprovalTimeout,
                "APPROVAL_TIMEOUT",
                f"approval {approval_id} was not decided in time",
                approval_id=approval_id,
                approval=last,
            )
        assert last is not None
        if last.state == "denied":
            why = f": {last.decision_reason}" if last.decision_reason else ""
            raise _error(
                _arbiter.ApprovalDenied,
                "APPROVAL_DENIED",
                f"approval {approval_id} was denied by {last.decided_by}{why}",
                approval_id=approval_id,
                approval=last,
            )
        if last.state == "expired":
            raise _error(
                _arbiter.ApprovalTimeout,
                "APPROVAL_TIMEOUT",
                f"approval {approval_id} expired before anyone decided",
                approval_id=approval_id,
                approval=last,
            )
        return last

    return parse


class _Base:
    """What ``Client`` and ``AsyncClient`` share: configuration and call preparation."""

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        api_key: Optional[str] = None,
        timeout: float = 5.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        circuit_breaker: bool = True,
        tls_ca: Optional[Pem] = None,
        tls_cert: Optional[Pem] = None,
        tls_key: Optional[Pem] = None,
        tls_domain: Optional[str] = None,
    ) -> None:
        self._core = _arbiter.Core(
            address,
            api_key=api_key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            breaker_threshold=5 if circuit_breaker else 0,
            tls_ca=_pem(tls_ca, "tls_ca"),
            tls_cert=_pem(tls_cert, "tls_cert"),
            tls_key=_pem(tls_key, "tls_key"),
            tls_domain=tls_domain,
        )

    @property
    def address(self) -> str:
        """The server address as given."""
        return self._core.endpoint

    @property
    def timeout(self) -> float:
        """Default deadline of one call in seconds, retries included."""
        return self._core.timeout

    @property
    def circuit_state(self) -> Optional[str]:
        """The circuit breaker: "closed", "open", "half_open"; None when disabled."""
        return self._core.circuit_state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"

    # Preparation of each call, shared by both clients.

    def _evaluate(
        self,
        agent_id: str,
        *,
        tool: Optional[str] = None,
        session_id: Optional[str] = None,
        api: Optional[Api] = None,
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        cost_usd: Optional[Money] = None,
        tokens: Optional[int] = None,
        budget: Optional[str] = None,
        category: Optional[str] = None,
        data: Optional[Sequence[DataAccess]] = None,
        min_trust: Union[TrustLevel, int, str, None] = None,
        approval_id: Optional[str] = None,
        delegation_token: Optional[Token] = None,
        context: Optional[Mapping[str, str]] = None,
        arguments: Optional[Mapping[str, Any]] = None,
        explain: bool = False,
        receipt: bool = False,
        request_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> _Op[Decision]:
        pending = self._core.evaluate(
            agent_id,
            session_id=session_id,
            tool=tool,
            api=_api(api),
            model=model,
            max_tokens=_non_negative(max_tokens, "max_tokens"),
            cost_micro_usd=None if cost_usd is None else usd_to_micros(cost_usd),
            tokens=_non_negative(tokens, "tokens"),
            data=_data(data),
            category=category,
            budget=budget,
            min_trust=_min_trust(min_trust),
            approval_id=approval_id,
            delegation_token=_token(delegation_token),
            context=dict(context or {}),
            arguments_json=_arguments_json(arguments),
            explain=explain,
            receipt=receipt,
            request_id=request_id,
            timeout=timeout,
        )
        return _Op(pending, Decision._from)

    def _record(
        self,
        decision_id: str,
        *,
        outcome: ActionOutcome = "success",
        model: Optional[str] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
        cost_usd: Optional[Money] = None,
        duration_ms: Optional[int] = None,
        output_digest: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> _Op[RecordResult]:
        pending = self._core.record(
            decision_id,
            outcome=_lookup(_OUTCOMES, outcome, "outcome"),
            model=model,
            input_tokens=_non_negative(input_tokens, "input_tokens"),
            output_tokens=_non_negative(output_tokens, "output_tokens"),
            cost_micro_usd=None if cost_usd is None else usd_to_micros(cost_usd),
            duration_ms=_non_negative(duration_ms, "duration_ms"),
            output_digest=output_digest,
            metadata=dict(metadata or {}),
            request_id=request_id,
            timeout=timeout,
        )
        return _Op(pending, RecordResult._from)

    def _delegate(
        self,
        parent_agent_id: str,
        subject_agent_id: str,
        tools: Sequence[str],
        apis: Sequence[Api],
        ttl: Union[float, timedelta],
        max_depth: int,
        parent_token: Optional[Token],
    ) -> _Op[DelegationToken]:
        if isinstance(tools, str):
            tools = [tools]
        if isinstance(apis, str):
            apis = [apis]
        pending = self._core.delegate(
            parent_agent_id,
            subject_agent_id,
            tools=list(tools),
            apis=[_api_pattern(a) for a in apis],
            ttl_seconds=_ttl_seconds(ttl),
            max_depth=max_depth,
            parent_token=_token(parent_token) or "",
        )
        return _Op(pending, DelegationToken._from)

    def _approve(self, approval_id: str, grant: bool, reason: str) -> _Op[Approval]:
        return _Op(self._core.approve(approval_id, grant, reason), Approval._from)

    def _wait_for_approval(self, approval_id: str, timeout: float) -> _Op[Approval]:
        return _Op(self._core.wait_for_approval(approval_id, timeout), _wait_result(approval_id))

    def _list_approvals(
        self,
        agent_id: Optional[str],
        state: Optional[ApprovalState],
        page_size: int,
        page_token: Optional[str],
    ) -> _Op[ApprovalPage]:
        def parse(d: dict[str, Any]) -> ApprovalPage:
            return ApprovalPage(
                approvals=[Approval._from(a) for a in d["approvals"]],
                next_page_token=d["next_page_token"] or None,
            )

        pending = self._core.list_approvals(
            agent_id=agent_id or "",
            state=0 if state is None else _lookup(_STATES, state, "state"),
            page_size=page_size,
            page_token=page_token or "",
        )
        return _Op(pending, parse)

    def _halt(
        self, agent_id: Optional[str], session_id: Optional[str], mode: HaltMode, reason: str
    ) -> _Op[Halt]:
        scope, agent, session = _halt_target(agent_id, session_id)
        pending = self._core.halt(scope, agent, session, _lookup(_MODES, mode, "mode"), reason)
        return _Op(pending, Halt._from)

    def _resume(self, agent_id: Optional[str], session_id: Optional[str], reason: str) -> _Op[Halt]:
        scope, agent, session = _halt_target(agent_id, session_id)
        return _Op(self._core.resume(scope, agent, session, reason), Halt._from)

    def _set_trust(
        self, agent_id: str, level: Union[TrustLevel, int, str], scope: Optional[str], reason: str
    ) -> _Op[TrustAssignment]:
        wire = _trust_to_wire(TrustLevel.parse(level, "level"))
        pending = self._core.set_trust(agent_id, wire, scope or "", reason)
        return _Op(pending, lambda d: TrustAssignment._from(d["assignment"]))

    def _get_trust(self, agent_id: str, scope: Optional[str]) -> _Op[TrustInfo]:
        def parse(d: dict[str, Any]) -> TrustInfo:
            level = d["effective_level"]
            return TrustInfo(
                effective_level=_trust(level),
                assignment=None
                if d["assignment"] is None
                else TrustAssignment._from(d["assignment"]),
                source=d["source"],
            )

        return _Op(self._core.get_trust(agent_id, scope or ""), parse)

    def _grant_consent(
        self,
        agent_id: str,
        data_type: str,
        purpose: Optional[str],
        expires_at: Optional[datetime],
    ) -> _Op[ConsentGrant]:
        pending = self._core.grant_consent(agent_id, data_type, purpose or "", _micros(expires_at))
        return _Op(pending, lambda d: ConsentGrant._from(d["grant"]))

    def _heartbeat(
        self,
        agent_id: str,
        session_id: Optional[str],
        status: Optional[Presence],
        metadata: Optional[Mapping[str, str]],
        operator: Optional[str],
    ) -> _Op[HeartbeatResult]:
        def parse(d: dict[str, Any]) -> HeartbeatResult:
            halt = None if d["halt"] is None else Halt._from(d["halt"])
            return HeartbeatResult(halted=d["halted"], halt=halt)

        pending = self._core.heartbeat(
            agent_id,
            session_id=session_id or "",
            status=0 if status is None else _lookup(_PRESENCES, status, "status"),
            metadata=dict(metadata or {}),
            operator=operator or "",
        )
        return _Op(pending, parse)

    def _get_policy(self) -> _Op[PolicyInfo]:
        def parse(d: dict[str, Any]) -> PolicyInfo:
            current = None if d["current"] is None else PolicyLoad._from(d["current"])
            return PolicyInfo(
                current=current,
                history=[PolicyLoad._from(p) for p in d["history"]],
                agent_rules=d["agent_rules"],
                budgets=d["budgets"],
            )

        return _Op(self._core.get_policy(), parse)

    def _create_principal(
        self,
        name: str,
        roles: Sequence[Role],
        agents: Sequence[str],
        tls_identity: Optional[str],
    ) -> _Op[NewPrincipal]:
        if isinstance(roles, str):
            roles = [cast(Role, roles)]
        wire = [_lookup(_ROLE_VALUES, r, "role") for r in roles]
        pending = self._core.create_principal(name, wire, list(agents), tls_identity or "")
        return _Op(
            pending,
            lambda d: NewPrincipal(Principal._from(d["principal"]), d["api_key"] or None),
        )

    def guard(
        self,
        agent_id: str,
        *,
        tool: Optional[str] = None,
        session_id: Optional[str] = None,
        api: Optional[Api] = None,
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        cost_usd: Optional[Money] = None,
        tokens: Optional[int] = None,
        budget: Optional[str] = None,
        category: Optional[str] = None,
        data: Optional[Sequence[DataAccess]] = None,
        min_trust: Union[TrustLevel, int, str, None] = None,
        delegation_token: Optional[Token] = None,
        context: Optional[Mapping[str, str]] = None,
        arguments: Optional[Mapping[str, Any]] = None,
        wait_for_approval: Union[bool, float] = False,
        fail_open: bool = False,
    ) -> Guard:
        """Evaluate before a block and record after it.

        ``with client.guard(...) as g:`` (or ``async with`` on an ``AsyncClient``)
        evaluates on entry and runs the block only on ALLOW; otherwise it raises
        ``Halted``, ``Denied`` or ``ApprovalRequired``. With ``wait_for_approval``
        (True for 60 s, or a number of seconds) a PENDING_APPROVAL waits for a human
        and evaluates again with the granted approval, raising ``ApprovalDenied`` or
        ``ApprovalTimeout`` when none comes. On exit it records the outcome
        ("success", or "failure" when the block raised), the duration and whatever
        the block reported with ``g.report(...)``.

        ``delegation_token`` acts under a token from ``delegate`` (see
        ``evaluate``); outside the token the guard raises ``Denied`` with
        ``reason == "delegation.out_of_scope"``.

        When Arbiter is unreachable the guard fails closed: ``Unavailable`` is
        raised and the block does not run. ``fail_open=True`` runs the block
        without a decision instead (``g.decision`` is then None and nothing is
        recorded).
        """
        # A bad level fails here, where the guard is written, not at its first call.
        _min_trust(min_trust)
        return Guard(
            self,
            dict(
                agent_id=agent_id,
                tool=tool,
                session_id=session_id,
                api=api,
                model=model,
                max_tokens=max_tokens,
                cost_usd=cost_usd,
                tokens=tokens,
                budget=budget,
                category=category,
                data=data,
                min_trust=min_trust,
                delegation_token=delegation_token,
                context=context,
                arguments=arguments,
            ),
            wait_for_approval=_approval_wait(wait_for_approval),
            fail_open=fail_open,
        )

    def governed(
        self,
        agent_id: str,
        *,
        tool: Optional[str] = None,
        session_id: Optional[str] = None,
        api: Optional[Api] = None,
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        cost_usd: Optional[Money] = None,
        tokens: Optional[int] = None,
        budget: Optional[str] = None,
        category: Optional[str] = None,
        data: Optional[Sequence[DataAccess]] = None,
        min_trust: Union[TrustLevel, int, str, None] = None,
        delegation_token: Optional[Token] = None,
        context: Optional[Mapping[str, str]] = None,
        arguments: Union[str, Mapping[str, Any], Callable[..., Mapping[str, Any]], None] = "call",
        wait_for_approval: Union[bool, float] = False,
        fail_open: bool = False,
    ) -> Callable[[F], F]:
        """Decorate a function (plain or ``async def``) so every call runs inside
        ``guard(...)`` with these arguments. ``tool`` defaults to the function's name.
        Inside the function, ``arbiter.current_guard()`` reports usage.

        ``arguments`` says which call arguments the decision binds (an approval for
        ``delete_user("u1")`` is then refused for ``delete_user("u2")``): ``"call"``
        (the default) binds the function's own arguments by parameter name, defaults
        filled in, and raises ``TypeError`` naming a parameter whose value is not JSON;
        a callable gets the call's ``*args, **kwargs`` and returns the mapping to bind;
        a mapping binds those fixed values; ``None`` binds none."""

        _min_trust(min_trust)

        def decorate(fn: F) -> F:
            bind = _call_arguments(fn, arguments)
            make = functools.partial(
                self.guard,
                agent_id,
                tool=tool if tool is not None else fn.__name__,
                session_id=session_id,
                api=api,
                model=model,
                max_tokens=max_tokens,
                cost_usd=cost_usd,
                tokens=tokens,
                budget=budget,
                category=category,
                data=data,
                min_trust=min_trust,
                delegation_token=delegation_token,
                context=context,
                wait_for_approval=wait_for_approval,
                fail_open=fail_open,
            )
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def run_async(*args: Any, **kwargs: Any) -> Any:
                    async with make(arguments=bind(args, kwargs)):
                        return await fn(*args, **kwargs)

                return cast(F, run_async)

            @functools.wraps(fn)
            def run(*args: Any, **kwargs: Any) -> Any:
                with make(arguments=bind(args, kwargs)):
                    return fn(*args, **kwargs)

            return cast(F, run)

        return decorate


def _arguments_json(arguments: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The call's arguments as JSON text for the core (which sends a protobuf Struct)."""
    if arguments is None:
        return None
    if not isinstance(arguments, Mapping):
        raise ValueError(f"arguments: must be a mapping, got {type(arguments).__name__}")
    try:
        return json.dumps(dict(arguments), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"arguments: must be JSON (str keys, finite numbers): {e}") from None


_Bind = Callable[[tuple[Any, ...], dict[str, Any]], Optional[Mapping[str, Any]]]


def _call_arguments(
    fn: Callable[..., Any],
    arguments: Union[str, Mapping[str, Any], Callable[..., Mapping[str, Any]], None],
) -> _Bind:
    """How ``governed`` turns one call of ``fn`` into the arguments its decision binds."""
    if arguments is None:
        return lambda args, kwargs: None
    if isinstance(arguments, Mapping):
        fixed = dict(arguments)
        return lambda args, kwargs: fixed
    if callable(arguments):
        produce = arguments
        return lambda args, kwargs: produce(*args, **kwargs)
    if arguments != "call":
        raise ValueError(
            f'arguments: must be "call", a mapping, a callable or None, got {arguments!r}'
        )
    signature = inspect.signature(fn)

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Mapping[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        out: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                out.update(value)
                continue
            out[name] = list(value) if kind is inspect.Parameter.VAR_POSITIONAL else value
        for name, value in out.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise TypeError(
                    f"governed {fn.__name__}: argument {name!r} ({type(value).__name__}) is "
                    "not JSON; pass arguments= a callable that returns what to bind"
                ) from None
        return out

    return bind


def _approval_wait(wait: Union[bool, float]) -> Optional[float]:
    if wait is True:
        return DEFAULT_APPROVAL_WAIT
    if wait is False:
        return None
    return float(wait)


_current: contextvars.ContextVar[Optional[Guard]] = contextvars.ContextVar(
    "arbiter_guard", default=None
)


def current_guard() -> Guard:
    """The innermost active ``guard`` (or ``governed`` call) of this thread or task.

    Raises:
        RuntimeError: outside a guard.
    """
    guard = _current.get()
    if guard is None:
        raise RuntimeError("arbiter.current_guard() was called outside a guard")
    return guard


class Guard:
    """Evaluate on entry, record on exit. Made by ``Client.guard`` / ``AsyncClient.guard``;
    usable as ``with`` and ``async with``."""

    def __init__(
        self,
        client: _Base,
        evaluate: dict[str, Any],
        *,
        wait_for_approval: Optional[float],
        fail_open: bool,
    ) -> None:
        self._client = client
        self._evaluate = evaluate
        self._wait = wait_for_approval
        self._fail_open = fail_open
        self._usage: dict[str, Any] = {}
        self._metadata: dict[str, str] = {}
        self._outcome: Optional[ActionOutcome] = None
        self._started = 0.0
        self._token: Optional[contextvars.Token[Optional[Guard]]] = None
        self.decision: Optional[Decision] = None
        """The ALLOW decision the block runs under (None when it ran fail-open)."""
        self.recorded: Optional[RecordResult] = None
        """What the record on exit settled, once the block has finished."""
        self.record_error: Optional[Exception] = None
        """Why the record on exit failed, if it did (it is logged, not raised)."""

    def report(
        self,
        *,
        model: Optional[str] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
        cost_usd: Optional[Money] = None,
        output_digest: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        outcome: Optional[ActionOutcome] = None,
    ) -> None:
        """Report what the block used, for the record on exit. Later calls add to or
        replace earlier values; ``outcome`` overrides the success/failure default."""
        if cost_usd is not None:
            usd_to_micros(cost_usd)  # Fail here, in the block, rather than on exit.
        for key, value in (
            ("model", model),
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
            ("cost_usd", cost_usd),
            ("output_digest", output_digest),
        ):
            if value is not None:
                self._usage[key] = value
        if metadata:
            self._metadata.update(metadata)
        if outcome is not None:
            _lookup(_OUTCOMES, outcome, "outcome")
            self._outcome = outcome

    # Entry.

    def _enter(self, decision: Optional[Decision]) -> Guard:
        if decision is not None:
            decision.raise_for_outcome()
        self.decision = decision
        self._token = _current.set(self)
        self._started = time.monotonic()
        return self

    def __enter__(self) -> Guard:
        try:
            decision = self._client._evaluate(**self._evaluate).wait()
            if decision.pending and self._wait is not None:
                assert decision.approval_id is not None
                self._client._wait_for_approval(decision.approval_id, self._wait).wait()
                decision = self._client._evaluate(
                    **self._evaluate, approval_id=decision.approval_id
                ).wait()
        except _arbiter.Unavailable:
            if not self._fail_open:
                raise
            logger.warning("Arbiter is unavailable; running %s fail-open", self._what())
            return self._enter(None)
        return self._enter(decision)

    async def __aenter__(self) -> Guard:
        try:
            decision = await self._client._evaluate(**self._evaluate).future()
            if decision.pending and self._wait is not None:
                assert decision.approval_id is not None
                await self._client._wait_for_approval(decision.approval_id, self._wait).future()
                decision = await self._client._evaluate(
                    **self._evaluate, approval_id=decision.approval_id
                ).future()
        except _arbiter.Unavailable:
            if not self._fail_open:
                raise
            logger.warning("Arbiter is unavailable; running %s fail-open", self._what())
            return self._enter(None)
        return self._enter(decision)

    # Exit.

    def _record_op(self, error: Optional[BaseException]) -> Optional[_Op[RecordResult]]:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self.decision is None:
            return None
        metadata = dict(self._metadata)
        if error is not None:
            metadata.setdefault("error", type(error).__name__)
        outcome: ActionOutcome = self._outcome or ("success" if error is None else "failure")
        return self._client._record(
            self.decision.decision_id,
            outcome=outcome,
            duration_ms=int((time.monotonic() - self._started) * 1000),
            metadata=metadata,
            **self._usage,
        )

    def _record_failed(self, error: Exception) -> None:
        # The action has happened; raising here would tell the caller it had not.
        self.record_error = error
        logger.warning("recording %s failed: %s", self._what(), error)

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        op = self._record_op(exc)
        if op is None:
            return
        try:
            self.recorded = op.wait()
        except _arbiter.ArbiterError as error:
            self._record_failed(error)

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        op = self._record_op(exc)
        if op is None:
            return
        try:
            self.recorded = await op.future()
        except _arbiter.ArbiterError as error:
            self._record_failed(error)

    def _what(self) -> str:
        e = self._evaluate
        action = e.get("tool") or e.get("model") or e.get("api") or "action"
        return f"{e['agent_id']}/{action}"


class AuditTail:
    """Entries of the audit log as they commit: iterate with ``for`` (blocking) or
    ``async for``. It does not end by itself; ``close()`` (or leaving a ``with``
    block) ends it, also from another thread."""

    def __init__(self, stream: _arbiter.Stream, limit: Optional[int]) -> None:
        self._stream = stream
        self._left = limit

    def __iter__(self) -> Iterator[AuditEntry]:
        return self

    def __next__(self) -> AuditEntry:
        if self._left is not None:
            if self._left <= 0:
                self.close()
                raise StopIteration
            self._left -= 1
        return AuditEntry._from(self._stream.next())

    def __aiter__(self) -> AsyncIterator[AuditEntry]:
        return self

    async def __anext__(self) -> AuditEntry:
        if self._left is not None:
            if self._left <= 0:
                self.close()
                raise StopAsyncIteration
            self._left -= 1
        return AuditEntry._from(await self._stream.next_future())

    def close(self) -> None:
        """End the stream and the server call behind it."""
        self._stream.close()

    def __enter__(self) -> AuditTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> AuditTail:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class ExportLines:
    """JSONL export lines (``{"entry":...,"mac":"..."}``, no newline), for ``for`` or
    ``async for``; the stream ends after the last entry of the range."""

    def __init__(self, stream: _arbiter.Stream) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return cast(str, self._stream.next())

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        return cast(str, await self._stream.next_future())

    def close(self) -> None:
        """End the stream early."""
        self._stream.close()


class _AuditBase:
    def __init__(self, core: _arbiter.Core) -> None:
        self._core = core

    def _query(
        self,
        agent_id: Optional[str],
        session_id: Optional[str],
        kinds: Optional[Sequence[str]],
        outcome: Optional[str],
        since: Optional[datetime],
        until: Optional[datetime],
        page_size: int,
        page_token: Optional[str],
    ) -> _Op[AuditPage]:
        def parse(d: dict[str, Any]) -> AuditPage:
            return AuditPage(
                entries=[AuditEntry._from(e) for e in d["entries"]],
                next_page_token=d["next_page_token"] or None,
            )

        pending = self._core.query_audit(
            agent_id=agent_id or "",
            session_id=session_id or "",
            kinds=list(kinds or []),
            outcome=outcome or "",
            since=_micros(since),
            until=_micros(until),
            page_size=page_size,
            page_token=page_token or "",
        )
        return _Op(pending, parse)

    def tail(
        self,
        *,
        from_seq: int = 0,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        kinds: Optional[Sequence[str]] = None,
        outcome: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> AuditTail:
        """Follow the log: matching entries from ``from_seq`` on (0: only entries
        committed from now on), then each new one as it commits. ``limit`` stops
        after that many entries. Works with ``for`` and ``async for``."""
        stream = self._core.tail_audit(
            agent_id=agent_id or "",
            session_id=session_id or "",
            kinds=list(kinds or []),
            outcome=outcome or "",
            from_seq=from_seq,
        )
        return AuditTail(stream, limit)

    def export(self, *, from_seq: int = 0, to_seq: int = 0) -> ExportLines:
        """The range as JSONL lines, verifiable offline (scripts/verify_audit.py).
        0 means from the start / to the end."""
        return ExportLines(self._core.export_audit(from_seq=from_seq, to_seq=to_seq))


class Audit(_AuditBase):
    """``client.audit``: query, follow, verify and prove the audit log."""

    def query(
        self,
        *,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        kinds: Optional[Sequence[str]] = None,
        outcome: Optional[str] = None,
        since: Optional[datetime] = None,
        until: Optional[datetime] = None,
        page_size: int = 100,
        page_token: Optional[str] = None,
    ) -> AuditPage:
        """One page of matching entries in sequence order (page_size up to 1000)."""
        return self._query(
            agent_id, session_id, kinds, outcome, since, until, page_size, page_token
        ).wait()

    def entries(
        self,
        *,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        kinds: Optional[Sequence[str]] = None,
        outcome: Optional[str] = None,
        since: Optional[datetime] = None,
        until: Optional[datetime] = None,
    ) -> Iterator[AuditEntry]:
        """Every matching entry, fetching page after page."""
        token: Optional[str] = None
        while True:
            page = self._query(
                agent_id, session_id, kinds, outcome, since, until, 1000, token
            ).wait()
            yield from page.entries
            token = page.next_page_token
            if token is None:
                return

    def verify(
        self, *, from_seq: int = 0, to_seq: int = 0, timeout: Optional[float] = None
    ) -> VerifyResult:
        """Verify the chain on the server over a range (0: from the start / to the end)."""
        return _Op(
            self._core.verify_audit(from_seq=from_seq, to_seq=to_seq, timeout=timeout),
            VerifyResult._from,
        ).wait()

    def checkpoint(self) -> Checkpoint:
        """The latest signed checkpoint of the Merkle tree."""
        return _Op(self._core.get_checkpoint(), lambda d: Checkpoint(**d)).wait()

    def inclusion_proof(self, seq: int, *, tree_size: int = 0) -> InclusionProof:
        """Proof that entry ``seq`` is in the tree of ``tree_size`` (0: the latest checkpoint)."""
        return _Op(
            self._core.get_inclusion_proof(seq, tree_size), lambda d: InclusionProof(**d)
        ).wait()

    def consistency_proof(self, from_size: int, *, to_size: int = 0) -> ConsistencyProof:
        """Proof that the tree of ``from_size`` is a prefix of ``to_size`` (0: latest)."""
        return _Op(
            self._core.get_consistency_proof(from_size, to_size),
            lambda d: ConsistencyProof(**d),
        ).wait()


class AsyncAudit(_AuditBase):
    """``async_client.audit``: the same methods as ``Audit``, awaitable."""

    async def query(
        self,
        *,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        kinds: Optional[Sequence[str]] = None,
        outcome: Optional[str] = None,
        since: Optional[datetime] = None,
        until: Optional[datetime] = None,
        page_size: int = 100,
        page_token: Optional[str] = None,
    ) -> AuditPage:
        """One page of matching entries in sequence order (page_size up to 1000)."""
        return await self._query(
            agent_id, session_id, kinds, outcome, since, until, page_size, page_token
        ).future()

    async def entries(
        self,
        *,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        kinds: Optional[Sequence[str]] = None,
        outcome: Optional[str] = None,
        since: Optional[datetime] = None,
        until: Optional[datetime] = None,
    ) -> AsyncIterator[AuditEntry]:
        """Every matching entry, fetching page after page."""
        token: Optional[str] = None
        while True:
            page = await self._query(
                agent_id, session_id, kinds, outcome, since, until, 1000, token
            ).future()
            for entry in page.entries:
                yield entry
            token = page.next_page_token
            if token is None:
                return

    async def verify(
        self, *, from_seq: int = 0, to_seq: int = 0, timeout: Optional[float] = None
    ) -> VerifyResult:
        """Verify the chain on the server over a range (0: from the start / to the end)."""
        return await _Op(
            self._core.verify_audit(from_seq=from_seq, to_seq=to_seq, timeout=timeout),
            VerifyResult._from,
        ).future()

    async def checkpoint(self) -> Checkpoint:
        """The latest signed checkpoint of the Merkle tree."""
        return await _Op(self._core.get_checkpoint(), lambda d: Checkpoint(**d)).future()

    async def inclusion_proof(self, seq: int, *, tree_size: int = 0) -> InclusionProof:
        """Proof that entry ``seq`` is in the tree of ``tree_size`` (0: the latest checkpoint)."""
        return await _Op(
            self._core.get_inclusion_proof(seq, tree_size), lambda d: InclusionProof(**d)
        ).future()

    async def consistency_proof(self, from_size: int, *, to_size: int = 0) -> ConsistencyProof:
        """Proof that the tree of ``from_size`` is a prefix of ``to_size`` (0: latest)."""
        return await _Op(
            self._core.get_consistency_proof(from_size, to_size),
            lambda d: ConsistencyProof(**d),
        ).future()


class Client(_Base):
    """A blocking client. Thread-safe: share one instance across threads; calls
    release the GIL while they wait on the network.

    ``address`` is "host:port" or "http://host:port". ``api_key`` is sent on every
    call once the server has principals. ``timeout`` is the default deadline of one
    call in seconds (retries included); ``retries`` is how often a call that found
    the server UNAVAILABLE is sent again (only calls that are safe to repeat).
    After 5 consecutive outages the circuit breaker fails calls fast for 2 s
    (``circuit_breaker=False`` turns it off). Nothing connects until the first call.

    TLS: ``tls_ca`` is the CA that signed the server's certificate and switches TLS on
    (no system roots are trusted; the address then gets ``https://``, and an
    ``http://`` address is refused with ``ValueError``). ``tls_cert`` and ``tls_key``
    are this client's certificate and private key for mTLS (both or neither); the
    server maps the certificate to a principal, so no ``api_key`` is needed.
    ``tls_domain`` is the name the server certificate must carry when it differs from
    the address's host (e.g. dialling an IP address). Each of ``tls_ca``, ``tls_cert``
    and ``tls_key`` is a file path (``str`` or ``os.PathLike``, read once, here) or
    the PEM itself (``bytes``, or a ``str`` containing ``-----BEGIN``). Unreadable
    files and unusable PEM raise ``ValueError`` here; a failed handshake (wrong CA,
    wrong name, certificate refused) raises ``Unavailable`` on the first call.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        api_key: Optional[str] = None,
        timeout: float = 5.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        circuit_breaker: bool = True,
        tls_ca: Optional[Pem] = None,
        tls_cert: Optional[Pem] = None,
        tls_key: Optional[Pem] = None,
        tls_domain: Optional[str] = None,
    ) -> None:
        super().__init__(
            address,
            api_key=api_key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            circuit_breaker=circuit_breaker,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_domain=tls_domain,
        )
        self.audit = Audit(self._core)
        """Query, follow, verify and prove the audit log."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def evaluate(
        self,
        agent_id: str,
        *,
        tool: Optional[str] = None,
        session_id: Optional[str] = None,
        api: Optional[Api] = None,
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        cost_usd: Optional[Money] = None,
        tokens: Optional[int] = None,
        budget: Optional[str] = None,
        category: Optional[str] = None,
        data: Optional[Sequence[DataAccess]] = None,
        min_trust: Union[TrustLevel, int, str, None] = None,
        approval_id: Optional[str] = None,
        delegation_token: Optional[Token] = None,
        context: Optional[Mapping[str, str]] = None,
        arguments: Optional[Mapping[str, Any]] = None,
        explain: bool = False,
        receipt: bool = False,
        request_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Decision:
        """Ask whether ``agent_id`` may act. Returns the ``Decision``; a DENY or
        PENDING_APPROVAL is a value, not an exception (see ``Decision.raise_for_outcome``).

        The action is any of ``tool``, ``api`` (``("POST", url)`` or ``"POST url"``) and
        ``model`` (with ``max_tokens``). ``cost_usd`` is the estimate in dollars
        (Decimal, str, int or float; converted exactly to micro-USD), ``tokens`` the
        estimated tokens, ``budget`` a named budget to charge too, ``category`` the
        budget category, ``data`` the personal data touched (``[("user_email",
        "notifications")]``), ``min_trust`` raises the required trust level
        (a ``TrustLevel``, an int 0 to 5 or a name such as ``"L4"``; see
        ``TrustLevel.parse``), ``approval_id`` presents a granted approval,
        ``delegation_token`` (from ``delegate``) narrows the agent's scope to
        policy ∩ token (outside it: DENY ``delegation.out_of_scope``), ``context``
        is recorded in the audit entry. ``explain`` reports every stage,
        ``receipt`` asks for a verifiable receipt. A ``request_id`` (idempotency
        key) is generated unless given; retries after UNAVAILABLE reuse it, so
        they never spend twice.

        Raises ``Unavailable`` when Arbiter cannot be asked, ``InvalidArgument``,
        ``PermissionDenied``."""
        return self._evaluate(
            agent_id,
            tool=tool,
            session_id=session_id,
            api=api,
            model=model,
            max_tokens=max_tokens,
            cost_usd=cost_usd,
            tokens=tokens,
            budget=budget,
            category=category,
            data=data,
            min_trust=min_trust,
            approval_id=approval_id,
            delegation_token=delegation_token,
            context=context,
            arguments=arguments,
            explain=explain,
            receipt=receipt,
            request_id=request_id,
            timeout=timeout,
        ).wait()

    def record(
        self,
        decision_id: str,
        *,
        outcome: ActionOutcome = "success",
        model: Optional[str] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
        cost_usd: Optional[Money] = None,
        duration_ms: Optional[int] = None,
        output_digest: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> RecordResult:
        """Report what an allowed action did: ``outcome`` ("success", "failure" or
        "error"), usage (``model``, tokens, ``cost_usd``; without a cost the server
        prices the tokens) and ``duration_ms``. Settles the budget reservation.
        Idempotent per decision: a second record returns the first answer."""
        return self._record(
            decision_id,
            outcome=outcome,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            duration_ms=duration_ms,
            output_digest=output_digest,
            metadata=metadata,
            request_id=request_id,
            timeout=timeout,
        ).wait()

    def delegate(
        self,
        parent_agent_id: str,
        subject_agent_id: str,
        *,
        tools: Sequence[str] = (),
        apis: Sequence[Api] = (),
        ttl: Union[float, timedelta] = DEFAULT_DELEGATION_TTL,
        max_depth: int = 0,
        parent_token: Optional[Token] = None,
    ) -> DelegationToken:
        """Issue a delegation token: ``parent_agent_id`` lends ``subject_agent_id``
        part of its own scope. ``tools`` are tool patterns (``"crm.read*"``), ``apis``
        API patterns (``"GET https://api.example.com/**"`` or ``("GET", url_glob)``);
        each must lie inside the parent's policy rule, or inside ``parent_token``
        when re-delegating a token the parent holds. ``ttl`` is the lifetime in whole
        seconds (or a ``timedelta``; 1 s to 24 h, capped at a parent token's expiry),
        ``max_depth`` how many more times the token may be delegated onward (0 to 8).

        The subject then passes the token as ``delegation_token=`` to ``evaluate`` or
        ``guard``: its scope is its own policy ∩ the token ∩ every issuer's current
        policy. The caller must be allowed to act for ``parent_agent_id``.

        Raises ``PermissionDenied`` with ``reason`` set to the refusal code:
        "delegation.escalation" (a pattern outside the parent's scope),
        "delegation.forged", "delegation.expired", "delegation.wrong_subject" (the
        parent token), "delegation.depth_exceeded", or "halt.engaged" (the parent is
        halted); ``InvalidArgument`` for malformed arguments. Sent once (never retried)."""
        return self._delegate(
            parent_agent_id, subject_agent_id, tools, apis, ttl, max_depth, parent_token
        ).wait()

    def approve(self, approval_id: str, grant: bool = True, reason: str = "") -> Approval:
        """Grant (or, with ``grant=False``, deny) a pending approval. The approver is
        this client's principal, which must not be the agent's own."""
        return self._approve(approval_id, grant, reason).wait()

    def deny(self, approval_id: str, reason: str = "") -> Approval:
        """Deny a pending approval (``approve(approval_id, grant=False, ...)``)."""
        return self._approve(approval_id, False, reason).wait()

    def wait_for_approval(
        self, approval_id: str, timeout: float = DEFAULT_APPROVAL_WAIT
    ) -> Approval:
        """Wait until a human decides. Returns the granted ``Approval`` (then evaluate
        again with ``approval_id=...`` to act); raises ``ApprovalDenied`` when it is
        denied and ``ApprovalTimeout`` when ``timeout`` seconds pass or it expires."""
        return self._wait_for_approval(approval_id, timeout).wait()

    def get_approval(self, approval_id: str) -> Approval:
        """Read one approval."""
        return _Op(self._core.get_approval(approval_id), Approval._from).wait()

    def list_approvals(
        self,
        *,
        agent_id: Optional[str] = None,
        state: Optional[ApprovalState] = None,
        page_size: int = 100,
        page_token: Optional[str] = None,
    ) -> ApprovalPage:
        """One page of approvals, newest first, optionally of one agent or state."""
        return self._list_approvals(agent_id, state, page_size, page_token).wait()

    def halt(
        self,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        *,
        mode: HaltMode = "halt_all",
        reason: str,
    ) -> Halt:
        """Engage the kill switch: for everyone (no ids), one agent, or one session
        of an agent. ``mode`` is "halt_noncritical", "halt_all" or "emergency";
        ``reason`` is shown to every denied caller."""
        return self._halt(agent_id, session_id, mode, reason).wait()

    def resume(
        self,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        *,
        reason: str,
    ) -> Halt:
        """Lift the halt on the same target; returns the halt that was lifted."""
        return self._resume(agent_id, session_id, reason).wait()

    def list_halts(self) -> list[Halt]:
        """The engaged halts."""
        return _Op(self._core.list_halts(), lambda d: [Halt._from(h) for h in d]).wait()

    def set_trust(
        self,
        agent_id: str,
        level: Union[TrustLevel, int, str],
        *,
        scope: Optional[str] = None,
        reason: str = "",
    ) -> TrustAssignment:
        """Assign a trust level, for all actions or one ``scope`` (tool or category).
        ``level`` is a ``TrustLevel``, an int 0 to 5 or a name (``"L3"``, any case)."""
        return self._set_trust(agent_id, level, scope, reason).wait()

    def get_trust(self, agent_id: str, *, scope: Optional[str] = None) -> TrustInfo:
        """An agent's effective trust level now and how it was derived."""
        return self._get_trust(agent_id, scope).wait()

    def list_trust(self, agent_id: Optional[str] = None) -> list[TrustAssignment]:
        """Trust assignments, of one agent or all."""
        return _Op(
            self._core.list_trust(agent_id or ""), lambda d: [TrustAssignment._from(t) for t in d]
        ).wait()

    def grant_consent(
        self,
        agent_id: str,
        data_type: str,
        purpose: Optional[str] = None,
        *,
        expires_at: Optional[datetime] = None,
    ) -> ConsentGrant:
        """Let an agent access ``data_type`` for ``purpose`` (None: every purpose)
        until ``expires_at`` (a timezone-aware datetime; None: never)."""
        return self._grant_consent(agent_id, data_type, purpose, expires_at).wait()

    def revoke_consent(self, agent_id: str, data_type: str, purpose: Optional[str] = None) -> int:
        """Revoke exactly one grant; returns its audit sequence number. ``NotFound`` when absent."""
        return _Op(self._core.revoke_consent(agent_id, data_type, purpose or ""), _int).wait()

    def list_consents(self, agent_id: Optional[str] = None) -> list[ConsentGrant]:
        """Consent grants, of one agent or all (expired ones until revoked)."""
        return _Op(
            self._core.list_consents(agent_id or ""), lambda d: [ConsentGrant._from(g) for g in d]
        ).wait()

    def filter_tools(self, agent_id: str, tools: Sequence[str]) -> list[str]:
        """The tools, of ``tools``, that the agent may see, in the given order."""
        return _Op(self._core.filter_tools(agent_id, list(tools)), _strs).wait()

    def heartbeat(
        self,
        agent_id: str,
        session_id: Optional[str] = None,
        *,
        status: Optional[Presence] = None,
        metadata: Optional[Mapping[str, str]] = None,
        operator: Optional[str] = None,
    ) -> HeartbeatResult:
        """Report that the agent is alive ("live" unless ``status`` says otherwise).
        The answer says whether a halt applies; a heartbeat never clears one."""
        return self._heartbeat(agent_id, session_id, status, metadata, operator).wait()

    def budget(
        self, agent_id: Optional[str] = None, session_id: Optional[str] = None
    ) -> list[Budget]:
        """Spent, reserved and remaining per budget window that applies to the agent
        (and session); with no agent, the global and category budgets."""
        return _Op(
            self._core.get_budgets(agent_id or "", session_id or ""),
            lambda d: [Budget._from(b) for b in d],
        ).wait()

    def list_agents(self) -> list[Agent]:
        """Every agent Arbiter has seen, ordered by id."""
        return _Op(self._core.list_agents(), lambda d: [Agent._from(a) for a in d]).wait()

    def get_policy(self) -> PolicyInfo:
        """The policy bundle being served and its load history."""
        return self._get_policy().wait()

    def create_principal(
        self,
        name: str,
        roles: Sequence[Role],
        *,
        agents: Sequence[str] = (),
        tls_identity: Optional[str] = None,
    ) -> NewPrincipal:
        """Create a principal with an API key (returned only here). The first
        principal switches authentication on for good. ``agents`` are the agent ids or
        globs an "agent" principal may act for. With ``tls_identity`` (a URI SAN such
        as ``"spiffe://example.org/bot"``, ``"dns:NAME"`` or ``"cn:NAME"``) the
        principal is bound to a client certificate instead: it gets no API key
        (``api_key`` is None) and authenticates only over mTLS."""
        return self._create_principal(name, roles, agents, tls_identity).wait()

    def list_principals(self) -> list[Principal]:
        """Every principal (never their keys)."""
        return _Op(self._core.list_principals(), lambda d: [Principal._from(p) for p in d]).wait()

    def revoke_principal(self, name: str) -> Principal:
        """Revoke a principal; its key stops working at once."""
        return _Op(self._core.revoke_principal(name), Principal._from).wait()

    def ping(self) -> None:
        """An empty round trip: raises ``Unavailable`` when Arbiter cannot be reached."""
        return _Op(self._core.ping(), _nothing).wait()


class AsyncClient(_Base):
    """The asyncio client: the same methods as ``Client``, awaitable. Many calls may
    be in flight at once from one instance; they run on the package's own runtime
    and never block the event loop. Arguments as for ``Client``.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        api_key: Optional[str] = None,
        timeout: float = 5.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        circuit_breaker: bool = True,
        tls_ca: Optional[Pem] = None,
        tls_cert: Optional[Pem] = None,
        tls_key: Optional[Pem] = None,
        tls_domain: Optional[str] = None,
    ) -> None:
        super().__init__(
            address,
            api_key=api_key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            circuit_breaker=circuit_breaker,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_domain=tls_domain,
        )
        self.audit = AsyncAudit(self._core)
        """Query, follow, verify and prove the audit log."""

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def evaluate(
        self,
        agent_id: str,
        *,
        tool: Optional[str] = None,
        session_id: Optional[str] = None,
        api: Optional[Api] = None,
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        cost_usd: Optional[Money] = None,
        tokens: Optional[int] = None,
        budget: Optional[str] = None,
        category: Optional[str] = None,
        data: Optional[Sequence[DataAccess]] = None,
        min_trust: Union[TrustLevel, int, str, None] = None,
        approval_id: Optional[str] = None,
        delegation_token: Optional[Token] = None,
        context: Optional[Mapping[str, str]] = None,
        arguments: Optional[Mapping[str, Any]] = None,
        explain: bool = False,
        receipt: bool = False,
        request_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Decision:
        """Ask whether ``agent_id`` may act. Returns the ``Decision``; a DENY or
        PENDING_APPROVAL is a value, not an exception (see ``Decision.raise_for_outcome``).

        The action is any of ``tool``, ``api`` (``("POST", url)`` or ``"POST url"``) and
        ``model`` (with ``max_tokens``). ``cost_usd`` is the estimate in dollars
        (Decimal, str, int or float; converted exactly to micro-USD), ``tokens`` the
        estimated tokens, ``budget`` a named budget to charge too, ``category`` the
        budget category, ``data`` the personal data touched (``[("user_email",
        "notifications")]``), ``min_trust`` raises the required trust level
        (a ``TrustLevel``, an int 0 to 5 or a name such as ``"L4"``; see
        ``TrustLevel.parse``), ``approval_id`` presents a granted approval,
        ``delegation_token`` (from ``delegate``) narrows the agent's scope to
        policy ∩ token (outside it: DENY ``delegation.out_of_scope``), ``context``
        is recorded in the audit entry. ``explain`` reports every stage,
        ``receipt`` asks for a verifiable receipt. A ``request_id`` (idempotency
        key) is generated unless given; retries after UNAVAILABLE reuse it, so
        they never spend twice.

        Raises ``Unavailable`` when Arbiter cannot be asked, ``InvalidArgument``,
        ``PermissionDenied``."""
        return await self._evaluate(
            agent_id,
            tool=tool,
            session_id=session_id,
            api=api,
            model=model,
            max_tokens=max_tokens,
            cost_usd=cost_usd,
            tokens=tokens,
            budget=budget,
            category=category,
            data=data,
            min_trust=min_trust,
            approval_id=approval_id,
            delegation_token=delegation_token,
            context=context,
            arguments=arguments,
            explain=explain,
            receipt=receipt,
            request_id=request_id,
            timeout=timeout,
        ).future()

    async def record(
        self,
        decision_id: str,
        *,
        outcome: ActionOutcome = "success",
        model: Optional[str] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
        cost_usd: Optional[Money] = None,
        duration_ms: Optional[int] = None,
        output_digest: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> RecordResult:
        """Report what an allowed action did: ``outcome`` ("success", "failure" or
        "error"), usage (``model``, tokens, ``cost_usd``; without a cost the server
        prices the tokens) and ``duration_ms``. Settles the budget reservation.
        Idempotent per decision: a second record returns the first answer."""
        return await self._record(
            decision_id,
            outcome=outcome,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            duration_ms=duration_ms,
            output_digest=output_digest,
            metadata=metadata,
            request_id=request_id,
            timeout=timeout,
        ).future()

    async def delegate(
        self,
        parent_agent_id: str,
        subject_agent_id: str,
        *,
        tools: Sequence[str] = (),
        apis: Sequence[Api] = (),
        ttl: Union[float, timedelta] = DEFAULT_DELEGATION_TTL,
        max_depth: int = 0,
        parent_token: Optional[Token] = None,
    ) -> DelegationToken:
        """Issue a delegation token: ``parent_agent_id`` lends ``subject_agent_id``
        part of its own scope. ``tools`` are tool patterns (``"crm.read*"``), ``apis``
        API patterns (``"GET https://api.example.com/**"`` or ``("GET", url_glob)``);
        each must lie inside the parent's policy rule, or inside ``parent_token``
        when re-delegating a token the parent holds. ``ttl`` is the lifetime in whole
        seconds (or a ``timedelta``; 1 s to 24 h, capped at a parent token's expiry),
        ``max_depth`` how many more times the token may be delegated onward (0 to 8).

        The subject then passes the token as ``delegation_token=`` to ``evaluate`` or
        ``guard``: its scope is its own policy ∩ the token ∩ every issuer's current
        policy. The caller must be allowed to act for ``parent_agent_id``.

        Raises ``PermissionDenied`` with ``reason`` set to the refusal code:
        "delegation.escalation" (a pattern outside the parent's scope),
        "delegation.forged", "delegation.expired", "delegation.wrong_subject" (the
        parent token), "delegation.depth_exceeded", or "halt.engaged" (the parent is
        halted); ``InvalidArgument`` for malformed arguments. Sent once (never retried)."""
        return await self._delegate(
            parent_agent_id, subject_agent_id, tools, apis, ttl, max_depth, parent_token
        ).future()

    async def approve(self, approval_id: str, grant: bool = True, reason: str = "") -> Approval:
        """Grant (or, with ``grant=False``, deny) a pending approval. The approver is
        this client's principal, which must not be the agent's own."""
        return await self._approve(approval_id, grant, reason).future()

    async def deny(self, approval_id: str, reason: str = "") -> Approval:
        """Deny a pending approval (``approve(approval_id, grant=False, ...)``)."""
        return await self._approve(approval_id, False, reason).future()

    async def wait_for_approval(
        self, approval_id: str, timeout: float = DEFAULT_APPROVAL_WAIT
    ) -> Approval:
        """Wait until a human decides. Returns the granted ``Approval`` (then evaluate
        again with ``approval_id=...`` to act); raises ``ApprovalDenied`` when it is
        denied and ``ApprovalTimeout`` when ``timeout`` seconds pass or it expires."""
        return await self._wait_for_approval(approval_id, timeout).future()

    async def get_approval(self, approval_id: str) -> Approval:
        """Read one approval."""
        return await _Op(self._core.get_approval(approval_id), Approval._from).future()

    async def list_approvals(
        self,
        *,
        agent_id: Optional[str] = None,
        state: Optional[ApprovalState] = None,
        page_size: int = 100,
        page_token: Optional[str] = None,
    ) -> ApprovalPage:
        """One page of approvals, newest first, optionally of one agent or state."""
        return await self._list_approvals(agent_id, state, page_size, page_token).future()

    async def halt(
        self,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        *,
        mode: HaltMode = "halt_all",
        reason: str,
    ) -> Halt:
        """Engage the kill switch: for everyone (no ids), one agent, or one session
        of an agent. ``mode`` is "halt_noncritical", "halt_all" or "emergency";
        ``reason`` is shown to every denied caller."""
        return await self._halt(agent_id, session_id, mode, reason).future()

    async def resume(
        self,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        *,
        reason: str,
    ) -> Halt:
        """Lift the halt on the same target; returns the halt that was lifted."""
        return await self._resume(agent_id, session_id, reason).future()

    async def list_halts(self) -> list[Halt]:
        """The engaged halts."""
        return await _Op(self._core.list_halts(), lambda d: [Halt._from(h) for h in d]).future()

    async def set_trust(
        self,
        agent_id: str,
        level: Union[TrustLevel, int, str],
        *,
        scope: Optional[str] = None,
        reason: str = "",
    ) -> TrustAssignment:
        """Assign a trust level, for all actions or one ``scope`` (tool or category).
        ``level`` is a ``TrustLevel``, an int 0 to 5 or a name (``"L3"``, any case)."""
        return await self._set_trust(agent_id, level, scope, reason).future()

    async def get_trust(self, agent_id: str, *, scope: Optional[str] = None) -> TrustInfo:
        """An agent's effective trust level now and how it was derived."""
        return await self._get_trust(agent_id, scope).future()

    async def list_trust(self, agent_id: Optional[str] = None) -> list[TrustAssignment]:
        """Trust assignments, of one agent or all."""
        return await _Op(
            self._core.list_trust(agent_id or ""), lambda d: [TrustAssignment._from(t) for t in d]
        ).future()

    async def grant_consent(
        self,
        agent_id: str,
        data_type: str,
        purpose: Optional[str] = None,
        *,
        expires_at: Optional[datetime] = None,
    ) -> ConsentGrant:
        """Let an agent access ``data_type`` for ``purpose`` (None: every purpose)
        until ``expires_at`` (a timezone-aware datetime; None: never)."""
        return await self._grant_consent(agent_id, data_type, purpose, expires_at).future()

    async def revoke_consent(
        self, agent_id: str, data_type: str, purpose: Optional[str] = None
    ) -> int:
        """Revoke exactly one grant; returns its audit sequence number. ``NotFound`` when absent."""
        return await _Op(
            self._core.revoke_consent(agent_id, data_type, purpose or ""), _int
        ).future()

    async def list_consents(self, agent_id: Optional[str] = None) -> list[ConsentGrant]:
        """Consent grants, of one agent or all (expired ones until revoked)."""
        return await _Op(
            self._core.list_consents(agent_id or ""), lambda d: [ConsentGrant._from(g) for g in d]
        ).future()

    async def filter_tools(self, agent_id: str, tools: Sequence[str]) -> list[str]:
        """The tools, of ``tools``, that the agent may see, in the given order."""
        return await _Op(self._core.filter_tools(agent_id, list(tools)), _strs).future()

    async def heartbeat(
        self,
        agent_id: str,
        session_id: Optional[str] = None,
        *,
        status: Optional[Presence] = None,
        metadata: Optional[Mapping[str, str]] = None,
        operator: Optional[str] = None,
    ) -> HeartbeatResult:
        """Report that the agent is alive ("live" unless ``status`` says otherwise).
        The answer says whether a halt applies; a heartbeat never clears one."""
        return await self._heartbeat(agent_id, session_id, status, metadata, operator).future()

    async def budget(
        self, agent_id: Optional[str] = None, session_id: Optional[str] = None
    ) -> list[Budget]:
        """Spent, reserved and remaining per budget window that applies to the agent
        (and session); with no agent, the global and category budgets."""
        return await _Op(
            self._core.get_budgets(agent_id or "", session_id or ""),
            lambda d: [Budget._from(b) for b in d],
        ).future()

    async def list_agents(self) -> list[Agent]:
        """Every agent Arbiter has seen, ordered by id."""
        return await _Op(self._core.list_agents(), lambda d: [Agent._from(a) for a in d]).future()

    async def get_policy(self) -> PolicyInfo:
        """The policy bundle being served and its load history."""
        return await self._get_policy().future()

    async def create_principal(
        self,
        name: str,
        roles: Sequence[Role],
        *,
        agents: Sequence[str] = (),
        tls_identity: Optional[str] = None,
    ) -> NewPrincipal:
        """Create a principal with an API key (returned only here). The first
        principal switches authentication on for good. ``agents`` are the agent ids or
        globs an "agent" principal may act for. With ``tls_identity`` (a URI SAN such
        as ``"spiffe://example.org/bot"``, ``"dns:NAME"`` or ``"cn:NAME"``) the
        principal is bound to a client certificate instead: it gets no API key
        (``api_key`` is None) and authenticates only over mTLS."""
        return await self._create_principal(name, roles, agents, tls_identity).future()

    async def list_principals(self) -> list[Principal]:
        """Every principal (never their keys)."""
        return await _Op(
            self._core.list_principals(), lambda d: [Principal._from(p) for p in d]
        ).future()

    async def revoke_principal(self, name: str) -> Principal:
        """Revoke a principal; its key stops working at once."""
        return await _Op(self._core.revoke_principal(name), Principal._from).future()

    async def ping(self) -> None:
        """An empty round trip: raises ``Unavailable`` when Arbiter cannot be reached."""
        return await _Op(self._core.ping(), _nothing).future()
