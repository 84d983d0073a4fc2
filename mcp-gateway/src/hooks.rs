//! Claude Code HTTP hooks (`POST /hooks/claude-code`), on the same code path as a
//! `tools/call`: `PreToolUse` is the Evaluate (held while an approval is pending) and is
//! answered with `permissionDecision` allow or deny; `PostToolUse` is the Record. The
//! hook authenticates with the same agent key (`Authorization: Bearer`, from the hook's
//! `headers`). Every failure answers deny with 200, because Claude Code treats a non-2xx
//! answer or a connection failure as a non-blocking error unless the hook is configured
//! to block on failure (docs/mcp.md says to configure that too). A tool priced in
//! `hooks.claude_code.prices` (by Claude Code's own tool name) has its price sent as the
//! estimate and Recorded as the cost, so Arbiter's budgets cap Claude Code's spend too.

use crate::call::{self, Settled};
use crate::gateway::Gateway;
use crate::identity::Caller;
use arbiter_client::{ActionOutcome, DecisionOutcome};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rmcp::model::JsonObject;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Bound on remembered (tool_use_id → decision) pairs awaiting their PostToolUse.
const OPEN_MAX: usize = 100_000;

/// The endpoint's state: the gateway whose `decide` it shares, the prices of Claude
/// Code's tools (`hooks.claude_code.prices`) and the allowed calls awaiting their
/// PostToolUse.
pub struct ClaudeCode {
    gateway: Gateway,
    prices: BTreeMap<String, u64>,
    open: Mutex<HashMap<String, Open>>,
}

/// An allowed call: its decision, and the price its Record charges.
struct Open {
    decision: String,
    price: Option<u64>,
}

impl ClaudeCode {
    pub fn new(gateway: Gateway, prices: BTreeMap<String, u64>) -> Self {
        Self {
            gateway,
            prices,
            open: Mutex::new(HashMap::new()),
        }
    }
}

pub async fn claude_code(
    State(hooks): State<Arc<ClaudeCode>>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<Value>,
) -> Response {
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    let session = field("session_id").to_owned();
    let gw = &hooks.gateway;
    if let Err(e) = gw.bind_session(&caller.agent, &session) {
        return pre_answer("deny", &e.message);
    }
    match field("hook_event_name") {
        "PreToolUse" => pre_tool_use(&hooks, &caller, &session, &body).await,
        "PostToolUse" => post_tool_use(&hooks, &caller, &body).await,
        other => (
            StatusCode::BAD_REQUEST,
            format!("hook_event_name: expected PreToolUse or PostToolUse, got {other:?}"),
        )
            .into_response(),
    }
}

async fn pre_tool_use(
    hooks: &ClaudeCode,
    caller: &Caller,
    session: &str,
    body: &Value,
) -> Response {
    let tool = body
        .get("tool_name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if tool.is_empty() {
        return pre_answer("deny", "tool_name: missing");
    }
    let arguments: JsonObject = body
        .get("tool_input")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // The price is the estimate budgets reserve (and the same on a retry, so an
    // approval's action digest still matches).
    let price = hooks.prices.get(tool).copied();
    let call = call::Call {
        price,
        ..call::Call::new(tool, &arguments)
    };
    let decision = match call::decide(&hooks.gateway, caller, session, &call, None, None).await {
        Err(e) => return pre_answer("deny", &e.message),
        Ok(Settled::Held(approval)) => return pre_answer("deny", &pending_text(&approval)),
        Ok(Settled::Decided(d)) => *d,
    };
    match decision.outcome {
        DecisionOutcome::Allow => {
            if let Some(id) = body.get("tool_use_id").and_then(Value::as_str) {
                let mut map = hooks.open.lock().expect("open calls lock");
                if map.len() >= OPEN_MAX {
                    map.clear();
                }
                let open = Open {
                    decision: decision.decision_id.clone(),
                    price,
                };
                map.insert(id.to_owned(), open);
            }
            pre_answer(
                "allow",
                &format!("allowed by Arbiter (decision {})", decision.decision_id),
            )
        }
        DecisionOutcome::Deny => match call::refuse(&decision) {
            // A halt also stops Claude, so the model cannot work around it.
            Err(halt) => Json(json!({
                "continue": false,
                "stopReason": halt.message,
                "hookSpecificOutput": decision_output("deny", &halt.message),
            }))
            .into_response(),
            Ok(result) => pre_answer("deny", &result_text(&result)),
        },
        DecisionOutcome::PendingApproval => pre_answer(
            "deny",
            &pending_text(decision.approval_id.as_deref().unwrap_or_default()),
        ),
    }
}

async fn post_tool_use(hooks: &ClaudeCode, caller: &Caller, body: &Value) -> Response {
    let id = body
        .get("tool_use_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let open = hooks.open.lock().expect("open calls lock").remove(id);
    if let Some(Open { decision, price }) = open {
        let response = body.get("tool_response").cloned().unwrap_or(Value::Null);
        let failed = response.get("is_error").and_then(Value::as_bool) == Some(true)
            || response.get("error").is_some_and(|e| !e.is_null());
        let outcome = if failed {
            ActionOutcome::Failure
        } else {
            ActionOutcome::Success
        };
        let mut record = caller
            .arbiter
            .record(decision.clone())
            .outcome(outcome)
            .output_digest(call::digest_value(&response));
        // Claude Code reports no cost of its own tools: a priced tool is charged its
        // price, an unpriced one nothing.
        if let Some(usage) = crate::usage::of(None, price) {
            record = record.usage(usage);
        }
        let sent = record.send().await;
        if let Err(e) = sent {
            tracing::warn!(%decision, error = %e, "Record for a Claude Code PostToolUse failed");
        }
    }
    Json(json!({})).into_response()
}

fn decision_output(decision: &str, reason: &str) -> Value {
    json!({
        "hookEventName": "PreToolUse",
        "permissionDecision": decision,
        "permissionDecisionReason": reason,
    })
}

fn pre_answer(decision: &str, reason: &str) -> Response {
    Json(json!({ "hookSpecificOutput": decision_output(decision, reason) })).into_response()
}

fn pending_text(approval: &str) -> String {
    result_text(&crate::answer::pending(approval))
}

fn result_text(result: &rmcp::model::CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join(" ")
}
