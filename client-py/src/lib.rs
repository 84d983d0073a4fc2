//! `arbiter._arbiter`: the Rust core of the `arbiter` Python package.
//!
//! [`Core`] wraps one `arbiter_client::Client` (connection, retries with
//! idempotency keys, circuit breaker) and has one method per RPC. Each method
//! builds the request from plain Python values and returns a
//! [`Pending`](pending::Pending) call that the sync facade waits for with the GIL
//! released, or the asyncio facade awaits. Results come back as dicts and lists
//! ([`value`]); the facade in `python/arbiter/` turns them into typed objects,
//! converts money, and adds `guard`, `governed` and the exception semantics.

mod bridge;
mod error;
mod pending;
mod value;

use std::collections::HashMap;
use std::time::Duration;

use arbiter_client::{proto, ActionOutcome, CircuitBreakerConfig, Client, TrustLevel};
use futures::StreamExt;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use pending::{Pending, Stream};
use value::{list, map, Value};

/// A connection to one Arbiter server. Cheap to share: every thread and task
/// may call it at once.
#[pyclass(module = "arbiter._arbiter", frozen)]
struct Core {
    client: Client,
}

fn duration(seconds: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        PyValueError::new_err(format!(
            "{what}: must be a finite number ≥ 0, got {seconds}"
        ))
    })
}

fn trust_level(level: i32) -> PyResult<TrustLevel> {
    TrustLevel::try_from(level)
        .map_err(|_| PyValueError::new_err(format!("trust level: unknown value {level}")))
}

impl Core {
    /// The client, with this call's own deadline when one is given.
    fn client(&self, timeout: Option<f64>) -> PyResult<Client> {
        Ok(match timeout {
            Some(seconds) => self.client.with_timeout(duration(seconds, "timeout")?),
            None => self.client.clone(),
        })
    }
}

fn filter(
    agent_id: String,
    session_id: String,
    kinds: Vec<String>,
    outcome: String,
    since: Option<i64>,
    until: Option<i64>,
) -> proto::AuditFilter {
    proto::AuditFilter {
        agent_id,
        session_id,
        kinds,
        outcome,
        since: since.map(value::to_timestamp),
        until: until.map(value::to_timestamp),
    }
}

fn target(scope: i32, agent_id: String, session_id: String) -> Option<proto::HaltTarget> {
    Some(proto::HaltTarget {
        scope,
        agent_id,
        session_id,
    })
}

#[pymethods]
impl Core {
    /// Makes a client for `endpoint` ("host:port" or "http://host:port"). It
    /// connects on the first call, so a server that is down shows up as
    /// `Unavailable` on calls, not here.
    ///
    /// TLS: `tls_ca` (PEM bytes) is the CA the server's certificate must chain to and
    /// turns TLS on; `tls_cert` and `tls_key` (PEM bytes) are the client certificate
    /// and key for mTLS; `tls_domain` is the name the server certificate must carry
    /// when it differs from the endpoint's host.
    #[new]
    #[pyo3(signature = (endpoint, *, api_key=None, timeout=5.0, connect_timeout=5.0, retries=2, breaker_threshold=5, breaker_cool_down=2.0, tls_ca=None, tls_cert=None, tls_key=None, tls_domain=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        endpoint: String,
        api_key: Option<String>,
        timeout: f64,
        connect_timeout: f64,
        retries: u32,
        breaker_threshold: u32,
        breaker_cool_down: f64,
        tls_ca: Option<&[u8]>,
        tls_cert: Option<&[u8]>,
        tls_key: Option<&[u8]>,
        tls_domain: Option<String>,
    ) -> PyResult<Self> {
        let mut builder = Client::builder(endpoint)
            .timeout(duration(timeout, "timeout")?)
            .connect_timeout(duration(connect_timeout, "connect_timeout")?)
            .retries(retries);
        builder = if breaker_threshold == 0 {
            builder.disable_circuit_breaker()
        } else {
            builder.circuit_breaker(CircuitBreakerConfig {
                failure_threshold: breaker_threshold,
                cool_down: duration(breaker_cool_down, "breaker_cool_down")?,
            })
        };
        if let Some(key) = api_key {
            builder = builder.api_key(key);
        }
        if let Some(ca) = tls_ca {
            builder = builder.tls_ca_pem(ca);
        }
        match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => builder = builder.tls_identity_pem(cert, key),
            (None, None) => {}
            _ => {
                return Err(PyValueError::new_err(
                    "tls_cert and tls_key: a client certificate needs its key, and a key its certificate",
                ))
            }
        }
        if let Some(name) = tls_domain {
            builder = builder.tls_domain_name(name);
        }
        // A lazy channel registers with the runtime it is made in.
        let _entered = pending::runtime().enter();
        let client = builder
            .connect_lazy()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Self { client })
    }

    /// The endpoint as given.
    #[getter]
    fn endpoint(&self) -> String {
        self.client.endpoint().to_owned()
    }

    /// The default deadline of one call, in seconds.
    #[getter]
    fn timeout(&self) -> f64 {
        self.client.timeout().as_secs_f64()
    }

    /// "closed", "open", "half_open", or None when the breaker is disabled.
    #[getter]
    fn circuit_state(&self) -> Option<&'static str> {
        self.client.circuit_state().map(|state| match state {
            arbiter_client::CircuitState::Closed => "closed",
            arbiter_client::CircuitState::Open => "open",
            arbiter_client::CircuitState::HalfOpen => "half_open",
        })
    }

    /// Evaluate: decides whether an action may proceed.
    #[pyo3(signature = (agent_id, *, session_id=None, tool=None, api=None, model=None, max_tokens=None, cost_micro_usd=None, tokens=None, data=Vec::new(), category=None, budget=None, min_trust=None, approval_id=None, delegation_token=None, context=HashMap::new(), arguments_json=None, explain=false, receipt=false, request_id=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        agent_id: String,
        session_id: Option<String>,
        tool: Option<String>,
        api: Option<(String, String)>,
        model: Option<String>,
        max_tokens: Option<u64>,
        cost_micro_usd: Option<u64>,
        tokens: Option<u64>,
        data: Vec<(String, Option<String>)>,
        category: Option<String>,
        budget: Option<String>,
        min_trust: Option<i32>,
        approval_id: Option<String>,
        delegation_token: Option<String>,
        context: HashMap<String, String>,
        arguments_json: Option<String>,
        explain: bool,
        receipt: bool,
        request_id: Option<String>,
        timeout: Option<f64>,
    ) -> PyResult<Pending> {
        let client = self.client(None)?;
        let mut b = client.evaluate(agent_id).explain(explain).receipt(receipt);
        if let Some(text) = arguments_json {
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| PyValueError::new_err(format!("arguments: not JSON: {e}")))?;
            if !value.is_object() {
                return Err(PyValueError::new_err("arguments: must be a JSON object"));
            }
            b = b.arguments(value);
        }
        if let Some(v) = session_id {
            b = b.session(v);
        }
        if let Some(v) = tool {
            b = b.tool(v);
        }
        if let Some((method, url)) = api {
            b = b.api(method, url);
        }
        if let Some(v) = model {
            b = b.model(v);
        }
        if let Some(v) = max_tokens {
            b = b.max_tokens(v);
        }
        if let Some(v) = cost_micro_usd {
            b = b.cost_micro_usd(v);
        }
        if let Some(v) = tokens {
            b = b.cost_tokens(v);
        }
        for (data_type, purpose) in data {
            b = b.data(data_type, purpose.as_deref());
        }
        if let Some(v) = category {
            b = b.category(v);
        }
        if let Some(v) = budget {
            b = b.budget(v);
        }
        if let Some(v) = min_trust {
            b = b.min_trust(trust_level(v)?);
        }
        if let Some(v) = approval_id {
            b = b.approval_id(v);
        }
        if let Some(v) = delegation_token {
            b = b.delegation_token(v);
        }
        for (key, value) in context {
            b = b.context(key, value);
        }
        if let Some(v) = request_id {
            b = b.request_id(v);
        }
        if let Some(seconds) = timeout {
            b = b.timeout(duration(seconds, "timeout")?);
        }
        Ok(Pending::new(
            async move { b.send().await.map(value::decision) },
        ))
    }

    /// Record: reports what an allowed action did and cost.
    #[pyo3(signature = (decision_id, *, outcome=1, model=None, input_tokens=None, output_tokens=None, cost_micro_usd=None, duration_ms=None, output_digest=None, metadata=HashMap::new(), request_id=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        decision_id: String,
        outcome: i32,
        model: Option<String>,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
        cost_micro_usd: Option<u64>,
        duration_ms: Option<u64>,
        output_digest: Option<String>,
        metadata: HashMap<String, String>,
        request_id: Option<String>,
        timeout: Option<f64>,
    ) -> PyResult<Pending> {
        let outcome = ActionOutcome::try_from(outcome)
            .map_err(|_| PyValueError::new_err(format!("outcome: unknown value {outcome}")))?;
        let mut b = self.client.record(decision_id).outcome(outcome);
        if let Some(v) = model {
            b = b.model(v);
        }
        if let Some(v) = input_tokens {
            b = b.input_tokens(v);
        }
        if let Some(v) = output_tokens {
            b = b.output_tokens(v);
        }
        if let Some(v) = cost_micro_usd {
            b = b.cost_micro_usd(v);
        }
        if let Some(v) = duration_ms {
            b = b.duration(Duration::from_millis(v));
        }
        if let Some(v) = output_digest {
            b = b.output_digest(v);
        }
        for (key, value) in metadata {
            b = b.metadata(key, value);
        }
        if let Some(v) = request_id {
            b = b.request_id(v);
        }
        if let Some(seconds) = timeout {
            b = b.timeout(duration(seconds, "timeout")?);
        }
        Ok(Pending::new(
            async move { b.send().await.map(value::record) },
        ))
    }

    /// FilterTools: the subset of `tools` the agent may see.
    fn filter_tools(&self, agent_id: String, tools: Vec<String>) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::FilterToolsRequest { agent_id, tools };
            Ok(Value::from(client.filter_tools(request).await?.tools))
        })
    }

    /// Heartbeat: reports that an agent is alive.
    #[pyo3(signature = (agent_id, *, session_id=String::new(), status=0, metadata=HashMap::new(), operator=String::new()))]
    fn heartbeat(
        &self,
        agent_id: String,
        session_id: String,
        status: i32,
        metadata: HashMap<String, String>,
        operator: String,
    ) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::HeartbeatRequest {
                agent_id,
                session_id,
                status,
                metadata,
                operator,
            };
            let r = client.heartbeat(request).await?;
            Ok(map! { "halted" => r.halted, "halt" => value::optional(r.halt, value::halt) })
        })
    }

    /// Delegate: issues a delegation token from the parent's scope (or from
    /// `parent_token` when re-delegating). Returns `{"token", "expires_at"}`
    /// (`expires_at` in microseconds since the Unix epoch). Sent once.
    #[pyo3(signature = (parent_agent_id, subject_agent_id, *, tools=Vec::new(), apis=Vec::new(), ttl_seconds=300, max_depth=0, parent_token=String::new()))]
    #[allow(clippy::too_many_arguments)]
    fn delegate(
        &self,
        parent_agent_id: String,
        subject_agent_id: String,
        tools: Vec<String>,
        apis: Vec<String>,
        ttl_seconds: i64,
        max_depth: i32,
        parent_token: String,
    ) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::DelegateRequest {
                parent_agent_id,
                subject_agent_id,
                tools,
                apis,
                ttl_seconds,
                max_depth,
                parent_token,
            };
            let r = client.delegate(request).await?;
            Ok(map! {
                "token" => r.token,
                "expires_at" => value::timestamp(r.expires_at),
            })
        })
    }

    /// Ping: an empty round trip.
    fn ping(&self) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            client.ping().await?;
            Ok(Value::None)
        })
    }

    /// Approve: grants or denies a pending approval.
    fn approve(&self, approval_id: String, grant: bool, reason: String) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::ApproveRequest {
                approval_id,
                grant,
                reason,
            };
            let r = client.approve(request).await?;
            Ok(value::optional(r.approval, value::approval))
        })
    }

    /// GetApproval: reads one approval.
    fn get_approval(&self, approval_id: String) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let r = client
                .get_approval(proto::GetApprovalRequest { approval_id })
                .await?;
            Ok(value::optional(r.approval, value::approval))
        })
    }

    /// ListApprovals: one page of approvals, newest first.
    #[pyo3(signature = (*, agent_id=String::new(), state=0, page_size=0, page_token=String::new()))]
    fn list_approvals(
        &self,
        agent_id: String,
        state: i32,
        page_size: i32,
        page_token: String,
    ) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::ListApprovalsRequest {
                agent_id,
                state,
                page_size,
                page_token,
            };
            let r = client.list_approvals(request).await?;
            Ok(map! {
                "approvals" => list(r.approvals, value::approval),
                "next_page_token" => r.next_page_token,
            })
        })
    }

    /// Watches an approval until it is final or `timeout` seconds pass. Returns
    /// `{"approval": <last state seen or None>, "timed_out": bool}`; the facade
    /// decides what to raise.
    fn wait_for_approval(&self, approval_id: String, timeout: f64) -> PyResult<Pending> {
        let client = self.client.clone();
        let wait = duration(timeout, "timeout")?;
        Ok(Pending::new(async move {
            let deadline = tokio::time::Instant::now() + wait;
            let mut last: Option<proto::Approval> = None;
            let timed_out = |last: Option<proto::Approval>| {
                Ok(
                    map! { "approval" => value::optional(last, value::approval), "timed_out" => true },
                )
            };
            // The server ends the stream once the approval is final. A stream that
            // ends earlier (a restart) is opened again until the deadline.
            loop {
                let request = proto::WatchApprovalRequest {
                    approval_id: approval_id.clone(),
                };
                let mut stream =
                    match tokio::time::timeout_at(deadline, client.watch_approval(request)).await {
                        Ok(stream) => stream?,
                        Err(_) => return timed_out(last),
                    };
                loop {
                    match tokio::time::timeout_at(deadline, stream.next()).await {
                        Err(_) => return timed_out(last),
                        Ok(None) => break,
                        Ok(Some(Err(e))) if e.is_unavailable() => break,
                        Ok(Some(Err(e))) => return Err(e),
                        Ok(Some(Ok(approval))) => {
                            if approval.state != proto::ApprovalState::Pending as i32 {
                                return Ok(map! {
                                    "approval" => value::approval(approval),
                                    "timed_out" => false,
                                });
                            }
                            last = Some(approval);
                        }
                    }
                }
                if tokio::time::Instant::now() + Duration::from_millis(100) >= deadline {
                    return timed_out(last);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }))
    }

    /// Halt: engages a halt. `scope` is a HaltScope value, `mode` a HaltMode value.
    fn halt(
        &self,
        scope: i32,
        agent_id: String,
        session_id: String,
        mode: i32,
        reason: String,
    ) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::HaltRequest {
                target: target(scope, agent_id, session_id),
                mode,
                reason,
            };
            let r = client.halt(request).await?;
            Ok(value::optional(r.halt, value::halt))
        })
    }

    /// Resume: lifts a halt.
    fn resume(&self, scope: i32, agent_id: String, session_id: String, reason: String) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::ResumeRequest {
                target: target(scope, agent_id, session_id),
                reason,
            };
            let r = client.resume(request).await?;
            Ok(value::optional(r.halt, value::halt))
        })
    }

    /// ListHalts: the engaged halts.
    fn list_halts(&self) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let r = client.list_halts(proto::ListHaltsRequest {}).await?;
            Ok(list(r.halts, value::halt))
        })
    }

    /// SetTrust: assigns a trust level. `level` is a proto TrustLevel value (level + 1);
    /// the facade converts.
    fn set_trust(&self, agent_id: String, level: i32, scope: String, reason: String) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::SetTrustRequest {
                agent_id,
                level,
                scope,
                reason,
            };
            let r = client.set_trust(request).await?;
            Ok(map! {
                "assignment" => value::optional(r.assignment, value::trust_assignment),
                "audit_seq" => r.audit_seq,
            })
        })
    }

    /// GetTrust: an agent's effective trust level.
    fn get_trust(&self, agent_id: String, scope: String) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let r = client
                .get_trust(proto::GetTrustRequest { agent_id, scope })
                .await?;
            Ok(map! {
                "effective_level" => r.effective_level,
                "assignment" => value::optional(r.assignment, value::trust_assignment),
                "source" => r.source,
            })
        })
    }

    /// ListTrust: trust assignments.
    fn list_trust(&self, agent_id: String) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let r = client
                .list_trust(proto::ListTrustRequest { agent_id })
                .await?;
            Ok(list(r.assignments, value::trust_assignment))
        })
    }

    /// GrantConsent. `expires_at` is in microseconds since the Unix epoch.
    #[pyo3(signature = (agent_id, data_type, purpose, expires_at=None))]
    fn grant_consent(
        &self,
        agent_id: String,
        data_type: String,
        purpose: String,
        expires_at: Option<i64>,
    ) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::GrantConsentRequest {
                agent_id,
                data_type,
                purpose,
                expires_at: expires_at.map(value::to_timestamp),
            };
            let r = client.grant_consent(request).await?;
            Ok(map! {
                "grant" => value::optional(r.grant, value::consent),
                "audit_seq" => r.audit_seq,
            })
        })
    }

    /// RevokeConsent: revokes exactly one grant.
    fn revoke_consent(&self, agent_id: String, data_type: String, purpose: String) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::RevokeConsentRequest {
                agent_id,
                data_type,
                purpose,
            };
            Ok(Value::from(client.revoke_consent(request).await?.audit_seq))
        })
    }

    /// ListConsents: consent grants.
    fn list_consents(&self, agent_id: String) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let r = client
                .list_consents(proto::ListConsentsRequest { agent_id })
                .await?;
            Ok(list(r.grants, value::consent))
        })
    }

    /// GetBudgets: spent, reserved and remaining per applicable budget.
    fn get_budgets(&self, agent_id: String, session_id: String) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::GetBudgetsRequest {
                agent_id,
                session_id,
            };
            Ok(list(
                client.get_budgets(request).await?.budgets,
                value::budget,
            ))
        })
    }

    /// ListAgents: every agent Arbiter has seen.
    fn list_agents(&self) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let r = client.list_agents(proto::ListAgentsRequest {}).await?;
            Ok(list(r.agents, value::agent))
        })
    }

    /// GetPolicy: the policy bundle being served and its load history.
    fn get_policy(&self) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let r = client.get_policy(proto::GetPolicyRequest {}).await?;
            Ok(map! {
                "current" => value::optional(r.current, value::policy_load),
                "history" => list(r.history, value::policy_load),
                "agent_rules" => r.agent_rules,
                "budgets" => r.budgets,
            })
        })
    }

    /// CreatePrincipal: returns the principal and its API key (shown once; empty
    /// for a principal bound to a client-certificate identity `tls_identity`).
    #[pyo3(signature = (name, roles, agents, tls_identity=String::new()))]
    fn create_principal(
        &self,
        name: String,
        roles: Vec<i32>,
        agents: Vec<String>,
        tls_identity: String,
    ) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::CreatePrincipalRequest {
                name,
                roles,
                agents,
                tls_identity,
            };
            let r = client.create_principal(request).await?;
            Ok(map! {
                "principal" => value::optional(r.principal, value::principal),
                "api_key" => r.api_key,
            })
        })
    }

    /// ListPrincipals: every principal (never their keys).
    fn list_principals(&self) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let r = client
                .list_principals(proto::ListPrincipalsRequest {})
                .await?;
            Ok(list(r.principals, value::principal))
        })
    }

    /// RevokePrincipal: its key stops working at once.
    fn revoke_principal(&self, name: String) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let r = client
                .revoke_principal(proto::RevokePrincipalRequest { name })
                .await?;
            Ok(value::optional(r.principal, value::principal))
        })
    }

    /// QueryAudit: one page of entries. `since`/`until` are microseconds since the epoch.
    #[pyo3(signature = (*, agent_id=String::new(), session_id=String::new(), kinds=Vec::new(), outcome=String::new(), since=None, until=None, page_size=0, page_token=String::new()))]
    #[allow(clippy::too_many_arguments)]
    fn query_audit(
        &self,
        agent_id: String,
        session_id: String,
        kinds: Vec<String>,
        outcome: String,
        since: Option<i64>,
        until: Option<i64>,
        page_size: i32,
        page_token: String,
    ) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::QueryAuditRequest {
                filter: Some(filter(agent_id, session_id, kinds, outcome, since, until)),
                page_size,
                page_token,
            };
            let r = client.query_audit(request).await?;
            Ok(map! {
                "entries" => list(r.entries, value::audit_entry),
                "next_page_token" => r.next_page_token,
            })
        })
    }

    /// TailAudit: a stream of entries from `from_seq` on (0: only new ones).
    #[pyo3(signature = (*, agent_id=String::new(), session_id=String::new(), kinds=Vec::new(), outcome=String::new(), from_seq=0))]
    fn tail_audit(
        &self,
        agent_id: String,
        session_id: String,
        kinds: Vec<String>,
        outcome: String,
        from_seq: u64,
    ) -> Stream {
        let client = self.client.clone();
        Stream::new(async move {
            let request = proto::TailAuditRequest {
                filter: Some(filter(agent_id, session_id, kinds, outcome, None, None)),
                from_seq,
            };
            let stream = client.tail_audit(request).await?;
            Ok(stream.map(|item| item.map(value::audit_entry)).boxed())
        })
    }

    /// ExportAudit: a stream of JSONL lines.
    #[pyo3(signature = (*, from_seq=0, to_seq=0))]
    fn export_audit(&self, from_seq: u64, to_seq: u64) -> Stream {
        let client = self.client.clone();
        Stream::new(async move {
            let request = proto::ExportAuditRequest { from_seq, to_seq };
            let stream = client.export_audit(request).await?;
            Ok(stream.map(|item| item.map(Value::Str)).boxed())
        })
    }

    /// VerifyAudit: checks the chain over a range.
    #[pyo3(signature = (*, from_seq=0, to_seq=0, timeout=None))]
    fn verify_audit(&self, from_seq: u64, to_seq: u64, timeout: Option<f64>) -> PyResult<Pending> {
        let client = self.client(timeout)?;
        Ok(Pending::new(async move {
            let request = proto::VerifyAuditRequest { from_seq, to_seq };
            Ok(value::verify(client.verify_audit(request).await?))
        }))
    }

    /// GetCheckpoint: the latest signed checkpoint.
    fn get_checkpoint(&self) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let r = client
                .get_checkpoint(proto::GetCheckpointRequest {})
                .await?;
            Ok(map! {
                "checkpoint" => r.checkpoint,
                "tree_size" => r.tree_size,
                "root_hash" => r.root_hash,
            })
        })
    }

    /// GetInclusionProof: proves entry `seq` is in the tree of `tree_size` (0: latest).
    #[pyo3(signature = (seq, tree_size=0))]
    fn get_inclusion_proof(&self, seq: u64, tree_size: u64) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::GetInclusionProofRequest { seq, tree_size };
            let r = client.get_inclusion_proof(request).await?;
            Ok(map! {
                "leaf_index" => r.leaf_index,
                "tree_size" => r.tree_size,
                "hashes" => r.hashes,
            })
        })
    }

    /// GetConsistencyProof: proves the tree of `from_size` is a prefix of `to_size` (0: latest).
    #[pyo3(signature = (from_size, to_size=0))]
    fn get_consistency_proof(&self, from_size: u64, to_size: u64) -> Pending {
        let client = self.client.clone();
        Pending::new(async move {
            let request = proto::GetConsistencyProofRequest { from_size, to_size };
            let r = client.get_consistency_proof(request).await?;
            Ok(map! {
                "from_size" => r.from_size,
                "to_size" => r.to_size,
                "hashes" => r.hashes,
            })
        })
    }
}

#[pymodule]
fn _arbiter(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<Pending>()?;
    m.add_class::<Stream>()?;
    error::register(m)?;
    pending::register_exit_hook(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
