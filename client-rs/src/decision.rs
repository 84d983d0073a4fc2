//! The decision API: Evaluate before acting, Record after, plus FilterTools,
//! Heartbeat, Delegate and Ping.
//!
//! Evaluate and Record get typed builders that set a `request_id` (UUID v4)
//! unless the caller gives one, so a retry after `UNAVAILABLE` is answered
//! from the server's idempotency cache instead of spending twice.

use std::fmt;
use std::time::Duration;

use arbiter_proto::v1::decision_service_client::DecisionServiceClient;

use crate::call::Retry;
use crate::proto::{self, ActionOutcome, TrustLevel};
use crate::{Client, Error};

/// Reason code of a synthetic DENY made when Arbiter could not be asked
/// (transport failure, timeout, `UNAVAILABLE`, `INTERNAL`, open circuit breaker).
pub const CLIENT_UNAVAILABLE: &str = "client.unavailable";
/// Reason code of a synthetic DENY made when Arbiter refused the request itself
/// (e.g. `INVALID_ARGUMENT`, `PERMISSION_DENIED`, `UNAUTHENTICATED`).
pub const CLIENT_ERROR: &str = "client.error";
/// Reason code added when the server sent a decision value this client does not know.
pub const CLIENT_UNKNOWN_DECISION: &str = "client.unknown_decision";
/// Stage name of every reason the client makes up itself.
pub const CLIENT_STAGE: &str = "client";

/// What Arbiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionOutcome {
    /// The action may proceed.
    Allow,
    /// The action must not proceed; the reasons say why.
    Deny,
    /// A human must approve first; the decision carries an `approval_id`.
    PendingApproval,
}

impl fmt::Display for DecisionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecisionOutcome::Allow => "ALLOW",
            DecisionOutcome::Deny => "DENY",
            DecisionOutcome::PendingApproval => "PENDING_APPROVAL",
        })
    }
}

/// One pipeline stage's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reason {
    /// Pipeline stage (`"halt"`, `"trust"`, `"budget"`, ..., or `"client"` for
    /// reasons the client made up).
    pub stage: String,
    /// Stable machine-readable code, e.g. `"budget.exceeded"`; `"ok"` when the stage passed.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// True when this stage let the action through.
    pub passed: bool,
}

impl Reason {
    fn client(code: &str, message: String) -> Self {
        Self {
            stage: CLIENT_STAGE.to_owned(),
            code: code.to_owned(),
            message,
            passed: false,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<proto::Reason> for Reason {
    fn from(reason: proto::Reason) -> Self {
        Self {
            stage: reason.stage,
            code: reason.code,
            message: reason.message,
            passed: reason.passed,
        }
    }
}

impl From<&Reason> for proto::Reason {
    fn from(reason: &Reason) -> Self {
        Self {
            stage: reason.stage.clone(),
            code: reason.code.clone(),
            message: reason.message.clone(),
            passed: reason.passed,
        }
    }
}

/// The answer to an Evaluate. A DENY is a value, not an error: check
/// [`allowed`](Decision::allowed) before acting.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// ALLOW, DENY or PENDING_APPROVAL.
    pub outcome: DecisionOutcome,
    /// Stage verdicts in pipeline order, up to the deciding stage (every stage with `explain`).
    pub reasons: Vec<Reason>,
    /// Id of this decision, to pass to [`Client::record`]. Empty for a synthetic DENY.
    pub decision_id: String,
    /// The approval to wait for when the outcome is PENDING_APPROVAL.
    pub approval_id: Option<String>,
    /// Sequence number of the decision's audit entry (0 for a synthetic DENY).
    pub audit_seq: u64,
    /// Version hash of the policy bundle that decided (`"sha256:<hex>"`).
    pub policy_version: String,
    /// Canonical digest of the action (`"sha256:<hex>"`).
    pub action_digest: String,
    /// Budget reservation held for this decision, if any.
    pub reservation_id: Option<String>,
    /// True when the server answered from its idempotency cache (same `request_id`).
    pub replayed: bool,
    /// True when the client made this DENY up because Arbiter could not be
    /// asked (see [`EvaluateBuilder::send_or_deny`]).
    pub synthetic: bool,
    /// The response as received (or, for a synthetic DENY, as made up).
    pub raw: proto::EvaluateResponse,
}

impl Decision {
    /// True only for ALLOW. A caller that acts only when this is true fails closed.
    pub fn allowed(&self) -> bool {
        self.outcome == DecisionOutcome::Allow
    }

    /// True for DENY (including a synthetic one).
    pub fn is_denied(&self) -> bool {
        self.outcome == DecisionOutcome::Deny
    }

    /// True for PENDING_APPROVAL.
    pub fn is_pending(&self) -> bool {
        self.outcome == DecisionOutcome::PendingApproval
    }

    /// The deciding reason: the first failed stage, or the first reason when all passed.
    pub fn reason(&self) -> Option<&Reason> {
        self.reasons
            .iter()
            .find(|r| !r.passed)
            .or_else(|| self.reasons.first())
    }

    /// Amount reserved against every applicable budget.
    pub fn reserved(&self) -> Option<&proto::Cost> {
        self.raw.reserved.as_ref()
    }

    /// When the reservation lapses unless Record settles it.
    pub fn reservation_expires_at(&self) -> Option<&prost_types::Timestamp> {
        self.raw.reservation_expires_at.as_ref()
    }

    /// The verifiable receipt, when one was asked for and the server sent it.
    pub fn receipt(&self) -> Option<&proto::Receipt> {
        self.raw.receipt.as_ref()
    }

    /// A DENY standing in for an answer Arbiter could not give, with one
    /// reason `{stage: "client", code, message: <error>}`. The code is
    /// [`CLIENT_UNAVAILABLE`] when Arbiter could not be asked and
    /// [`CLIENT_ERROR`] when it refused the request.
    pub fn fail_closed(error: &Error) -> Decision {
        let code = if is_availability_failure(error) {
            CLIENT_UNAVAILABLE
        } else {
            CLIENT_ERROR
        };
        let reason = Reason::client(code, error.to_string());
        let raw = proto::EvaluateResponse {
            decision: proto::Decision::Deny as i32,
            reasons: vec![proto::Reason::from(&reason)],
            ..Default::default()
        };
        Decision {
            outcome: DecisionOutcome::Deny,
            reasons: vec![reason],
            decision_id: String::new(),
            approval_id: None,
            audit_seq: 0,
            policy_version: String::new(),
            action_digest: String::new(),
            reservation_id: None,
            replayed: false,
            synthetic: true,
            raw,
        }
    }
}

fn is_availability_failure(error: &Error) -> bool {
    use tonic::Code;
    match error {
        Error::Transport(_) | Error::Timeout | Error::CircuitOpen => true,
        Error::Status { code, .. } => matches!(
            code,
            Code::Unavailable
                | Code::Internal
                | Code::Unknown
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted
                | Code::DataLoss
        ),
        Error::InvalidConfig(_) => false,
    }
}

impl From<proto::EvaluateResponse> for Decision {
    /// Reads a response; a decision value this client does not know becomes a
    /// DENY (fail closed) with a [`CLIENT_UNKNOWN_DECISION`] reason in front.
    fn from(raw: proto::EvaluateResponse) -> Self {
        let mut reasons: Vec<Reason> = raw.reasons.iter().cloned().map(Reason::from).collect();
        let outcome = match proto::Decision::try_from(raw.decision) {
            Ok(proto::Decision::Allow) => DecisionOutcome::Allow,
            Ok(proto::Decision::Deny) => DecisionOutcome::Deny,
            Ok(proto::Decision::PendingApproval) => DecisionOutcome::PendingApproval,
            Ok(proto::Decision::Unspecified) | Err(_) => {
                reasons.insert(
                    0,
                    Reason::client(
                        CLIENT_UNKNOWN_DECISION,
                        format!(
                            "server sent decision value {}, which this client does not know; treating it as DENY",
                            raw.decision
                        ),
                    ),
                );
                DecisionOutcome::Deny
            }
        };
        Decision {
            outcome,
            reasons,
            decision_id: raw.decision_id.clone(),
            approval_id: non_empty(&raw.approval_id),
            audit_seq: raw.audit_seq,
            policy_version: raw.policy_version.clone(),
            action_digest: raw.action_digest.clone(),
            reservation_id: non_empty(&raw.reservation_id),
            replayed: raw.replayed,
            synthetic: false,
            raw,
        }
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Clamps an unsigned amount into the proto's `int64`; the server rejects
/// anything above its documented limits with a clear message.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Builds and sends one Evaluate. Made by [`Client::evaluate`].
///
/// ```no_run
/// # async fn example(client: arbiter_client::Client) -> Result<(), arbiter_client::Error> {
/// let decision = client
///     .evaluate("billing-agent")
///     .session("s-1")
///     .tool("send_email")
///     .cost_micro_usd(1_500)
///     .data("user_email", Some("notifications"))
///     .send()
///     .await?;
/// if decision.allowed() {
///     // act, then client.record(&decision.decision_id) ...
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "nothing is sent until .send() or .send_or_deny() is awaited"]
pub struct EvaluateBuilder {
    client: Client,
    request: proto::EvaluateRequest,
    timeout: Option<Duration>,
    /// Set when a builder method got a value the request cannot carry; `send` returns it.
    invalid: Option<(String, String)>,
}

impl EvaluateBuilder {
    fn action(&mut self) -> &mut proto::Action {
        self.request.action.get_or_insert_with(Default::default)
    }

    fn estimate(&mut self) -> &mut proto::Cost {
        self.action().estimate.get_or_insert_with(Default::default)
    }

    /// Session (run) of the agent.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.request.session_id = session_id.into();
        self
    }

    /// Tool the agent wants to call, e.g. `"send_email"`.
    pub fn tool(mut self, tool: impl Into<String>) -> Self {
        self.action().tool = tool.into();
        self
    }

    /// HTTP API call the agent wants to make, e.g. `("POST", "https://api.stripe.com/v1/charges")`.
    pub fn api(mut self, method: impl Into<String>, url: impl Into<String>) -> Self {
        self.action().api = Some(proto::ApiCall {
            method: method.into(),
            url: url.into(),
        });
        self
    }

    /// The call's arguments, a JSON object (a tool call's arguments, an HTTP body).
    /// They are part of the action digest: an approval granted for one set of arguments
    /// is refused for any other. Anything but an object makes `send` fail with
    /// `INVALID_ARGUMENT` for `action.arguments` without calling the server.
    pub fn arguments(mut self, arguments: serde_json::Value) -> Self {
        match arguments {
            serde_json::Value::Object(o) => {
                self.action().arguments = Some(crate::arguments::to_struct(&o));
            }
            other => {
                self.invalid = Some((
                    "action.arguments".into(),
                    format!("must be a JSON object, got {other}"),
                ));
            }
        }
        self
    }

    /// LLM model the agent wants to call, e.g. `"gpt-4o-mini"`.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.action().model = model.into();
        self
    }

    /// Upper bound of output tokens for an LLM call; prices the estimate.
    pub fn max_tokens(mut self, max_tokens: u64) -> Self {
        self.action().max_tokens = to_i64(max_tokens);
        self
    }

    /// Cost estimate in integer micro-USD (1 USD = 1 000 000).
    pub fn cost_micro_usd(mut self, micro_usd: u64) -> Self {
        self.estimate().micro_usd = to_i64(micro_usd);
        self
    }

    /// Estimated LLM tokens (priced as input when a model is named and no
    /// micro-USD estimate is given).
    pub fn cost_tokens(mut self, tokens: u64) -> Self {
        self.estimate().tokens = to_i64(tokens);
        self
    }

    /// Adds a personal-data access: its data type and, optionally, its purpose.
    pub fn data(mut self, data_type: impl Into<String>, purpose: Option<&str>) -> Self {
        self.action().data.push(proto::DataAccess {
            data_type: data_type.into(),
            purpose: purpose.unwrap_or_default().to_owned(),
        });
        self
    }

    /// Budget category (selects `scope: category` budgets).
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.action().category = category.into();
        self
    }

    /// A named budget that must also be charged.
    pub fn budget(mut self, budget: impl Into<String>) -> Self {
        self.action().budget = budget.into();
        self
    }

    /// Asks for every stage's verdict instead of only the deciding one.
    pub fn explain(mut self, explain: bool) -> Self {
        self.request.explain = explain;
        self
    }

    /// Asks for a verifiable receipt of the audit entry.
    pub fn receipt(mut self, receipt: bool) -> Self {
        self.request.receipt = receipt;
        self
    }

    /// Raises the trust level this request requires (it can never lower it).
    pub fn min_trust(mut self, level: TrustLevel) -> Self {
        self.request.min_trust = level as i32;
        self
    }

    /// Presents a granted approval to consume.
    pub fn approval_id(mut self, approval_id: impl Into<String>) -> Self {
        self.request.approval_id = approval_id.into();
        self
    }

    /// Presents a delegation token that narrows the agent's scope.
    pub fn delegation_token(mut self, token: impl Into<String>) -> Self {
        self.request.delegation_token = token.into();
        self
    }

    /// Adds a free-form context entry recorded in the audit log.
    pub fn context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.context.insert(key.into(), value.into());
        self
    }

    /// Sets the idempotency key. Without one, a UUID v4 is generated when the
    /// request is built; either way every retry carries the same key.
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request.request_id = request_id.into();
        self
    }

    /// Overrides the client's deadline for this call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The request as it would be sent, with a `request_id` filled in.
    pub fn into_request(self) -> proto::EvaluateRequest {
        let mut request = self.request;
        if request.request_id.is_empty() {
            request.request_id = new_request_id();
        }
        request
    }

    /// Sends the request. A DENY or PENDING_APPROVAL is `Ok`; `Err` means no
    /// decision was obtained, and the caller chooses what to do (see
    /// [`send_or_deny`](Self::send_or_deny) for the fail-closed choice).
    pub async fn send(self) -> Result<Decision, Error> {
        if let Some((field, problem)) = self.invalid {
            return Err(Error::Status {
                code: tonic::Code::InvalidArgument,
                message: format!("{field}: {problem}"),
                field: Some(field),
                reason: None,
            });
        }
        let client = self.client.clone();
        let timeout = self.timeout;
        client.evaluate_with(self.into_request(), timeout).await
    }

    /// Sends the request and turns any error into a synthetic DENY
    /// ([`Decision::fail_closed`]), so a caller who only checks
    /// [`Decision::allowed`] never acts when Arbiter cannot be asked. Use
    /// [`send`](Self::send) to opt out and handle the error yourself.
    pub async fn send_or_deny(self) -> Decision {
        self.send()
            .await
            .unwrap_or_else(|error| Decision::fail_closed(&error))
    }
}

impl From<EvaluateBuilder> for proto::EvaluateRequest {
    fn from(builder: EvaluateBuilder) -> Self {
        builder.into_request()
    }
}

/// Builds and sends one Record. Made by [`Client::record`].
///
/// The outcome defaults to [`ActionOutcome::Success`].
///
/// ```no_run
/// # async fn example(client: arbiter_client::Client, decision_id: String) -> Result<(), arbiter_client::Error> {
/// use std::time::Duration;
/// use arbiter_client::ActionOutcome;
///
/// let recorded = client
///     .record(decision_id)
///     .outcome(ActionOutcome::Success)
///     .model("gpt-4o-mini")
///     .input_tokens(1_200)
///     .output_tokens(300)
///     .duration(Duration::from_millis(840))
///     .send()
///     .await?;
/// if recorded.overspend {
///     eprintln!("action cost more than reserved");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "nothing is sent until .send() is awaited"]
pub struct RecordBuilder {
    client: Client,
    request: proto::RecordRequest,
    timeout: Option<Duration>,
}

impl RecordBuilder {
    fn usage_mut(&mut self) -> &mut proto::Usage {
        self.request.usage.get_or_insert_with(Default::default)
    }

    /// How the action ended (default [`ActionOutcome::Success`]).
    pub fn outcome(mut self, outcome: ActionOutcome) -> Self {
        self.request.outcome = outcome as i32;
        self
    }

    /// Replaces the whole usage report.
    pub fn usage(mut self, usage: proto::Usage) -> Self {
        self.request.usage = Some(usage);
        self
    }

    /// Model that was used (prices the usage when no micro-USD amount is given).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.usage_mut().model = model.into();
        self
    }

    /// Input tokens used.
    pub fn input_tokens(mut self, tokens: u64) -> Self {
        self.usage_mut().input_tokens = to_i64(tokens);
        self
    }

    /// Output tokens used.
    pub fn output_tokens(mut self, tokens: u64) -> Self {
        self.usage_mut().output_tokens = to_i64(tokens);
        self
    }

    /// Actual cost in integer micro-USD. When not given, the server prices the
    /// usage from its price table.
    pub fn cost_micro_usd(mut self, micro_usd: u64) -> Self {
        self.usage_mut().micro_usd = Some(to_i64(micro_usd));
        self
    }

    /// How long the action took (sent in whole milliseconds).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.request.duration_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Digest of the action's output, e.g. `"sha256:<hex>"`.
    pub fn output_digest(mut self, digest: impl Into<String>) -> Self {
        self.request.output_digest = digest.into();
        self
    }

    /// Adds a free-form metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the idempotency key (a UUID v4 is generated otherwise).
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request.request_id = request_id.into();
        self
    }

    /// Overrides the client's deadline for this call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The request as it would be sent, with a `request_id` filled in.
    pub fn into_request(self) -> proto::RecordRequest {
        let mut request = self.request;
        if request.request_id.is_empty() {
            request.request_id = new_request_id();
        }
        request
    }

    /// Sends the record. Recording one decision twice is idempotent on the
    /// server (`duplicate` is set on the second answer).
    pub async fn send(self) -> Result<proto::RecordResponse, Error> {
        let client = self.client.clone();
        let timeout = self.timeout;
        client.record_with(self.into_request(), timeout).await
    }
}

impl From<RecordBuilder> for proto::RecordRequest {
    fn from(builder: RecordBuilder) -> Self {
        builder.into_request()
    }
}

/// DecisionService.
impl Client {
    /// Starts an Evaluate for `agent_id`; finish it with
    /// [`send`](EvaluateBuilder::send) or [`send_or_deny`](EvaluateBuilder::send_or_deny).
    pub fn evaluate(&self, agent_id: impl Into<String>) -> EvaluateBuilder {
        EvaluateBuilder {
            client: self.clone(),
            request: proto::EvaluateRequest {
                agent_id: agent_id.into(),
                ..Default::default()
            },
            timeout: None,
            invalid: None,
        }
    }

    /// Sends a ready-made EvaluateRequest. An empty `request_id` is replaced by
    /// a UUID v4 so that retries stay safe.
    pub async fn evaluate_request(
        &self,
        request: proto::EvaluateRequest,
    ) -> Result<Decision, Error> {
        self.evaluate_with(request, None).await
    }

    /// Fail-closed Evaluate: takes an [`EvaluateBuilder`] or a raw request and
    /// returns a synthetic DENY ([`Decision::fail_closed`]) on any error.
    pub async fn evaluate_or_deny(&self, request: impl Into<proto::EvaluateRequest>) -> Decision {
        self.evaluate_request(request.into())
            .await
            .unwrap_or_else(|error| Decision::fail_closed(&error))
    }

    async fn evaluate_with(
        &self,
        mut request: proto::EvaluateRequest,
        timeout: Option<Duration>,
    ) -> Result<Decision, Error> {
        if request.request_id.is_empty() {
            request.request_id = new_request_id();
        }
        self.unary(
            request,
            Retry::OnUnavailable,
            timeout,
            |channel, request| async move {
                DecisionServiceClient::new(channel).evaluate(request).await
            },
        )
        .await
        .map(Decision::from)
    }

    /// Starts a Record for a decision; finish it with [`send`](RecordBuilder::send).
    pub fn record(&self, decision_id: impl Into<String>) -> RecordBuilder {
        RecordBuilder {
            client: self.clone(),
            request: proto::RecordRequest {
                decision_id: decision_id.into(),
                outcome: ActionOutcome::Success as i32,
                ..Default::default()
            },
            timeout: None,
        }
    }

    /// Sends a ready-made RecordRequest. An empty `request_id` is replaced by a UUID v4.
    pub async fn record_request(
        &self,
        request: proto::RecordRequest,
    ) -> Result<proto::RecordResponse, Error> {
        self.record_with(request, None).await
    }

    async fn record_with(
        &self,
        mut request: proto::RecordRequest,
        timeout: Option<Duration>,
    ) -> Result<proto::RecordResponse, Error> {
        if request.request_id.is_empty() {
            request.request_id = new_request_id();
        }
        self.unary(request, Retry::OnUnavailable, timeout, |channel, request| async move {
            DecisionServiceClient::new(channel).record(request).await
        })
        .await
    }

    /// Reports the tool definitions read from one upstream MCP server and returns
    /// which are trusted (tool pinning). Retried on `UNAVAILABLE`: a repeated report
    /// finds its definitions known and writes nothing.
    pub async fn report_tools(
        &self,
        request: proto::ReportToolsRequest,
    ) -> Result<proto::ReportToolsResponse, Error> {
        self.unary(
            request,
            Retry::OnUnavailable,
            None,
            |channel, request| async move {
                DecisionServiceClient::new(channel)
                    .report_tools(request)
                    .await
            },
        )
        .await
    }

    /// Returns the subset of the given tools the agent may see. Retried on `UNAVAILABLE`.
    pub async fn filter_tools(
        &self,
        request: proto::FilterToolsRequest,
    ) -> Result<proto::FilterToolsResponse, Error> {
        self.unary(
            request,
            Retry::OnUnavailable,
            None,
            |channel, request| async move {
                DecisionServiceClient::new(channel)
                    .filter_tools(request)
                    .await
            },
        )
        .await
    }

    /// Reports that an agent is alive. Retried on `UNAVAILABLE` (a repeated
    /// heartbeat only refreshes presence).
    pub async fn heartbeat(
        &self,
        request: proto::HeartbeatRequest,
    ) -> Result<proto::HeartbeatResponse, Error> {
        self.unary(
            request,
            Retry::OnUnavailable,
            None,
            |channel, request| async move {
                DecisionServiceClient::new(channel).heartbeat(request).await
            },
        )
        .await
    }

    /// Issues a delegation token. Sent once (never retried).
    pub async fn delegate(
        &self,
        request: proto::DelegateRequest,
    ) -> Result<proto::DelegateResponse, Error> {
        self.unary(request, Retry::Never, None, |channel, request| async move {
            DecisionServiceClient::new(channel).delegate(request).await
        })
        .await
    }

    /// Round trip to the server that does nothing; useful as a liveness check
    /// and a latency baseline. Retried on `UNAVAILABLE`.
    pub async fn ping(&self) -> Result<(), Error> {
        self.unary(proto::PingRequest {}, Retry::OnUnavailable, None, |channel, request| async move {
            DecisionServiceClient::new(channel).ping(request).await
        })
        .await
        .map(|_| ())
    }

    /// Names the authenticated caller (principal, roles, agents). Retried on
    /// `UNAVAILABLE`.
    pub async fn who_am_i(&self) -> Result<proto::WhoAmIResponse, Error> {
        self.unary(
            proto::WhoAmIRequest {},
            Retry::OnUnavailable,
            None,
            |channel, request| async move {
                DecisionServiceClient::new(channel).who_am_i(request).await
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientBuilder;

    fn client() -> Client {
        ClientBuilder::new("127.0.0.1:1")
            .connect_lazy()
            .expect("a lazy client needs no server")
    }

    #[tokio::test]
    async fn evaluate_builder_sets_every_request_field() {
        let request = client()
            .evaluate("billing-agent")
            .session("s-1")
            .tool("send_email")
            .api("POST", "https://api.example.com/v1/mail")
            .model("gpt-4o-mini")
            .max_tokens(512)
            .cost_micro_usd(1_500)
            .cost_tokens(2_000)
            .data("user_email", Some("notifications"))
            .data("user_name", None)
            .category("email")
            .budget("marketing")
            .explain(true)
            .receipt(true)
            .min_trust(TrustLevel::L4ActReport)
            .approval_id("ap-1")
            .delegation_token("tok")
            .context("ticket", "T-42")
            .into_request();

        assert_eq!(request.agent_id, "billing-agent");
        assert_eq!(request.session_id, "s-1");
        assert!(request.explain);
        assert!(request.receipt);
        assert_eq!(request.min_trust, TrustLevel::L4ActReport as i32);
        assert_eq!(request.approval_id, "ap-1");
        assert_eq!(request.delegation_token, "tok");
        assert_eq!(
            request.context.get("ticket").map(String::as_str),
            Some("T-42")
        );
        let action = request.action.expect("action is set");
        assert_eq!(action.tool, "send_email");
        assert_eq!(
            action.api,
            Some(proto::ApiCall {
                method: "POST".into(),
                url: "https://api.example.com/v1/mail".into()
            })
        );
        assert_eq!(action.model, "gpt-4o-mini");
        assert_eq!(action.max_tokens, 512);
        assert_eq!(
            action.estimate,
            Some(proto::Cost {
                micro_usd: 1_500,
                tokens: 2_000
            })
        );
        assert_eq!(
            action.data,
            vec![
                proto::DataAccess {
                    data_type: "user_email".into(),
                    purpose: "notifications".into()
                },
                proto::DataAccess {
                    data_type: "user_name".into(),
                    purpose: String::new()
                },
            ]
        );
        assert_eq!(action.category, "email");
        assert_eq!(action.budget, "marketing");
    }

    #[tokio::test]
    async fn evaluate_builder_sets_a_fresh_uuid_request_id_unless_given() {
        let client = client();
        let first = client.evaluate("a").tool("t").into_request().request_id;
        let second = client.evaluate("a").tool("t").into_request().request_id;
        assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
        assert_ne!(first, second);

        let given = client.evaluate("a").request_id("mine-1").into_request();
        assert_eq!(given.request_id, "mine-1");
    }

    #[tokio::test]
    async fn amounts_beyond_int64_are_clamped_for_the_server_to_reject() {
        let request = client()
            .evaluate("a")
            .cost_micro_usd(u64::MAX)
            .into_request();
        assert_eq!(
            request.action.unwrap().estimate.unwrap().micro_usd,
            i64::MAX
        );
    }

    #[tokio::test]
    async fn record_builder_sets_every_request_field() {
        let request = client()
            .record("d-1")
            .outcome(ActionOutcome::Failure)
            .model("gpt-4o-mini")
            .input_tokens(1_200)
            .output_tokens(300)
            .cost_micro_usd(4_200)
            .duration(Duration::from_millis(840))
            .output_digest("sha256:ab")
            .metadata("exit", "1")
            .into_request();
        assert_eq!(request.decision_id, "d-1");
        assert_eq!(request.outcome, ActionOutcome::Failure as i32);
        assert_eq!(
            request.usage,
            Some(proto::Usage {
                model: "gpt-4o-mini".into(),
                input_tokens: 1_200,
                output_tokens: 300,
                micro_usd: Some(4_200),
            })
        );
        assert_eq!(request.duration_ms, 840);
        assert_eq!(request.output_digest, "sha256:ab");
        assert_eq!(request.metadata.get("exit").map(String::as_str), Some("1"));
        assert!(uuid::Uuid::parse_str(&request.request_id).is_ok());
    }

    #[tokio::test]
    async fn record_defaults_to_success_without_usage() {
        let request = client().record("d-1").request_id("r-1").into_request();
        assert_eq!(request.outcome, ActionOutcome::Success as i32);
        assert_eq!(request.usage, None);
        assert_eq!(request.request_id, "r-1");
    }

    #[tokio::test]
    async fn record_usage_replaces_the_whole_report() {
        let usage = proto::Usage {
            model: "m".into(),
            input_tokens: 1,
            output_tokens: 2,
            micro_usd: None,
        };
        let request = client()
            .record("d")
            .cost_micro_usd(9)
            .usage(usage.clone())
            .into_request();
        assert_eq!(request.usage, Some(usage));
    }

    #[test]
    fn a_response_becomes_a_typed_decision() {
        let raw = proto::EvaluateResponse {
            decision: proto::Decision::PendingApproval as i32,
            reasons: vec![proto::Reason {
                stage: "approval".into(),
                code: "approval.required".into(),
                message: "irreversible action".into(),
                passed: false,
            }],
            decision_id: "d-1".into(),
            approval_id: "ap-1".into(),
            audit_seq: 42,
            policy_version: "sha256:aa".into(),
            action_digest: "sha256:bb".into(),
            reservation_id: "res-1".into(),
            replayed: true,
            ..Default::default()
        };
        let decision = Decision::from(raw.clone());
        assert!(decision.is_pending());
        assert!(!decision.allowed());
        assert_eq!(decision.outcome, DecisionOutcome::PendingApproval);
        assert_eq!(decision.reason().unwrap().code, "approval.required");
        assert_eq!(decision.decision_id, "d-1");
        assert_eq!(decision.approval_id.as_deref(), Some("ap-1"));
        assert_eq!(decision.audit_seq, 42);
        assert_eq!(decision.policy_version, "sha256:aa");
        assert_eq!(decision.action_digest, "sha256:bb");
        assert_eq!(decision.reservation_id.as_deref(), Some("res-1"));
        assert!(decision.replayed);
        assert!(!decision.synthetic);
        assert_eq!(decision.raw, raw);
    }

    #[test]
    fn empty_ids_become_none() {
        let decision = Decision::from(proto::EvaluateResponse {
            decision: proto::Decision::Allow as i32,
            ..Default::default()
        });
        assert!(decision.allowed());
        assert_eq!(decision.approval_id, None);
        assert_eq!(decision.reservation_id, None);
    }

    #[test]
    fn an_unknown_decision_value_is_a_deny() {
        for value in [0, 99] {
            let decision = Decision::from(proto::EvaluateResponse {
                decision: value,
                ..Default::default()
            });
            assert!(decision.is_denied());
            assert!(!decision.allowed());
            assert_eq!(decision.reason().unwrap().code, CLIENT_UNKNOWN_DECISION);
        }
    }

    #[test]
    fn an_unreachable_server_becomes_a_client_unavailable_deny() {
        let error = Error::from(tonic::Status::unavailable("tcp connect error"));
        let decision = Decision::fail_closed(&error);
        assert!(!decision.allowed());
        assert!(decision.is_denied());
        assert!(decision.synthetic);
        let reason = decision.reason().unwrap();
        assert_eq!(reason.stage, "client");
        assert_eq!(reason.code, "client.unavailable");
        assert_eq!(reason.message, error.to_string());
        assert!(!reason.passed);
        assert_eq!(decision.raw.decision, proto::Decision::Deny as i32);
        assert_eq!(decision.raw.reasons[0].code, "client.unavailable");
    }

    #[test]
    fn timeouts_internal_errors_and_an_open_breaker_are_client_unavailable() {
        for error in [
            Error::Timeout,
            Error::CircuitOpen,
            Error::from(tonic::Status::internal("internal error")),
        ] {
            let decision = Decision::fail_closed(&error);
            assert_eq!(
                decision.reason().unwrap().code,
                CLIENT_UNAVAILABLE,
                "{error}"
            );
        }
    }

    #[test]
    fn a_refused_request_becomes_a_client_error_deny() {
        let decision = Decision::fail_closed(&Error::from(tonic::Status::permission_denied("no")));
        assert!(!decision.allowed());
        assert_eq!(decision.reason().unwrap().code, CLIENT_ERROR);
    }

    #[tokio::test]
    async fn send_or_deny_fails_closed_when_nothing_listens() {
        // A port that was just bound and released refuses connections, so
        // the call fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = ClientBuilder::new(format!("127.0.0.1:{port}"))
            .retries(0)
            .connect_lazy()
            .unwrap();
        let decision = client.evaluate("a").tool("t").send_or_deny().await;
        assert!(!decision.allowed());
        assert!(decision.synthetic);
        assert_eq!(decision.reason().unwrap().code, CLIENT_UNAVAILABLE);

        let error = client.evaluate("a").tool("t").send().await.unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
    }
}
