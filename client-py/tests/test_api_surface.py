"""The public surface: what __all__ promises exists, and everything is documented."""

from __future__ import annotations

import inspect
import typing

import arbiter

# typing aliases (Literal, Union) and plain constants carry no docstring of their own;
# they are documented where they are defined and in docs/python.md.
ALIASES = {
    "ActionOutcome",
    "ApprovalState",
    "HaltMode",
    "HaltScope",
    "Money",
    "Outcome",
    "Presence",
    "Role",
    "DEFAULT_APPROVAL_WAIT",
    "DEFAULT_DELEGATION_TTL",
    "MICROS_PER_USD",
    "__version__",
}


def test_every_public_name_and_method_has_a_docstring() -> None:
    undocumented = []
    for name in arbiter.__all__:
        obj = getattr(arbiter, name)
        if name in ALIASES:
            continue
        if not (obj.__doc__ or "").strip():
            undocumented.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                documentable = callable(member) or isinstance(member, property)
                if attr.startswith("_") or not documentable:
                    continue
                if not (getattr(member, "__doc__", "") or "").strip():
                    undocumented.append(f"{name}.{attr}")
    assert undocumented == []


def test_sync_and_async_clients_have_the_same_methods() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    assert public(arbiter.Client) == public(arbiter.AsyncClient)
    assert public(arbiter.Audit) == public(arbiter.AsyncAudit)
    not_calls = {"guard", "governed", "address", "timeout", "circuit_state"}
    for name in public(arbiter.Client) - not_calls:
        assert inspect.iscoroutinefunction(getattr(arbiter.AsyncClient, name)), name
        sync_params = inspect.signature(getattr(arbiter.Client, name)).parameters
        async_params = inspect.signature(getattr(arbiter.AsyncClient, name)).parameters
        assert list(sync_params) == list(async_params), name


def test_the_error_hierarchy() -> None:
    assert issubclass(arbiter.ArbiterError, Exception)
    for error in (
        arbiter.Unavailable,
        arbiter.InvalidArgument,
        arbiter.PermissionDenied,
        arbiter.Denied,
        arbiter.ApprovalRequired,
        arbiter.ApprovalDenied,
        arbiter.ApprovalTimeout,
        arbiter.NotFound,
    ):
        assert issubclass(error, arbiter.ArbiterError)
    assert issubclass(arbiter.Halted, arbiter.Denied)
    assert issubclass(arbiter.DeadlineExceeded, arbiter.Unavailable)
    assert issubclass(arbiter.Unauthenticated, arbiter.PermissionDenied)
    assert repr(arbiter.Denied("x")).startswith("Denied(")


def test_trust_levels_are_ordered_and_parse_from_names() -> None:
    assert arbiter.TrustLevel.L3_ACT_APPROVE > arbiter.TrustLevel.L2_SUGGEST
    assert arbiter.TrustLevel.parse("L3_ACT_APPROVE") is arbiter.TrustLevel.L3_ACT_APPROVE
    assert arbiter.TrustLevel.parse("trust_level_l5_autonomous") is arbiter.TrustLevel.L5_AUTONOMOUS
    assert arbiter.TrustLevel.parse("l0") is arbiter.TrustLevel.L0_OBSERVER
    assert arbiter.TrustLevel.parse(4) is arbiter.TrustLevel.L4_ACT_REPORT
    assert typing.get_args(arbiter.Outcome) == ("allow", "deny", "pending_approval")
