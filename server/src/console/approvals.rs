//! The Approvals page: the pending queue (refreshed by `events::approvals` the moment
//! an approval appears or changes), the recently decided or expired ones, and the
//! grant/deny form. Deciding calls `Engine::approve` exactly as the gRPC `Approve`
//! handler does, so four-eyes, races and the audit entry are the engine's.

use super::views::{span, usd, when};
use super::{Caller, Peer, Shared};
use crate::domain::check_len;
use crate::engine::EngineError;
use crate::state::{Approval, ApprovalState};
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};

/// Decided or expired approvals shown under the queue.
const RECENT: usize = 50;

#[derive(Serialize)]
struct Row {
    id: String,
    agent: String,
    session: String,
    summary: String,
    tool: Option<String>,
    api: Option<String>,
    model: Option<String>,
    /// The recorded arguments (sensitive keys already digests), pretty-printed.
    arguments: Option<String>,
    action_json: String,
    held: Option<String>,
    policy_version: String,
    digest: String,
    why: String,
    state: &'static str,
    requested: String,
    age: String,
    expires: String,
    expires_in: String,
    decided_by: String,
    decided_at: Option<String>,
    decision_reason: String,
    operator: Option<String>,
    /// Why the viewer cannot decide this one, said before they try.
    four_eyes: Option<String>,
}

/// `GET /approvals/{id}`: the stable link webhooks carry (docs/operations.md,
/// "Webhooks") lands on the queue with that approval's card in view. Only an id made of
/// name characters is echoed into the `Location` header; anything else is not a link
/// Arbiter ever made.
pub(super) async fn link(Path(id): Path<String>) -> Response {
    let name_like = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_like {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    Redirect::to(&format!("/approvals#approval-{id}")).into_response()
}

fn row(c: &Shared, caller: &Caller, a: Approval, now: i64) -> Row {
    let action: serde_json::Value = serde_json::from_str(&a.action_json).unwrap_or_default();
    let text = |k: &str| action.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let api = action
        .get("api")
        .filter(|v| !v.is_null())
        .map(|api| match api {
            serde_json::Value::Object(o) => format!(
                "{} {}",
                o.get("method").and_then(|v| v.as_str()).unwrap_or(""),
                o.get("url").and_then(|v| v.as_str()).unwrap_or("")
            ),
            other => other.to_string(),
        });
    let arguments = action
        .get("arguments")
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_string_pretty(v).unwrap_or_default());
    let (_, operator) = c.engine.presence(&a.agent_id);
    let me = &caller.principal;
    let four_eyes = if me.is_anonymous() {
        None
    } else if me.acts_for(&a.agent_id) {
        Some(format!(
            "You act for agent {} and cannot decide its approvals.",
            a.agent_id
        ))
    } else if operator.as_deref() == Some(me.name.as_str()) {
        Some(format!(
            "You are the registered operator of agent {}: another operator must decide (four-eyes).",
            a.agent_id
        ))
    } else {
        None
    };
    Row {
        summary: a.action_summary,
        tool: text("tool"),
        api,
        model: text("model"),
        arguments,
        action_json: serde_json::to_string_pretty(&action).unwrap_or(a.action_json),
        held: a.reservation.as_ref().map(|r| usd(r.amounts.micro_usd)),
        policy_version: a.policy_version,
        digest: a.action_digest,
        why: a.reason,
        state: a.state.name(),
        requested: when(a.requested_ms),
        age: span(now - a.requested_ms),
        expires: when(a.expires_ms),
        expires_in: span(a.expires_ms - now),
        decided_by: a.decided_by,
        decided_at: a.decided_ms.map(when),
        decision_reason: a.decision_reason,
        operator,
        four_eyes,
        id: a.id,
        agent: a.agent_id,
        session: a.session_id,
    }
}

fn rows(c: &Shared, caller: &Caller) -> (Vec<Row>, Vec<Row>) {
    let now = c.engine.now_ms();
    let mut all = c.engine.approvals(None, None);
    all.sort_by_key(|a| std::cmp::Reverse(a.decided_ms.unwrap_or(a.requested_ms)));
    let (pending, done): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|a| a.state == ApprovalState::Pending);
    let mut pending = pending;
    pending.sort_by_key(|a| a.requested_ms);
    (
        pending
            .into_iter()
            .map(|a| row(c, caller, a, now))
            .collect(),
        done.into_iter()
            .take(RECENT)
            .map(|a| row(c, caller, a, now))
            .collect(),
    )
}

pub async fn page(State(c): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let flash = c.sessions.take_flash(&caller.session_id);
    let (pending, done) = rows(&c, &caller);
    c.views
        .page(
            "approvals.html",
            &caller,
            flash,
            "approvals",
            context! { pending => Serde(pending), done => Serde(done) },
        )
        .into_response()
}

/// The queue alone, for the live refresh.
pub async fn list(State(c): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(_) => return StatusCode::UNAUTHORIZED.into_response(),
    };
    let (pending, done) = rows(&c, &caller);
    c.views
        .page(
            "approvals_list.html",
            &caller,
            None,
            "approvals",
            context! { pending => Serde(pending), done => Serde(done) },
        )
        .into_response()
}

#[derive(Deserialize)]
pub struct Decide {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
}

pub async fn decide(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Decide>,
) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    if let Err(r) = c.may_change(&caller, "Console.Approve", &f.csrf).await {
        return r;
    }
    let grant = match f.decision.as_str() {
        "grant" => true,
        "deny" => false,
        _ => {
            return c.error_page(
                StatusCode::BAD_REQUEST,
                "decision: must be \"grant\" or \"deny\"",
            )
        }
    };
    // The same limits as the gRPC request.
    if let Err(e) =
        check_len("approval_id", &id, 1, 64).and_then(|()| check_len("reason", &f.reason, 0, 1024))
    {
        return c.error_page(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let outcome = c
        .engine
        .approve(&caller.principal, &id, grant, f.reason)
        .await;
    let (ok, text) = match outcome {
        Ok(a) => (
            true,
            format!(
                "Approval {} {} by {}.",
                a.id,
                a.state.name(),
                caller.principal.name
            ),
        ),
        Err(EngineError::PermissionDenied(why)) => {
            (false, format!("Refused: {why}. Nothing was changed."))
        }
        Err(EngineError::Unavailable(_)) => (
            false,
            "Arbiter cannot store decisions right now; nothing was changed. Retry.".to_owned(),
        ),
        Err(e) => (false, format!("Not decided: {e}.")),
    };
    c.sessions.flash(&caller.session_id, ok, text);
    Redirect::to("/approvals").into_response()
}
