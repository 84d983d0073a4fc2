//! The Agents page: every agent seen, with presence, registered operator, effective
//! trust, halt and spend today; one agent's page adds its trust assignments, consent
//! grants, budget windows and last decisions, and (for operators and admins) the
//! forms that set trust and grant or revoke consent. Changes call the same engine
//! methods as the gRPC `SetTrust`, `GrantConsent` and `RevokeConsent` handlers, with
//! the same limits, roles and self-governance rule, so they are audited alike.
//!
//! Spend today and the last decisions are read from the audit log (`record` and
//! `evaluate` entries), so they hold across restarts and replicas.

use super::views::{usd, when};
use super::{audit, budgets, Caller, Peer, Shared};
use crate::domain::{check_len, Id, TrustLevel};
use crate::engine::EngineError;
use crate::store::{AuditLog, AuditQuery, StoreError};
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `record` entries read to add up today's spend; past this the page says "at least".
const SPEND_SCAN: usize = 20_000;
/// Entries per store read while adding up.
const SCAN_PAGE: u32 = 1_000;
/// Decisions shown on an agent's page.
const LAST_DECISIONS: u32 = 10;
const DAY_MS: i64 = 86_400_000;

/// Micro-USD settled by Record since 00:00 UTC, per agent.
struct Spend {
    micro_usd: HashMap<String, u64>,
    /// Every `record` entry of the day was read (else the sums are lower bounds).
    complete: bool,
}

impl Spend {
    fn text(&self, agent: &str) -> String {
        let sum = usd(self.micro_usd.get(agent).copied().unwrap_or(0));
        if self.complete {
            sum
        } else {
            format!("≥ {sum}")
        }
    }
}

/// The part of a canonical `record` entry that carries the settled cost.
#[derive(Deserialize)]
struct Settled {
    body: SettledBody,
}

#[derive(Deserialize)]
struct SettledBody {
    #[serde(default)]
    actual: Actual,
}

#[derive(Deserialize, Default)]
struct Actual {
    #[serde(default)]
    micro_usd: u64,
}

async fn spend_today(
    log: &AuditLog,
    agent: Option<&str>,
    now_ms: i64,
) -> Result<Spend, StoreError> {
    let q = AuditQuery {
        agent_id: agent.map(str::to_owned),
        kinds: vec!["record".to_owned()],
        since_ms: Some(now_ms - now_ms.rem_euclid(DAY_MS)),
        ..Default::default()
    };
    let mut spend = Spend {
        micro_usd: HashMap::new(),
        complete: true,
    };
    let (mut after, mut read) = (0, 0);
    loop {
        let page = log.query(&q, after, SCAN_PAGE).await?;
        for e in &page {
            // Entries are written by this server; one that does not parse adds nothing.
            let cost = serde_json::from_str::<Settled>(&e.canonical)
                .map_or(0, |s| s.body.actual.micro_usd);
            *spend.micro_usd.entry(e.agent_id.clone()).or_default() += cost;
        }
        read += page.len();
        match page.last() {
            Some(last) if page.len() == SCAN_PAGE as usize => after = last.seq,
            _ => return Ok(spend),
        }
        if read >= SPEND_SCAN {
            spend.complete = false;
            return Ok(spend);
        }
    }
}

#[derive(Serialize)]
struct AgentRow {
    id: String,
    /// The id as one URL path segment (ids may hold `/`, `:` and `@`).
    path: String,
    presence: &'static str,
    operator: String,
    trust: &'static str,
    halted: bool,
    first_seen: String,
    last_seen: String,
    spend_today: String,
}

fn rows(c: &Shared, spend: &Spend) -> Vec<AgentRow> {
    let mut agents = c.engine.agents();
    agents.sort_by(|a, b| a.0.cmp(&b.0));
    agents
        .into_iter()
        .map(|(id, info, level)| {
            let (presence, operator) = c.engine.presence(&id);
            AgentRow {
                presence: presence.map_or("no heartbeat", |p| p.name()),
                operator: operator.unwrap_or_default(),
                trust: level.name(),
                halted: c.engine.is_halted(&id),
                first_seen: when(info.first_seen_ms),
                last_seen: when(info.last_seen_ms),
                spend_today: spend.text(&id),
                path: url::form_urlencoded::byte_serialize(id.as_bytes()).collect(),
                id,
            }
        })
        .collect()
}

pub async fn page(State(c): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let flash = c.sessions.take_flash(&caller.session_id);
    let spend = match spend_today(&c.engine.audit_log(), None, c.engine.now_ms()).await {
        Ok(s) => s,
        Err(e) => return unavailable(&c, e),
    };
    let agents = rows(&c, &spend);
    c.views
        .page(
            "agents.html",
            &caller,
            flash,
            "agents",
            context! { agents => Serde(agents) },
        )
        .into_response()
}

#[derive(Serialize)]
struct Decision {
    seq: u64,
    time: String,
    session: String,
    action: String,
    outcome: String,
    /// The codes of the checks that did not pass.
    refused_by: String,
}

/// The part of a canonical `evaluate` entry the page summarises.
#[derive(Deserialize)]
struct Evaluated {
    body: EvaluatedBody,
}

#[derive(Deserialize)]
struct EvaluatedBody {
    #[serde(default)]
    action: serde_json::Value,
    #[serde(default)]
    reasons: Vec<EvaluatedReason>,
}

#[derive(Deserialize)]
struct EvaluatedReason {
    code: String,
    passed: bool,
}

/// "tool send_email", "POST https://…", "model gpt-4o", as `Action::summary` words it.
fn summary(action: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let mut parts = Vec::new();
    if let Some(t) = action.get("tool").and_then(text) {
        parts.push(format!("tool {t}"));
    }
    if let Some(api) = action.get("api").filter(|a| a.is_object()) {
        let field = |k: &str| api.get(k).and_then(text).unwrap_or_default();
        parts.push(format!("{} {}", field("method"), field("url")));
    }
    if let Some(m) = action.get("model").and_then(text) {
        parts.push(format!("model {m}"));
    }
    parts.join(", ")
}

async fn last_decisions(log: &AuditLog, agent: &str) -> Result<Vec<Decision>, StoreError> {
    let q = AuditQuery {
        agent_id: Some(agent.to_owned()),
        kinds: vec!["evaluate".to_owned()],
        newest_first: true,
        ..Default::default()
    };
    Ok(log
        .query(&q, 0, LAST_DECISIONS)
        .await?
        .into_iter()
        .map(|e| {
            let body = serde_json::from_str::<Evaluated>(&e.canonical)
                .ok()
                .map(|v| v.body);
            Decision {
                seq: e.seq,
                time: when(e.ts_ms),
                action: body
                    .as_ref()
                    .map(|b| summary(&b.action))
                    .unwrap_or_default(),
                refused_by: body
                    .map(|b| {
                        let codes: Vec<_> = b
                            .reasons
                            .into_iter()
                            .filter(|r| !r.passed)
                            .map(|r| r.code)
                            .collect();
                        codes.join(", ")
                    })
                    .unwrap_or_default(),
                session: e.session_id,
                outcome: e.outcome,
            }
        })
        .collect())
}

#[derive(Serialize)]
struct TrustRow {
    scope: String,
    level: &'static str,
    by: String,
    at: String,
}

#[derive(Serialize)]
struct ConsentRow {
    data_type: String,
    purpose: String,
    by: String,
    at: String,
    expires: String,
}

fn agent_id(c: &Shared, raw: &str) -> Result<String, Response> {
    Id::parse("agent_id", raw)
        .map(|i| i.to_string())
        .map_err(|e| c.error_page(StatusCode::BAD_REQUEST, &e.to_string()))
}

pub async fn detail(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let id = match agent_id(&c, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let flash = c.sessions.take_flash(&caller.session_id);
    let log = c.engine.audit_log();
    let read = async {
        let spend = spend_today(&log, Some(&id), c.engine.now_ms()).await?;
        Ok::<_, StoreError>((spend, last_decisions(&log, &id).await?))
    };
    let (spend, decisions) = match read.await {
        Ok(v) => v,
        Err(e) => return unavailable(&c, e),
    };
    let Some(agent) = rows(&c, &spend).into_iter().find(|a| a.id == id) else {
        return c.error_page(
            StatusCode::NOT_FOUND,
            &format!("agent_id: no agent {id} has been seen by this server"),
        );
    };
    let trust: Vec<TrustRow> = c
        .engine
        .list_trust(Some(&id))
        .into_iter()
        .map(|a| TrustRow {
            scope: a.scope,
            level: a.level.name(),
            by: a.assigned_by,
            at: when(a.assigned_ms),
        })
        .collect();
    let consents: Vec<ConsentRow> = c
        .engine
        .list_consents(Some(&id))
        .into_iter()
        .map(|g| ConsentRow {
            data_type: g.data_type,
            purpose: g.purpose.unwrap_or_default(),
            by: g.granted_by,
            at: when(g.granted_ms),
            expires: g.expires_ms.map(when).unwrap_or_default(),
        })
        .collect();
    let windows: Vec<_> = c
        .engine
        .budgets(Some(&id), None)
        .into_iter()
        .map(budgets::window)
        .collect();
    let governs = caller.operates() && caller.principal.governs(Some(&id));
    let levels: Vec<&str> = TrustLevel::ALL.iter().map(|l| l.name()).collect();
    c.views
        .page(
            "agent.html",
            &caller,
            flash,
            "agents",
            context! {
                agent => Serde(agent),
                trust => Serde(trust),
                consents => Serde(consents),
                windows => Serde(windows),
                decisions => Serde(decisions),
                reads_log => audit::reads_log(&caller),
                governs => governs,
                levels => levels,
            },
        )
        .into_response()
}

fn unavailable(c: &Shared, e: StoreError) -> Response {
    tracing::warn!(error = %e, "the console could not read the audit log");
    c.error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Arbiter cannot read the audit log right now; reload in a moment.",
    )
}

#[derive(Deserialize, Default)]
pub struct Change {
    #[serde(default)]
    csrf: String,
    /// "trust", "grant" or "revoke".
    #[serde(default)]
    action: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    data_type: String,
    #[serde(default)]
    purpose: String,
    /// RFC 3339; empty means the grant does not expire.
    #[serde(default)]
    expires: String,
}

/// A change read from the form, with each problem named by the gRPC field it maps to.
enum Parsed {
    Trust {
        level: TrustLevel,
        scope: String,
        reason: String,
    },
    Grant {
        data_type: String,
        purpose: Option<String>,
        expires_ms: Option<i64>,
    },
    Revoke {
        data_type: String,
        purpose: Option<String>,
    },
}

fn text(field: &str, v: &str, min: usize, max: usize) -> Result<String, String> {
    check_len(field, v, min, max).map_err(|e| e.to_string())?;
    if v.chars().any(char::is_control) {
        return Err(format!("{field}: must not contain control characters"));
    }
    Ok(v.to_owned())
}

fn optional(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

fn parse(f: &Change) -> Result<Parsed, String> {
    let consent = || -> Result<(String, Option<String>), String> {
        Ok((
            text("data_type", f.data_type.trim(), 1, 128)?,
            optional(text("purpose", f.purpose.trim(), 0, 128)?),
        ))
    };
    match f.action.as_str() {
        "trust" => Ok(Parsed::Trust {
            level: f
                .level
                .parse()
                .map_err(|_| "level: must be one of L0_OBSERVER … L5_AUTONOMOUS".to_owned())?,
            scope: text("scope", f.scope.trim(), 0, 256)?,
            reason: text("reason", &f.reason, 0, 1024)?,
        }),
        "grant" => {
            let (data_type, purpose) = consent()?;
            let expires_ms = match f.expires.trim() {
                "" => None,
                t => Some(
                    chrono::DateTime::parse_from_rfc3339(t)
                        .map_err(|_| {
                            "expires_at: must be an RFC 3339 time like 2026-12-31T00:00:00Z"
                                .to_owned()
                        })?
                        .timestamp_millis(),
                ),
            };
            Ok(Parsed::Grant {
                data_type,
                purpose,
                expires_ms,
            })
        }
        "revoke" => {
            let (data_type, purpose) = consent()?;
            Ok(Parsed::Revoke { data_type, purpose })
        }
        _ => Err("action: must be \"trust\", \"grant\" or \"revoke\"".into()),
    }
}

fn rpc(action: &str) -> &'static str {
    match action {
        "grant" => "Console.GrantConsent",
        "revoke" => "Console.RevokeConsent",
        _ => "Console.SetTrust",
    }
}

pub async fn change(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Change>,
) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let rpc = rpc(&f.action);
    if let Err(r) = c.may_change(&caller, rpc, &f.csrf).await {
        return r;
    }
    let agent = match Id::parse("agent_id", &id) {
        Ok(a) => a,
        Err(e) => return c.error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if let Err(r) = c.may_govern(&caller, rpc, Some(agent.as_str())).await {
        return r;
    }
    let parsed = match parse(&f) {
        Ok(p) => p,
        Err(problem) => return c.error_page(StatusCode::BAD_REQUEST, &problem),
    };
    let text = apply(&c, &caller, agent, parsed).await;
    let (ok, text) = match text {
        Ok(t) => (true, t),
        Err(EngineError::Unavailable(_)) => (
            false,
            "Arbiter cannot store the change right now; nothing was changed. Retry.".to_owned(),
        ),
        Err(e) => (false, format!("Not changed: {e}.")),
    };
    c.sessions.flash(&caller.session_id, ok, text);
    let path: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    Redirect::to(&format!("/agents/{path}")).into_response()
}

/// Makes the change through the engine; the flash text on success.
async fn apply(
    c: &Shared,
    caller: &Caller,
    agent: Id,
    parsed: Parsed,
) -> Result<String, EngineError> {
    let who = &caller.principal;
    match parsed {
        Parsed::Trust {
            level,
            scope,
            reason,
        } => {
            let where_ = if scope.is_empty() {
                "every action".to_owned()
            } else {
                format!("scope {scope}")
            };
            let (a, _) = c.engine.set_trust(who, agent, level, scope, reason).await?;
            Ok(format!(
                "Trust of {} set to {} for {where_}.",
                a.agent_id,
                a.level.name()
            ))
        }
        Parsed::Grant {
            data_type,
            purpose,
            expires_ms,
        } => {
            let (g, _) = c
                .engine
                .grant_consent(who, agent, data_type, purpose, expires_ms)
                .await?;
            Ok(format!(
                "Consent granted to {} for {}.",
                g.agent_id, g.data_type
            ))
        }
        Parsed::Revoke { data_type, purpose } => {
            let shown = agent.to_string();
            c.engine
                .revoke_consent(who, agent, data_type.clone(), purpose)
                .await?;
            Ok(format!("Consent of {shown} for {data_type} revoked."))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(action: &str) -> Change {
        Change {
            action: action.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_bad_field_is_named() {
        let mut f = form("trust");
        f.level = "L9".into();
        assert!(parse(&f).err().unwrap().starts_with("level:"));
        f.level = "l3".into();
        f.scope = "x".repeat(257);
        assert!(parse(&f).err().unwrap().starts_with("scope:"));
        let mut g = form("grant");
        assert!(parse(&g).err().unwrap().starts_with("data_type:"));
        g.data_type = "pii".into();
        g.expires = "tomorrow".into();
        assert!(parse(&g).err().unwrap().starts_with("expires_at:"));
        g.expires = String::new();
        g.purpose = "a\u{7}b".into();
        assert!(parse(&g).err().unwrap().contains("control characters"));
        assert!(parse(&form("promote"))
            .err()
            .unwrap()
            .starts_with("action:"));
    }

    #[test]
    fn summaries_read_like_the_cli() {
        let a = serde_json::json!({"tool": "send_email", "api": null, "model": null});
        assert_eq!(summary(&a), "tool send_email");
        let a =
            serde_json::json!({"api": {"method": "POST", "url": "https://x.test/"}, "model": "m"});
        assert_eq!(summary(&a), "POST https://x.test/, model m");
    }
}
