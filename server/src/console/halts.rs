//! The Kill switch page: the active halts with who, when and why; the global mode
//! ladder; halts per agent and per session; resume. Every change first shows a
//! confirmation that says what will stop (or start again), then calls `Engine::halt` /
//! `Engine::resume` with the same checks as the gRPC `Halt` and `Resume` handlers
//! (roles, the target's ids, the reason's length, and no lifting of one's own halt).

use super::views::when;
use super::{Peer, Shared};
use crate::domain::{check_len, Id};
use crate::engine::EngineError;
use crate::state::{HaltMode, HaltTarget};
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Row {
    scope: &'static str,
    agent: String,
    session: String,
    target: String,
    mode: &'static str,
    reason: String,
    engaged_by: String,
    engaged_at: String,
}

pub async fn page(State(c): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let flash = c.sessions.take_flash(&caller.session_id);
    let halts: Vec<Row> = c
        .engine
        .halts()
        .into_iter()
        .map(|h| {
            let (scope, agent, session) = match &h.target {
                HaltTarget::Global => ("global", String::new(), String::new()),
                HaltTarget::Agent(a) => ("agent", a.clone(), String::new()),
                HaltTarget::Session(a, s) => ("session", a.clone(), s.clone()),
            };
            Row {
                scope,
                agent,
                session,
                target: h.target.describe(),
                mode: h.mode.name(),
                reason: h.reason,
                engaged_by: h.engaged_by,
                engaged_at: when(h.engaged_ms),
            }
        })
        .collect();
    let global = halts.iter().find(|h| h.scope == "global").map(|h| h.mode);
    c.views
        .page(
            "halts.html",
            &caller,
            flash,
            "halts",
            context! { halts => Serde(halts), global => global },
        )
        .into_response()
}

#[derive(Deserialize, Serialize, Clone)]
pub struct Change {
    #[serde(default)]
    csrf: String,
    /// "halt" or "resume".
    #[serde(default)]
    action: String,
    /// "global", "agent" or "session".
    #[serde(default)]
    scope: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    session: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    reason: String,
    /// "yes" once the confirmation was shown and accepted.
    #[serde(default)]
    confirmed: String,
}

/// A change read from the form, with the problem named by field (as the gRPC API).
struct Parsed {
    resume: bool,
    target: HaltTarget,
    mode: Option<HaltMode>,
    reason: String,
}

fn parse(f: &Change) -> Result<Parsed, String> {
    let resume = match f.action.as_str() {
        "halt" => false,
        "resume" => true,
        _ => return Err("action: must be \"halt\" or \"resume\"".into()),
    };
    let id = |field: &str, v: &str| {
        Id::parse(field, v.trim())
            .map(|i| i.to_string())
            .map_err(|e| e.to_string())
    };
    let target = match f.scope.as_str() {
        "global" => HaltTarget::Global,
        "agent" => HaltTarget::Agent(id("target.agent_id", &f.agent)?),
        "session" => HaltTarget::Session(
            id("target.agent_id", &f.agent)?,
            id("target.session_id", &f.session)?,
        ),
        _ => return Err("target.scope: must be global, agent or session".into()),
    };
    let mode =
        if resume {
            None
        } else {
            Some(HaltMode::parse(&f.mode).ok_or_else(|| {
                "mode: must be HALT_NONCRITICAL, HALT_ALL or EMERGENCY".to_owned()
            })?)
        };
    check_len("reason", &f.reason, 1, 1024).map_err(|e| e.to_string())?;
    Ok(Parsed {
        resume,
        target,
        mode,
        reason: f.reason.clone(),
    })
}

/// What the change will do, in the words the confirmation shows.
fn consequence(p: &Parsed) -> String {
    let who = p.target.describe();
    match (p.mode, &p.target) {
        (None, _) => format!(
            "The halt on {who} is lifted: its Evaluate calls are decided by policy again."
        ),
        (Some(_), HaltTarget::Agent(_) | HaltTarget::Session(..)) => format!(
            "Every Evaluate of {who} is denied (halt.engaged), critical actions included, \
             until it is resumed. Work delegated by it stops too."
        ),
        (Some(HaltMode::HaltNoncritical), HaltTarget::Global) => "Every agent's actions are denied (halt.engaged) except those the policy marks critical \
             and the agents marked critical."
            .into(),
        (Some(HaltMode::HaltAll), HaltTarget::Global) => "Every agent's actions are denied (halt.engaged); only actions the policy marks critical \
             still pass."
            .into(),
        (Some(HaltMode::Emergency), HaltTarget::Global) => {
            "Every Evaluate of every agent is denied (halt.engaged): nothing passes, critical \
             actions included."
                .into()
        }
    }
}

pub async fn change(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<Change>,
) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let rpc = if f.action == "resume" {
        "Console.Resume"
    } else {
        "Console.Halt"
    };
    if let Err(r) = c.may_change(&caller, rpc, &f.csrf).await {
        return r;
    }
    let p = match parse(&f) {
        Ok(p) => p,
        Err(problem) => return c.error_page(StatusCode::BAD_REQUEST, &problem),
    };
    if f.confirmed != "yes" {
        let what = consequence(&p);
        return c
            .views
            .page(
                "halt_confirm.html",
                &caller,
                None,
                "halts",
                context! { form => Serde(&f), what => what, target => p.target.describe() },
            )
            .into_response();
    }
    if p.resume {
        if let Err(r) = c.may_govern(&caller, rpc, p.target.agent()).await {
            return r;
        }
    }
    let target = p.target.describe();
    let outcome = match p.mode {
        None => c.engine.resume(&caller.principal, p.target, p.reason).await,
        Some(mode) => {
            c.engine
                .halt(&caller.principal, p.target, mode, p.reason)
                .await
        }
    };
    let (ok, text) = match outcome {
        Ok(h) if p.resume => (
            true,
            format!("Resumed {target} (the {} halt is lifted).", h.mode.name()),
        ),
        Ok(h) => (true, format!("{} halt engaged on {target}.", h.mode.name())),
        Err(EngineError::Unavailable(_)) => (
            false,
            "Arbiter cannot store the change right now; nothing was changed. Retry.".to_owned(),
        ),
        Err(e) => (false, format!("Not changed: {e}.")),
    };
    c.sessions.flash(&caller.session_id, ok, text);
    Redirect::to("/halts").into_response()
}
