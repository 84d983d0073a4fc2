"""The Rust core of the ``arbiter`` package (private: use the names in ``arbiter``).

``Core`` has one method per RPC. Each returns a ``Pending`` call that has not started:
``wait()`` runs it with the GIL released, ``future()`` runs it for asyncio. Results are
plain dicts and lists that the facade turns into typed objects.
"""

from typing import Any, Optional, final

__all__ = [
    "AlreadyExists",
    "ApprovalDenied",
    "ApprovalRequired",
    "ApprovalTimeout",
    "ArbiterError",
    "Core",
    "DeadlineExceeded",
    "Denied",
    "FailedPrecondition",
    "Halted",
    "InvalidArgument",
    "NotFound",
    "Pending",
    "PermissionDenied",
    "Stream",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]

__version__: str

class ArbiterError(Exception):
    """Base class of every error raised by the arbiter package."""

    code: str
    """The gRPC code name (e.g. "UNAVAILABLE"), or "DENIED", "HALTED",
    "APPROVAL_REQUIRED", "APPROVAL_DENIED", "APPROVAL_TIMEOUT" for decision errors."""
    message: str
    """What went wrong."""
    field: Optional[str]
    """The offending request field named by the server, if any."""
    reason: Optional[str]
    """The machine-readable refusal code, if any: from the server's
    ``google.rpc.ErrorInfo`` (e.g. "delegation.escalation", "halt.engaged" on a
    refused ``delegate``), or the deciding reason's code for ``Denied``, ``Halted``
    and ``ApprovalRequired`` (e.g. "delegation.out_of_scope")."""

class Unavailable(ArbiterError):
    """Arbiter could not be asked: connection refused, unreachable, the TLS handshake
    failed, or the client's circuit breaker is open."""

class DeadlineExceeded(Unavailable):
    """Arbiter did not answer within the call's deadline."""

class InvalidArgument(ArbiterError):
    """The server refused a request field; `field` names it when the server said which."""

class PermissionDenied(ArbiterError):
    """The caller's principal may not make this call, or the server refused it; `reason` holds the refusal code (e.g. "delegation.escalation") when the server gave one."""  # noqa: E501

class Unauthenticated(PermissionDenied):
    """No valid API key was presented to a server that requires one."""

class NotFound(ArbiterError):
    """The named approval, grant, principal or entry does not exist."""

class AlreadyExists(ArbiterError):
    """The thing to create exists already (e.g. a principal name)."""

class FailedPrecondition(ArbiterError):
    """The request cannot apply in the current state (e.g. deciding an approval twice)."""

class Denied(ArbiterError):
    """Arbiter denied the action; `decision` holds the Decision and its reasons."""

    decision: Any
    """The ``arbiter.Decision``."""

class Halted(Denied):
    """Arbiter denied the action because a halt (kill switch) applies."""

class ApprovalRequired(ArbiterError):
    """The action needs human approval first; `approval_id` names the approval."""

    approval_id: str
    """The approval to wait for or show to a human."""
    decision: Any
    """The PENDING_APPROVAL ``arbiter.Decision``."""

class ApprovalDenied(ArbiterError):
    """A human denied the approval; `approval` holds it, with who decided and why."""

    approval_id: str
    """The denied approval's id."""
    approval: Any
    """The denied ``arbiter.Approval``."""

class ApprovalTimeout(ArbiterError):
    """No grant arrived before the deadline, or the approval expired."""

    approval_id: str
    """The approval that was waited for."""
    approval: Any
    """Its last state seen (an ``arbiter.Approval``), or None."""

@final
class Pending:
    """One call, started by `wait()` (blocking, GIL released) or `future()` (asyncio)."""

    def wait(self) -> Any:
        """Runs the call and blocks until it finishes, with the GIL released."""
    def future(self) -> Any:
        """Runs the call on the runtime and returns an asyncio future of the running
        event loop that resolves with its result. Cancelling the future cancels the call."""

@final
class Stream:
    """A server stream (audit tail, export): `next()` blocks, `next_future()` is for
    asyncio. Both signal the end (StopIteration / StopAsyncIteration) once the
    stream has ended or was closed."""

    def next(self) -> Any:
        """The next item, blocking with the GIL released; raises StopIteration at the end."""
    def next_future(self) -> Any:
        """An asyncio future of the next item; it raises StopAsyncIteration at the end."""
    def close(self) -> None:
        """Ends the stream and the server call behind it; a read waiting in another
        thread or task ends too, and later reads end at once."""

@final
class Core:
    """A connection to one Arbiter server. Cheap to share: every thread and task
    may call it at once."""

    def __new__(
        cls,
        endpoint: str,
        *,
        api_key: Optional[str] = None,
        timeout: float = 5.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        breaker_threshold: int = 5,
        breaker_cool_down: float = 2.0,
        tls_ca: Optional[bytes] = None,
        tls_cert: Optional[bytes] = None,
        tls_key: Optional[bytes] = None,
        tls_domain: Optional[str] = None,
    ) -> Core: ...
    @property
    def endpoint(self) -> str:
        """The endpoint as given."""
    @property
    def timeout(self) -> float:
        """The default deadline of one call, in seconds."""
    @property
    def circuit_state(self) -> Optional[str]:
        """ "closed", "open", "half_open", or None when the breaker is disabled."""
    def evaluate(
        self,
        agent_id: str,
        *,
        session_id: Optional[str] = None,
        tool: Optional[str] = None,
        api: Optional[tuple[str, str]] = None,
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        cost_micro_usd: Optional[int] = None,
        tokens: Optional[int] = None,
        data: list[tuple[str, Optional[str]]] = ...,
        category: Optional[str] = None,
        budget: Optional[str] = None,
        min_trust: Optional[int] = None,
        approval_id: Optional[str] = None,
        delegation_token: Optional[str] = None,
        context: dict[str, str] = ...,
        arguments_json: Optional[str] = None,
        explain: bool = False,
        receipt: bool = False,
        request_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Pending:
        """Evaluate: decides whether an action may proceed. `min_trust` is a proto
        TrustLevel value (level + 1); the facade converts."""
    def record(
        self,
        decision_id: str,
        *,
        outcome: int = 1,
        model: Optional[str] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
        cost_micro_usd: Optional[int] = None,
        duration_ms: Optional[int] = None,
        output_digest: Optional[str] = None,
        metadata: dict[str, str] = ...,
        request_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Pending:
        """Record: reports what an allowed action did and cost."""
    def filter_tools(self, agent_id: str, tools: list[str]) -> Pending:
        """FilterTools: the subset of `tools` the agent may see."""
    def heartbeat(
        self,
        agent_id: str,
        *,
        session_id: str = ...,
        status: int = 0,
        metadata: dict[str, str] = ...,
        operator: str = ...,
    ) -> Pending:
        """Heartbeat: reports that an agent is alive."""
    def delegate(
        self,
        parent_agent_id: str,
        subject_agent_id: str,
        *,
        tools: list[str] = ...,
        apis: list[str] = ...,
        ttl_seconds: int = 300,
        max_depth: int = 0,
        parent_token: str = ...,
    ) -> Pending:
        """Delegate: issues a delegation token from the parent's scope (or from
        `parent_token` when re-delegating). Returns `{"token", "expires_at"}`
        (`expires_at` in microseconds since the Unix epoch). Sent once."""
    def ping(self) -> Pending:
        """Ping: an empty round trip."""
    def approve(self, approval_id: str, grant: bool, reason: str) -> Pending:
        """Approve: grants or denies a pending approval."""
    def get_approval(self, approval_id: str) -> Pending:
        """GetApproval: reads one approval."""
    def list_approvals(
        self, *, agent_id: str = ..., state: int = 0, page_size: int = 0, page_token: str = ...
    ) -> Pending:
        """ListApprovals: one page of approvals, newest first."""
    def wait_for_approval(self, approval_id: str, timeout: float) -> Pending:
        """Watches an approval until it is final or `timeout` seconds pass. Returns
        `{"approval": <last state seen or None>, "timed_out": bool}`; the facade
        decides what to raise."""
    def halt(self, scope: int, agent_id: str, session_id: str, mode: int, reason: str) -> Pending:
        """Halt: engages a halt. `scope` is a HaltScope value, `mode` a HaltMode value."""
    def resume(self, scope: int, agent_id: str, session_id: str, reason: str) -> Pending:
        """Resume: lifts a halt."""
    def list_halts(self) -> Pending:
        """ListHalts: the engaged halts."""
    def set_trust(self, agent_id: str, level: int, scope: str, reason: str) -> Pending:
        """SetTrust: assigns a trust level. `level` is a proto TrustLevel value
        (level + 1); the facade converts."""
    def get_trust(self, agent_id: str, scope: str) -> Pending:
        """GetTrust: an agent's effective trust level."""
    def list_trust(self, agent_id: str) -> Pending:
        """ListTrust: trust assignments."""
    def grant_consent(
        self, agent_id: str, data_type: str, purpose: str, expires_at: Optional[int] = None
    ) -> Pending:
        """GrantConsent. `expires_at` is in microseconds since the Unix epoch."""
    def revoke_consent(self, agent_id: str, data_type: str, purpose: str) -> Pending:
        """RevokeConsent: revokes exactly one grant."""
    def list_consents(self, agent_id: str) -> Pending:
        """ListConsents: consent grants."""
    def get_budgets(self, agent_id: str, session_id: str) -> Pending:
        """GetBudgets: spent, reserved and remaining per applicable budget."""
    def list_agents(self) -> Pending:
        """ListAgents: every agent Arbiter has seen."""
    def get_policy(self) -> Pending:
        """GetPolicy: the policy bundle being served and its load history."""
    def create_principal(
        self, name: str, roles: list[int], agents: list[str], tls_identity: str = ...
    ) -> Pending:
        """CreatePrincipal: returns the principal and its API key (shown once; empty
        for a principal bound to a client-certificate identity `tls_identity`)."""
    def list_principals(self) -> Pending:
        """ListPrincipals: every principal (never their keys)."""
    def revoke_principal(self, name: str) -> Pending:
        """RevokePrincipal: its key stops working at once."""
    def query_audit(
        self,
        *,
        agent_id: str = ...,
        session_id: str = ...,
        kinds: list[str] = ...,
        outcome: str = ...,
        since: Optional[int] = None,
        until: Optional[int] = None,
        page_size: int = 0,
        page_token: str = ...,
    ) -> Pending:
        """QueryAudit: one page of entries. `since`/`until` are microseconds since the epoch."""
    def tail_audit(
        self,
        *,
        agent_id: str = ...,
        session_id: str = ...,
        kinds: list[str] = ...,
        outcome: str = ...,
        from_seq: int = 0,
    ) -> Stream:
        """TailAudit: a stream of entries from `from_seq` on (0: only new ones)."""
    def export_audit(self, *, from_seq: int = 0, to_seq: int = 0) -> Stream:
        """ExportAudit: a stream of JSONL lines."""
    def verify_audit(
        self, *, from_seq: int = 0, to_seq: int = 0, timeout: Optional[float] = None
    ) -> Pending:
        """VerifyAudit: checks the chain over a range."""
    def get_checkpoint(self) -> Pending:
        """GetCheckpoint: the latest signed checkpoint."""
    def get_inclusion_proof(self, seq: int, tree_size: int = 0) -> Pending:
        """GetInclusionProof: proves entry `seq` is in the tree of `tree_size` (0: latest)."""
    def get_consistency_proof(self, from_size: int, to_size: int = 0) -> Pending:
        """GetConsistencyProof: proves the tree of `from_size` is a prefix of `to_size`
        (0: latest)."""
