//! The engine runs the pipeline against the live state and commits what it decided.
//! It takes one consistent snapshot under the state lock, applies the pipeline's
//! intents to memory, hands the audit entry and the matching state changes to the
//! batcher, and answers only once both are durable. If the commit fails, the memory
//! changes are undone and the caller gets UNAVAILABLE: never an ALLOW that is not in
//! the log.

mod admin;
mod approval;
mod audit;
mod background;
mod delegate;
mod entries;
mod evaluate;
mod halt;
mod key_ring;
mod policy;
mod presence;
mod principals;
mod record;
mod replies;
mod tail;
mod tool_pins;

pub use admin::{BudgetView, PolicyInfo};
pub use audit::VerifyReport;
pub use background::spawn_loops;
pub use delegate::{DelegateInput, Delegated};
pub use evaluate::{EvaluateInput, EvaluateResult};
pub use key_ring::{key_ring_summary, KeyRingRecord};
pub use policy::{compile_published, Adoption};
pub use record::{RecordInput, RecordOutcome, RecordResult};
pub use tool_pins::{PinDecision, ReportedTool, ToolAnswer};

use crate::audit::batcher::CommitError;
use crate::audit::refusal::Refusal;
use crate::audit::{BatcherHandle, EntryDraft, KeyRing};
use crate::clock::Clock;
use crate::domain::{Action, ParseError};
use crate::policy::{CompiledPolicy, Redaction};
use crate::state::{AgentInfo, RuntimeState};
use crate::store::{StateOp, Store, StoreError};
use arc_swap::ArcSwap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Why the engine could not answer. A denial is not an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Aborted(String),
    /// The sequenced commit refused the change (another replica got there first);
    /// nothing was written. Callers that can answer better match on the variant.
    #[error("{0}")]
    Lost(Refusal),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this (already audited).
    #[error("{0}")]
    PermissionDenied(String),
    /// A policy refusal outside Evaluate, with its machine-readable code.
    #[error("{code}: {message}")]
    Refused { code: &'static str, message: String },
    /// The store or the audit writer failed: the caller must fail closed.
    #[error("cannot decide: {0}")]
    Unavailable(String),
}

impl From<CommitError> for EngineError {
    fn from(e: CommitError) -> Self {
        match e {
            // Another replica changed it first: nothing was written; fail closed.
            CommitError::Refused(why) => Self::Lost(why),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

pub use crate::domain::Principal;

/// Approval states in the order they can follow each other.
fn approval_rank(state: crate::state::ApprovalState) -> u8 {
    use crate::state::ApprovalState::*;
    match state {
        Pending => 0,
        Granted | Denied | Expired => 1,
        Consumed => 2,
    }
}

/// Point-in-time counts of run-time state, for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateGauges {
    pub pending_approvals: usize,
    pub active_halts: usize,
    pub open_reservations: usize,
}

/// How often an agent's last-seen time is written back; presence does not need
/// millisecond freshness in the database.
const TOUCH_INTERVAL_MS: i64 = 60_000;

pub struct Engine {
    store: Arc<dyn Store>,
    batcher: BatcherHandle,
    policy: ArcSwap<CompiledPolicy>,
    state: Mutex<RuntimeState>,
    clock: Arc<dyn Clock>,
    keys: KeyRing,
    tokens: crate::delegation::TokenKeys,
    digest_key: [u8; 32],
    principals: Arc<std::sync::RwLock<crate::auth::PrincipalBook>>,
    /// Bumped after every change to `principals`, so open streams re-check their caller.
    principal_changes: tokio::sync::watch::Sender<u64>,
    /// The newest audit seq known committed on the shared store (by any server), polled
    /// while someone follows the log (`tail`).
    log_head: tokio::sync::watch::Sender<u64>,
    /// Every change to an approval, for WatchApproval.
    approval_events: tokio::sync::broadcast::Sender<crate::state::Approval>,
    /// A published bundle that did not compile here, so it is reported once.
    refused_policy: Mutex<Option<String>>,
    /// Audit head of the last control snapshot applied: budget counters and agents
    /// changed after it are the ones to re-read (shared store).
    changes_seen: AtomicU64,
    /// Serializes halt changes on this server, so the halt a change replaces is the one
    /// its release rule was checked against.
    halt_changes: tokio::sync::Mutex<()>,
    /// Serializes MCP tool pin changes on this server (`tool_pins`), so a definition
    /// two gateways report at once is pinned once.
    pin_changes: tokio::sync::Mutex<()>,
}

impl Engine {
    /// Builds the engine and loads state from the store.
    pub async fn load(
        store: Arc<dyn Store>,
        batcher: BatcherHandle,
        policy: Arc<CompiledPolicy>,
        clock: Arc<dyn Clock>,
        keys: KeyRing,
        tokens: crate::delegation::TokenKeys,
    ) -> Result<Self, StoreError> {
        let digest_key = keys.active().derive(b"arbiter-context-digest-v1");
        let now = clock.now_ms();
        let retention = policy.defaults.request_id_retention.as_millis() as i64;
        let img = store.load(now, now - retention).await?;
        let mut s = RuntimeState::default();
        for a in img.trust {
            s.trust.set(a);
        }
        for g in img.consent {
            s.consent.upsert(g);
        }
        for pin in img.tool_pins {
            s.tool_pins.put(pin);
        }
        for (k, spent) in img.counters {
            s.ledger.load_spent(k, spent);
        }
        for r in img.reservations {
            s.ledger.reserve(r);
        }
        for d in img.open_decisions {
            s.open_decisions.insert(d.decision_id.clone(), d);
        }
        for (id, first, last, allowed) in img.agents {
            s.agents.insert(
                id,
                AgentInfo {
                    first_seen_ms: first,
                    last_seen_ms: last,
                    last_allowed_ms: allowed,
                    persisted_ms: last,
                },
            );
        }
        for (agent, session, started) in img.sessions {
            s.sessions.insert((agent, session), started);
        }
        for (agent, operator) in img.operators {
            s.operators.insert(agent, operator);
        }
        for a in img.approvals {
            s.approvals.put(a);
        }
        for h in img.halts {
            s.halts.engage(h);
        }
        s.watchdog_done.extend(img.watchdog_marks);
        for p in img.presence {
            s.presence.insert(
                p.agent_id,
                crate::state::Presence {
                    status: p.status,
                    last_heartbeat_ms: p.last_heartbeat_ms,
                    silence_halted_ms: p.silence_halted_ms,
                },
            );
        }
        for r in img.replies {
            let key = r.key.clone();
            if r.kind == <RecordResult as replies::Answer>::KIND {
                if let Some(memo) = replies::memo_from_row(r)? {
                    s.recorded.insert(key, memo);
                }
            } else if let Some(memo) = replies::memo_from_row(r)? {
                s.requests.insert(key, memo);
            }
        }
        let principals = crate::auth::PrincipalBook::from_rows(&store.principals().await?);
        Ok(Self {
            approval_events: tokio::sync::broadcast::channel(1024).0,
            refused_policy: Mutex::new(None),
            changes_seen: AtomicU64::new(0),
            halt_changes: tokio::sync::Mutex::new(()),
            pin_changes: tokio::sync::Mutex::new(()),
            principals: Arc::new(std::sync::RwLock::new(principals)),
            principal_changes: tokio::sync::watch::Sender::new(0),
            log_head: tokio::sync::watch::Sender::new(0),
            store,
            batcher,
            policy: ArcSwap::new(policy),
            state: Mutex::new(s),
            clock,
            keys,
            tokens,
            digest_key,
        })
    }

    /// Replaces the control state (trust, consent, halts, approvals, operators,
    /// principals) with what the shared database holds, so a change committed by another
    /// replica applies here; takes in the settled spend and the agents other replicas
    /// recorded and serves the newest published policy bundle. Returns false, changing nothing, when
    /// the snapshot predates a control change this server committed (the caller retries
    /// shortly).
    pub async fn refresh_control(&self) -> Result<bool, StoreError> {
        // A single writer's memory is the state: no other server changes it.
        let Some(replicated) = self.store.replicated() else {
            return Ok(true);
        };
        let changed_after = self.changes_seen.load(Ordering::Acquire);
        let (seq, img) = replicated.load_control(changed_after).await?;
        if self.batcher.control_seq() > seq {
            return Ok(false);
        }
        let principals = img
            .principals
            .as_deref()
            .map(crate::auth::PrincipalBook::from_rows);
        let mut decided = Vec::new();
        {
            // Changes apply in sequence order only. Under both locks: a local change
            // commits (raising control_seq) before it takes either lock to apply itself,
            // so a snapshot older than it either sees control_seq and stands back, or is
            // applied first and then overtaken by the local apply.
            let mut s = self.lock();
            let mut book = self.principals.write().unwrap_or_else(|p| p.into_inner());
            if self.batcher.control_seq() > seq {
                return Ok(false);
            }
            if seq < self.changes_seen.load(Ordering::Acquire) {
                // Older than the snapshot already applied: never replaces it.
                return Ok(true);
            }
            let replaced = principals.is_some();
            if let Some(principals) = principals {
                *book = principals;
            }
            drop(book);
            if replaced {
                self.principals_changed();
            }
            let mut trust = crate::state::TrustBook::default();
            for a in img.trust {
                trust.set(a);
            }
            let mut consent = crate::state::ConsentBook::default();
            for g in img.consent {
                consent.upsert(g);
            }
            let mut halts = crate::state::HaltBoard::default();
            for h in img.halts {
                halts.engage(h);
            }
            s.trust = trust;
            s.consent = consent;
            // Pins change in memory only after their commit (under `pin_changes`), so
            // the database's copy is never behind this server's.
            let mut pins = crate::state::PinBook::default();
            for pin in img.tool_pins {
                pins.put(pin);
            }
            s.tool_pins = pins;
            s.halts = halts;
            // Approvals and operators change in memory before their commit, and are never
            // deleted: merge, keeping what this server holds that the snapshot does not
            // (in flight) and never moving an approval back to an earlier state.
            for a in img.approvals {
                let local = s.approvals.get(&a.id).map(|l| l.state);
                if local.is_none_or(|l| approval_rank(a.state) >= approval_rank(l)) {
                    if local.is_some_and(|l| l != a.state) {
                        // WatchApproval streams on this replica hear a decision made on
                        // another one.
                        decided.push(a.clone());
                    }
                    s.approvals.put(a);
                }
            }
            s.operators.extend(img.operators);
            for (key, spent) in img.counters {
                s.ledger.merge_spent(key, spent);
            }
            for (id, first, last, allowed) in img.agents {
                let info = s.agents.entry(id).or_insert(AgentInfo {
                    first_seen_ms: first,
                    last_seen_ms: last,
                    last_allowed_ms: allowed,
                    persisted_ms: last,
                });
                info.first_seen_ms = info.first_seen_ms.min(first);
                info.last_seen_ms = info.last_seen_ms.max(last);
                info.last_allowed_ms = info.last_allowed_ms.max(allowed);
            }
            self.changes_seen.fetch_max(seq, Ordering::AcqRel);
        }
        for a in decided {
            let _ = self.approval_events.send(a);
        }
        if img
            .published_policy
            .is_some_and(|v| v != self.policy.load().version)
        {
            if let Adoption::Adopted(version) = self.adopt_published_policy().await? {
                tracing::info!(%version, "serving the policy bundle another replica published");
            }
        }
        Ok(true)
    }

    pub fn policy(&self) -> Arc<CompiledPolicy> {
        self.policy.load_full()
    }

    /// Counts for the metrics gauges, read under the state lock at scrape time (never
    /// on the request path).
    pub fn gauges(&self) -> StateGauges {
        let now = self.now_ms();
        let s = self.lock();
        StateGauges {
            pending_approvals: s.approvals.pending_count(now),
            active_halts: s.halts.len(),
            open_reservations: s.ledger.open_reservations(),
        }
    }

    /// The store itself, for `startup`'s health checks, metrics readings and shutdown;
    /// request handlers read the log through [`Engine::audit_log`] instead.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether this server runs the singleton job `job` (the watchdog, approval expiry)
    /// now: on a replicated store only the holder of its lease does, so one replica at
    /// a time acts; the embedded store's one server always does.
    pub(crate) async fn leads(&self, job: &'static str) -> bool {
        match self.store.replicated() {
            Some(replicated) => replicated.lead(job).await,
            None => true,
        }
    }

    /// A read-only handle on the committed audit log.
    pub fn audit_log(&self) -> crate::store::AuditLog {
        crate::store::AuditLog::new(self.store.clone())
    }

    pub fn batcher(&self) -> &BatcherHandle {
        &self.batcher
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn lock(&self) -> MutexGuard<'_, RuntimeState> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store_available(&self) -> bool {
        *self.batcher.healthy().borrow()
    }

    /// Keyed digest for sensitive context values: proves what was seen without keeping it.
    fn digest_value(&self, value: &str) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.digest_key).expect("any key length");
        m.update(value.as_bytes());
        format!("hmac-sha256:{}", hex::encode(m.finalize().into_bytes()))
    }

    /// Applies the policy's sensitive-key rules to a context or metadata map.
    fn redact<'a>(
        &self,
        policy: &CompiledPolicy,
        map: &'a BTreeMap<String, String>,
    ) -> entries::Redacted<'a> {
        entries::Redacted::of(map, |k, v| match policy.sensitive_keys.get(k) {
            Some(Redaction::Drop) => None,
            Some(Redaction::Digest) => Some(self.digest_value(v).into()),
            None => Some(v.into()),
        })
    }

    /// The action's arguments as audit entries and approvals record them: values under a
    /// sensitive key (at any depth) become keyed digests or are left out, non-integer
    /// numbers become their RFC 8785 text. The action digest is computed over the raw
    /// action, so it still binds the exact values.
    fn recorded_arguments(
        &self,
        policy: &CompiledPolicy,
        action: &Action,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let args = action.arguments.as_ref()?;
        Some(self.redact_json(policy, args.as_map()))
    }

    fn redact_json(
        &self,
        policy: &CompiledPolicy,
        map: &serde_json::Map<String, serde_json::Value>,
    ) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut out = serde_json::Map::new();
        for (k, v) in map {
            let kept = match policy.sensitive_keys.get(k) {
                Some(Redaction::Drop) => continue,
                // A string digests like a context value of the same text, so the two
                // correlate; anything else digests by its canonical JSON.
                Some(Redaction::Digest) => Value::from(match v {
                    Value::String(s) => self.digest_value(s),
                    other => self.digest_value(&crate::jcs::to_string_any_number(
                        &crate::jcs::Canonical(other),
                    )),
                }),
                None => self.redact_value(policy, v),
            };
            out.insert(k.clone(), kept);
        }
        out
    }

    fn redact_value(&self, policy: &CompiledPolicy, v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => serde_json::Value::Object(self.redact_json(policy, m)),
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items.iter().map(|i| self.redact_value(policy, i)).collect(),
            ),
            // Entries hold no floats (SPEC §6: every language re-derives the bytes), so a
            // non-integer number is recorded as its RFC 8785 text; the digest keeps the number.
            serde_json::Value::Number(n) if n.is_f64() => {
                serde_json::Value::String(crate::jcs::to_string_any_number(n))
            }
            other => other.clone(),
        }
    }

    /// Marks an agent (and session) as seen; returns the state changes to persist.
    fn touch(
        s: &mut RuntimeState,
        agent: &str,
        session: Option<&str>,
        allowed: bool,
        now: i64,
        ops: &mut Vec<StateOp>,
    ) {
        let info = s.agents.entry(agent.to_owned()).or_insert(AgentInfo {
            first_seen_ms: now,
            last_seen_ms: now,
            last_allowed_ms: None,
            persisted_ms: i64::MIN,
        });
        info.last_seen_ms = info.last_seen_ms.max(now);
        if allowed {
            info.last_allowed_ms = Some(now);
        }
        if now.saturating_sub(info.persisted_ms) >= TOUCH_INTERVAL_MS {
            info.persisted_ms = now;
            ops.push(StateOp::TouchAgent {
                agent_id: agent.to_owned(),
                first_seen_ms: info.first_seen_ms,
                last_seen_ms: now,
                last_allowed_ms: info.last_allowed_ms,
            });
        }
        if let Some(session) = session {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                s.sessions.entry((agent.to_owned(), session.to_owned()))
            {
                slot.insert(now);
                ops.push(StateOp::StartSession {
                    agent_id: agent.to_owned(),
                    session_id: session.to_owned(),
                    started_ms: now,
                });
            }
        }
    }

    /// Writes an entry that changes no decision state (admin changes, policy loads).
    async fn append(&self, draft: EntryDraft, ops: Vec<StateOp>) -> Result<u64, EngineError> {
        Ok(self.batcher.append(draft, ops).await?.seq)
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}
