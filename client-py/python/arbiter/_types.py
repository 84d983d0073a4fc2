"""Typed results. Each is built from the plain dict the Rust core returns."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal, Optional, Union

from arbiter import _arbiter
from arbiter._money import micros_to_usd

Outcome = Literal["allow", "deny", "pending_approval"]
"""What Arbiter decided."""
ActionOutcome = Literal["success", "failure", "error"]
"""How an action ended: it succeeded, it ran and failed, or it could not run."""
HaltMode = Literal["halt_noncritical", "halt_all", "emergency"]
"""How much a halt stops: everything but critical actions, only critical ones pass, nothing."""
HaltScope = Literal["global", "agent", "session"]
"""Where a halt applies."""
ApprovalState = Literal["pending", "granted", "denied", "expired", "consumed"]
"""State of a human approval."""
Presence = Literal["live", "idle", "unresponsive"]
"""An agent's presence status."""
Role = Literal["agent", "operator", "admin", "auditor"]
"""Roles a principal can hold."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class TrustLevel(enum.IntEnum):
    """Trust levels, lowest to highest; comparable (``L3_ACT_APPROVE > L2_SUGGEST``).

    The int value is the level: ``TrustLevel(3) is TrustLevel.L3_ACT_APPROVE``.
    """

    L0_OBSERVER = 0
    """May observe only."""
    L1_MONITOR = 1
    """May monitor and report."""
    L2_SUGGEST = 2
    """May suggest actions for a human to take."""
    L3_ACT_APPROVE = 3
    """May act, with human approval for actions above its level."""
    L4_ACT_REPORT = 4
    """May act and report afterwards."""
    L5_AUTONOMOUS = 5
    """Fully autonomous within its scope."""

    @classmethod
    def parse(cls, level: Union[TrustLevel, int, str], name: str = "level") -> TrustLevel:
        """Accept a member, its level as an int (0 to 5), or its name in any case:
        the full name (``"L3_ACT_APPROVE"``), the short form (``"l3"``) or the
        proto name (``"TRUST_LEVEL_L3_ACT_APPROVE"``). Anything else (other ints,
        bools, floats, digit strings, None) raises ``ValueError`` naming ``name``,
        the parameter it came from."""
        if isinstance(level, TrustLevel):
            return level
        if isinstance(level, int) and not isinstance(level, bool):
            if level in cls._value2member_map_:
                return cls(level)
        elif isinstance(level, str):
            wanted = level.strip().upper()
            if wanted.startswith("TRUST_LEVEL_"):
                wanted = wanted[len("TRUST_LEVEL_") :]
            for member in cls:
                if wanted in (member.name, member.name.split("_", 1)[0]):
                    return member
        raise ValueError(
            f"{name}: unknown trust level {level!r}; use an int 0 to 5, a TrustLevel, or a name "
            "such as 'L3' or 'L3_ACT_APPROVE' (any case)"
        )


# The proto enum has TRUST_LEVEL_UNSPECIFIED = 0, so level n travels as n + 1. These two
# functions are the only place that knows it: the Rust core passes proto values through.
def _trust_to_wire(level: TrustLevel) -> int:
    return int(level) + 1


def _trust(value: int) -> Optional[TrustLevel]:
    """A proto TrustLevel value as a level; None for UNSPECIFIED (or a value this
    package does not know)."""
    level = value - 1
    return TrustLevel(level) if level in TrustLevel._value2member_map_ else None


def _time(micros: Optional[int]) -> Optional[datetime]:
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


def _micros(when: Optional[datetime]) -> Optional[int]:
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError("datetime: must be timezone-aware (e.g. datetime.now(timezone.utc))")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_HALT_MODES: dict[int, str] = {1: "halt_noncritical", 2: "halt_all", 3: "emergency"}
_HALT_SCOPES: dict[int, str] = {1: "global", 2: "agent", 3: "session"}
_APPROVAL_STATES: dict[int, str] = {
    1: "pending",
    2: "granted",
    3: "denied",
    4: "expired",
    5: "consumed",
}
_PRESENCE: dict[int, str] = {1: "live", 2: "idle", 3: "unresponsive"}
_ROLES: dict[int, str] = {1: "agent", 2: "operator", 3: "admin", 4: "auditor"}
_FAULTS: dict[int, str] = {
    1: "gap",
    2: "mac_mismatch",
    3: "seq_mismatch",
    4: "not_canonical",
    5: "unknown_key",
    6: "column_mismatch",
    7: "truncated",
    8: "tree_mismatch",
}


@dataclass(frozen=True)
class Reason:
    """One pipeline stage's verdict."""

    stage: str
    """Pipeline stage ("halt", "trust", "budget", "consent", "scope", "loop", "approval")."""
    code: str
    """Stable machine-readable code, e.g. "budget.exceeded"; "ok" when the stage passed."""
    message: str
    """Human-readable explanation, safe to show to an operator."""
    passed: bool = False
    """True when this stage let the action through."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class Receipt:
    """A verifiable receipt of a decision's audit entry (see docs/audit-format.md)."""

    entry: str
    """Canonical entry bytes (RFC 8785 JSON)."""
    mac: str
    """Chain MAC of the entry, lower-case hex."""
    inclusion_proof: list[str]
    """Merkle sibling hashes from leaf to root, lower-case hex."""
    checkpoint: str
    """Signed checkpoint (C2SP signed note) the proof is against."""


@dataclass(frozen=True)
class Decision:
    """The answer to an evaluate. A denial is a value: check ``allowed`` before acting,
    or call ``raise_for_outcome()`` to turn anything but ALLOW into an exception."""

    outcome: Outcome
    """ "allow", "deny" or "pending_approval"."""
    reasons: list[Reason]
    """Stage verdicts in pipeline order, up to the deciding one (all of them with explain)."""
    decision_id: str
    """Pass to ``record`` after acting."""
    approval_id: Optional[str]
    """The approval to wait for when the outcome is "pending_approval"."""
    audit_seq: int
    """Sequence number of the decision's audit entry."""
    policy_version: str
    """Version hash of the policy bundle that decided ("sha256:<hex>")."""
    action_digest: str
    """Canonical digest of the action ("sha256:<hex>")."""
    reservation_id: Optional[str]
    """Budget reservation held until ``record`` settles it."""
    reservation_expires_at: Optional[datetime]
    """When the reservation lapses unless recorded."""
    reserved_micro_usd: int
    """Amount reserved against every applicable budget, in micro-USD."""
    reserved_tokens: int
    """Tokens reserved against every applicable budget."""
    receipt: Optional[Receipt]
    """The receipt, when asked for with ``receipt=True``."""
    replayed: bool
    """True when the server answered from its idempotency cache (same request id)."""

    @property
    def allowed(self) -> bool:
        """True only for ALLOW."""
        return self.outcome == "allow"

    @property
    def denied(self) -> bool:
        """True for DENY."""
        return self.outcome == "deny"

    @property
    def pending(self) -> bool:
        """True for PENDING_APPROVAL."""
        return self.outcome == "pending_approval"

    @property
    def halted(self) -> bool:
        """True when a halt (kill switch) decided the denial."""
        reason = self.reason
        return self.denied and reason is not None and reason.stage == "halt"

    @property
    def reason(self) -> Optional[Reason]:
        """The deciding reason: the first failed stage, or the first reason when all passed."""
        for reason in self.reasons:
            if not reason.passed:
                return reason
        return self.reasons[0] if self.reasons else None

    @property
    def reserved_usd(self) -> Decimal:
        """The reserved amount in exact dollars."""
        return micros_to_usd(self.reserved_micro_usd)

    def raise_for_outcome(self) -> Decision:
        """Return this decision when it is ALLOW; otherwise raise ``Halted``,
        ``Denied`` or ``ApprovalRequired``, each carrying this decision."""
        if self.allowed:
            return self
        reason = self.reason
        text = str(reason) if reason is not None else self.outcome
        if self.pending:
            raise _error(
                _arbiter.ApprovalRequired,
                "APPROVAL_REQUIRED",
                f"approval required ({self.approval_id}): {text}",
                decision=self,
                approval_id=self.approval_id,
                reason=None if reason is None else reason.code,
            )
        code = None if reason is None else reason.code
        if self.halted:
            raise _error(_arbiter.Halted, "HALTED", f"halted: {text}", decision=self, reason=code)
        raise _error(_arbiter.Denied, "DENIED", f"denied: {text}", decision=self, reason=code)

    @classmethod
    def _from(cls, d: dict[str, Any]) -> Decision:
        receipt = d["receipt"]
        return cls(
            outcome=d["outcome"],
            reasons=[Reason(**r) for r in d["reasons"]],
            decision_id=d["decision_id"],
            approval_id=d["approval_id"],
            audit_seq=d["audit_seq"],
            policy_version=d["policy_version"],
            action_digest=d["action_digest"],
            reservation_id=d["reservation_id"],
            reservation_expires_at=_time(d["reservation_expires_at"]),
            reserved_micro_usd=d["reserved"]["micro_usd"],
            reserved_tokens=d["reserved"]["tokens"],
            receipt=None if receipt is None else Receipt(**receipt),
            replayed=d["replayed"],
        )


def _error(cls: type[Exception], code: str, message: str, **attrs: Any) -> Exception:
    """An exception of ``cls`` with ``code``, ``message``, ``field``, ``reason`` and
    ``attrs`` set."""
    error = cls(message)
    error.code = code  # type: ignore[attr-defined]
    error.message = message  # type: ignore[attr-defined]
    error.field = None  # type: ignore[attr-defined]
    error.reason = None  # type: ignore[attr-defined]
    for name, value in attrs.items():
        setattr(error, name, value)
    return error


@dataclass(frozen=True)
class RecordResult:
    """What ``record`` settled."""

    audit_seq: int
    """Sequence number of the record's audit entry."""
    actual_micro_usd: int
    """Actual cost charged to the budgets, in micro-USD."""
    actual_tokens: int
    """Actual tokens charged."""
    reserved_micro_usd: int
    """What had been reserved, in micro-USD."""
    reserved_tokens: int
    """Tokens that had been reserved."""
    overspend: bool
    """True when the actual cost exceeded the reservation."""
    duplicate: bool
    """True when this decision had been recorded already (the first answer is returned)."""
    reservation_expired: bool
    """True when the reservation had lapsed before the record arrived."""

    @property
    def actual_usd(self) -> Decimal:
        """The actual cost in exact dollars."""
        return micros_to_usd(self.actual_micro_usd)

    @property
    def reserved_usd(self) -> Decimal:
        """The reserved amount in exact dollars."""
        return micros_to_usd(self.reserved_micro_usd)

    @classmethod
    def _from(cls, d: dict[str, Any]) -> RecordResult:
        return cls(
            audit_seq=d["audit_seq"],
            actual_micro_usd=d["actual"]["micro_usd"],
            actual_tokens=d["actual"]["tokens"],
            reserved_micro_usd=d["reserved"]["micro_usd"],
            reserved_tokens=d["reserved"]["tokens"],
            overspend=d["overspend"],
            duplicate=d["duplicate"],
            reservation_expired=d["reservation_expired"],
        )


@dataclass(frozen=True)
class Approval:
    """A request for human approval of one action."""

    approval_id: str
    """Approval id."""
    agent_id: str
    """Agent that asked."""
    session_id: Optional[str]
    """Session it asked from."""
    action_digest: str
    """Action digest the approval is bound to."""
    policy_version: str
    """Policy version the approval is bound to."""
    state: ApprovalState
    """ "pending", "granted", "denied", "expired" or "consumed"."""
    reason: str
    """Why policy asked for approval."""
    action_summary: str
    """Human-readable summary of the action."""
    requested_at: Optional[datetime]
    """When it was requested."""
    expires_at: Optional[datetime]
    """When it expires if nobody acts."""
    decided_by: Optional[str]
    """Principal who granted or denied it."""
    decision_reason: Optional[str]
    """Reason the approver gave."""
    decided_at: Optional[datetime]
    """When it was granted or denied."""
    action: Optional[dict[str, Any]] = None
    """The action as its audit entry records it (tool, api, model, estimate, data,
    category, budget and ``arguments``, sensitive argument values as digests): what the
    approver is asked to allow. None for approvals made before arguments existed."""

    @classmethod
    def _from(cls, d: dict[str, Any]) -> Approval:
        return cls(
            approval_id=d["approval_id"],
            agent_id=d["agent_id"],
            session_id=d["session_id"],
            action_digest=d["action_digest"],
            policy_version=d["policy_version"],
            state=_APPROVAL_STATES.get(d["state"], "pending"),  # type: ignore[arg-type]
            reason=d["reason"],
            action_summary=d["action_summary"],
            requested_at=_time(d["requested_at"]),
            expires_at=_time(d["expires_at"]),
            decided_by=d["decided_by"],
            decision_reason=d["decision_reason"],
            decided_at=_time(d["decided_at"]),
            action=json.loads(d["action_json"]) if d.get("action_json") else None,
        )


@dataclass(frozen=True)
class ApprovalPage:
    """One page of approvals, newest first."""

    approvals: list[Approval]
    """The approvals."""
    next_page_token: Optional[str]
    """Pass as ``page_token`` for the next page; None on the last page."""


@dataclass(frozen=True)
class Halt:
    """An engaged halt (kill switch)."""

    scope: HaltScope
    """ "global", "agent" or "session"."""
    agent_id: Optional[str]
    """Agent, for agent and session halts."""
    session_id: Optional[str]
    """Session, for session halts."""
    mode: HaltMode
    """How much it stops."""
    reason: str
    """Why it was engaged."""
    engaged_by: str
    """Principal who engaged it ("watchdog" for automatic halts)."""
    engaged_at: Optional[datetime]
    """When it was engaged."""

    @classmethod
    def _from(cls, d: dict[str, Any]) -> Halt:
        return cls(
            scope=_HALT_SCOPES.get(d["scope"], "global"),  # type: ignore[arg-type]
            agent_id=d["agent_id"],
            session_id=d["session_id"],
            mode=_HALT_MODES.get(d["mode"], "halt_all"),  # type: ignore[arg-type]
            reason=d["reason"],
            engaged_by=d["engaged_by"],
            engaged_at=_time(d["engaged_at"]),
        )


@dataclass(frozen=True)
class HeartbeatResult:
    """The answer to a heartbeat."""

    halted: bool
    """True when a halt applies to the agent; heartbeats never clear it."""
    halt: Optional[Halt]
    """The halt, when one applies."""


@dataclass(frozen=True)
class TrustAssignment:
    """A trust assignment."""

    agent_id: str
    """Agent."""
    scope: Optional[str]
    """Tool name or budget category it applies to; None for all actions."""
    level: Optional[TrustLevel]
    """Assigned level."""
    assigned_by: str
    """Principal who assigned it."""
    assigned_at: Optional[datetime]
    """When it was assigned."""

    @classmethod
    def _from(cls, d: dict[str, Any]) -> TrustAssignment:
        return cls(
            agent_id=d["agent_id"],
            scope=d["scope"],
            level=_trust(d["level"]),
            assigned_by=d["assigned_by"],
            assigned_at=_time(d["assigned_at"]),
        )


@dataclass(frozen=True)
class TrustInfo:
    """An agent's effective trust level and how it was derived."""

    effective_level: Optional[TrustLevel]
    """Effective level now, after scope selection and inactivity decay."""
    assignment: Optional[TrustAssignment]
    """The assignment used; None when the policy default applies."""
    source: str
    """ "assigned", "scoped", "default" or "decayed"."""


@dataclass(frozen=True)
class ConsentGrant:
    """A consent grant."""

    agent_id: str
    """Agent."""
    data_type: str
    """Data type."""
    purpose: Optional[str]
    """Purpose; None means every purpose."""
    granted_by: str
    """Principal who granted it."""
    granted_at: Optional[datetime]
    """When it was granted."""
    expires_at: Optional[datetime]
    """When it expires; None for never."""

    @classmethod
    def _from(cls, d: dict[str, Any]) -> ConsentGrant:
        return cls(
            agent_id=d["agent_id"],
            data_type=d["data_type"],
            purpose=d["purpose"],
            granted_by=d["granted_by"],
            granted_at=_time(d["granted_at"]),
            expires_at=_time(d["expires_at"]),
        )


@dataclass(frozen=True)
class BudgetAmount:
    """Spent, reserved and remaining for one dimension of one budget, as integers in
    ``unit`` ("micro_usd", "tokens", "calls" or "session_seconds")."""

    unit: str
    """ "micro_usd", "tokens", "calls" or "session_seconds"."""
    cap: int
    """Cap from policy."""
    spent: int
    """Settled spend in the current window."""
    reserved: int
    """Held by open reservations."""
    remaining: int
    """cap - spent - reserved, never below 0."""

    def _usd(self, micros: int) -> Decimal:
        if self.unit != "micro_usd":
            raise ValueError(f"budget amount is in {self.unit}, not money")
        return micros_to_usd(micros)

    @property
    def cap_usd(self) -> Decimal:
        """The cap in exact dollars (money amounts only; ValueError otherwise)."""
        return self._usd(self.cap)

    @property
    def spent_usd(self) -> Decimal:
        """Spend in exact dollars (money amounts only)."""
        return self._usd(self.spent)

    @property
    def reserved_usd(self) -> Decimal:
        """Reservations in exact dollars (money amounts only)."""
        return self._usd(self.reserved)

    @property
    def remaining_usd(self) -> Decimal:
        """What remains in exact dollars (money amounts only)."""
        return self._usd(self.remaining)


@dataclass(frozen=True)
class Budget:
    """One budget window's state."""

    name: str
    """Budget name from policy."""
    scope: str
    """ "agent", "session", "category" or "global"."""
    scope_key: str
    """Counter key within the scope."""
    period: str
    """ "hour", "day", "week", "month", "year" or "lifetime"."""
    window_start: Optional[datetime]
    """Start of the current window (None for lifetime)."""
    window_end: Optional[datetime]
    """End of the current window (None for lifetime)."""
    amounts: list[BudgetAmount]
    """One entry per capped dimension."""

    def amount(self, unit: str) -> Optional[BudgetAmount]:
        """The amount in ``unit``, or None when this budget does not cap it."""
        for amount in self.amounts:
            if amount.unit == unit:
                return amount
        return None

    @property
    def usd(self) -> Optional[BudgetAmount]:
        """The money dimension (unit "micro_usd"), if capped."""
        return self.amount("micro_usd")

    @classmethod
    def _from(cls, d: dict[str, Any]) -> Budget:
        return cls(
            name=d["name"],
            scope=d["scope"],
            scope_key=d["scope_key"],
            period=d["period"],
            window_start=_time(d["window_start"]),
            window_end=_time(d["window_end"]),
            amounts=[BudgetAmount(**a) for a in d["amounts"]],
        )


@dataclass(frozen=True)
class Agent:
    """An agent Arbiter has seen."""

    agent_id: str
    """Agent id."""
    trust_level: Optional[TrustLevel]
    """Effective trust level now."""
    first_seen: Optional[datetime]
    """First time it was seen."""
    last_seen: Optional[datetime]
    """Last evaluate, record or heartbeat."""
    presence: Optional[Presence]
    """ "live", "idle" or "unresponsive"; None when never reported."""
    operator: Optional[str]
    """Registered operator (principal name)."""
    halted: bool
    """True when a halt applies to it."""

    @classmethod
    def _from(cls, d: dict[str, Any]) -> Agent:
        return cls(
            agent_id=d["agent_id"],
            trust_level=_trust(d["trust_level"]),
            first_seen=_time(d["first_seen"]),
            last_seen=_time(d["last_seen"]),
            presence=_PRESENCE.get(d["presence"]),  # type: ignore[arg-type]
            operator=d["operator"],
            halted=d["halted"],
        )


@dataclass(frozen=True)
class PolicyLoad:
    """One attempt to load a policy bundle."""

    version: str
    """Version hash ("sha256:<hex>")."""
    source: str
    """Where it came from (file path)."""
    loaded_at: Optional[datetime]
    """When the load was attempted."""
    accepted: bool
    """True when the bundle was accepted and served."""
    error: Optional[str]
    """Validation error when rejected."""

    @classmethod
    def _from(cls, d: dict[str, Any]) -> PolicyLoad:
        return cls(
            version=d["version"],
            source=d["source"],
            loaded_at=_time(d["loaded_at"]),
            accepted=d["accepted"],
            error=d["error"],
        )


@dataclass(frozen=True)
class PolicyInfo:
    """The policy bundle being served and its load history."""

    current: Optional[PolicyLoad]
    """The bundle being served."""
    history: list[PolicyLoad]
    """Earlier loads, newest first."""
    agent_rules: int
    """Number of agent rules in the current bundle."""
    budgets: int
    """Number of budgets in the current bundle."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    """Unique name."""
    roles: list[Role]
    """Roles held."""
    agents: list[str]
    """Agent ids or globs it may act for (agent role)."""
    created_at: Optional[datetime]
    """When it was created."""
    revoked_at: Optional[datetime]
    """When it was revoked; None while active."""
    tls_identity: Optional[str] = None
    """The client-certificate identity it authenticates with over mTLS
    (``spiffe://...``, ``dns:NAME`` or ``cn:NAME``); None for an API-key principal."""

    @classmethod
    def _from(cls, d: dict[str, Any]) -> Principal:
        return cls(
            name=d["name"],
            roles=[_ROLES[r] for r in d["roles"] if r in _ROLES],  # type: ignore[misc]
            agents=d["agents"],
            created_at=_time(d["created_at"]),
            revoked_at=_time(d["revoked_at"]),
            tls_identity=d["tls_identity"],
        )


@dataclass(frozen=True)
class NewPrincipal:
    """A created principal and its API key, which is shown only this once."""

    principal: Principal
    """The stored principal."""
    api_key: Optional[str] = field(repr=False)
    """The API key; only its hash is stored. None for a principal bound to a
    client-certificate identity (it authenticates only over mTLS)."""


@dataclass(frozen=True)
class DelegationToken:
    """A delegation token issued by ``delegate``: pass it (or ``.token``) as
    ``delegation_token=`` to ``evaluate``/``guard`` of the subject agent, or as
    ``parent_token=`` to ``delegate`` to narrow it further. It is a bearer credential
    until ``expires_at``: the token text is kept out of ``repr`` (and so out of logs)."""

    token: str = field(repr=False)
    """The signed token (``arbiter-dt1.<payload>.<signature>``)."""
    expires_at: datetime
    """When it stops being accepted (never later than a parent token's expiry)."""

    @property
    def expired(self) -> bool:
        """True once ``expires_at`` has passed (by this machine's clock)."""
        return datetime.now(timezone.utc) >= self.expires_at

    def __str__(self) -> str:
        return self.token

    @classmethod
    def _from(cls, d: dict[str, Any]) -> DelegationToken:
        expires_at = _time(d["expires_at"])
        assert expires_at is not None, "the server always sets expires_at"
        return cls(token=d["token"], expires_at=expires_at)


@dataclass(frozen=True)
class AuditEntry:
    """One audit log entry."""

    seq: int
    """Gapless sequence number, from 1."""
    kind: str
    """Entry kind, e.g. "evaluate", "record", "trust.set"."""
    time: Optional[datetime]
    """When it was written."""
    agent_id: Optional[str]
    """Agent it concerns."""
    session_id: Optional[str]
    """Session it concerns."""
    outcome: Optional[str]
    """Outcome, e.g. "allow", "deny", "success"."""
    key_id: str
    """Id of the HMAC key that chains it."""
    canonical: str
    """Canonical entry bytes (RFC 8785 JSON) exactly as hashed."""
    mac: str
    """HMAC-SHA256 chain value, lower-case hex."""

    @classmethod
    def _from(cls, d: dict[str, Any]) -> AuditEntry:
        return cls(
            seq=d["seq"],
            kind=d["kind"],
            time=_time(d["time"]),
            agent_id=d["agent_id"],
            session_id=d["session_id"],
            outcome=d["outcome"],
            key_id=d["key_id"],
            canonical=d["canonical"],
            mac=d["mac"],
        )


@dataclass(frozen=True)
class AuditPage:
    """One page of audit entries, in sequence order."""

    entries: list[AuditEntry]
    """The entries."""
    next_page_token: Optional[str]
    """Pass as ``page_token`` for the next page; None on the last page."""


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of verifying the audit chain."""

    ok: bool
    """True when every checked entry verified."""
    checked: int
    """Entries checked."""
    first_bad_seq: Optional[int]
    """First bad sequence number, None when ok."""
    fault: Optional[str]
    """Kind of fault ("gap", "mac_mismatch", ...), None when ok."""
    message: Optional[str]
    """Explanation of the fault."""
    head_seq: int
    """Highest sequence number in the log."""
    head_mac: str
    """MAC of the head entry, lower-case hex."""

    @classmethod
    def _from(cls, d: dict[str, Any]) -> VerifyResult:
        return cls(
            ok=d["ok"],
            checked=d["checked"],
            first_bad_seq=d["first_bad_seq"],
            fault=_FAULTS.get(d["fault"]),
            message=d["message"],
            head_seq=d["head_seq"],
            head_mac=d["head_mac"],
        )


@dataclass(frozen=True)
class Checkpoint:
    """A signed checkpoint of the audit Merkle tree."""

    checkpoint: str
    """C2SP signed-note text."""
    tree_size: int
    """Tree size it commits to."""
    root_hash: str
    """Root hash, lower-case hex."""


@dataclass(frozen=True)
class InclusionProof:
    """Proof that one entry is in the tree of a given size."""

    leaf_index: int
    """Leaf index (seq - 1)."""
    tree_size: int
    """Tree size proved against."""
    hashes: list[str]
    """Sibling hashes from leaf to root, lower-case hex."""


@dataclass(frozen=True)
class ConsistencyProof:
    """Proof that a smaller tree is a prefix of a larger one."""

    from_size: int
    """Older size."""
    to_size: int
    """Newer size."""
    hashes: list[str]
    """Proof hashes, lower-case hex."""
