//! Claude Code HTTP hooks (`POST /hooks/claude-code`), on the same code path as a
//! `tools/call`: `PreToolUse` is the Evaluate (held while an approval is pending) and is
//! answered with `permissionDecision` allow or deny; `PostToolUse` is the Record. The
//! hook authenticates with the same agent key (`Authorization: Bearer`, from the hook's
//! `headers`). Every failure answers deny with 200, because Claude Code treats a non-2xx
//! answer or a connection failure as a non-blocking error unless the hook is configured
//! to block on failure (docs/mcp.md says to configure that too).

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
use std::collections::HashMap;
use std::sync::Mutex;

/// Bound on remembered (tool_use_id → decision) pairs awaiting their PostToolUse.
const OPEN_MAX: usize = 100_000;

#[derive(Default)]
pub struct OpenCalls(Mutex<HashMap<String, String>>);

pub async fn claude_code(
    State((gw, open)): State<(Gateway, std::sync::Arc<OpenCalls>)>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<Value>,
) -> Response {
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    let session = field("session_id").to_owned();
    if let Err(e) = gw.bind_session(&caller.agent, &session) {
        return pre_answer("deny", &e.message);
    }
    match field("hook_event_name") {
        "PreToolUse" => pre_tool_use(&gw, &open, &caller, &session, &body).await,
        "PostToolUse" => post_tool_use(&open, &caller, &body).await,
        other => (
            StatusCode::BAD_REQUEST,
            format!("hook_event_name: expected PreToolUse or PostToolUse, got {other:?}"),
        )
            .into_response(),
    }
}

async fn pre_tool_use(
    gw: &Gateway,
    open: &OpenCalls,
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
    let decision = match call::decide(
        gw,
        caller,
        session,
        &call::Call::new(tool, &arguments),
        None,
        None,
    )
    .await
    {
        Err(e) => return pre_answer("deny", &e.message),
        Ok(Settled::Held(approval)) => return pre_answer("deny", &pending_text(&approval)),
        Ok(Settled::Decided(d)) => *d,
    };
    match decision.outcome {
        DecisionOutcome::Allow => {
            if let Some(id) = body.get("tool_use_id").and_then(Value::as_str) {
                let mut map = open.0.lock().expect("open calls lock");
                if map.len() >= OPEN_MAX {
                    map.clear();
                }
                map.insert(id.to_owned(), decision.decision_id.clone());
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

async fn post_tool_use(open: &OpenCalls, caller: &Caller, body: &Value) -> Response {
    let id = body
        .get("tool_use_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let decision = open.0.lock().expect("open calls lock").remove(id);
    if let Some(decision) = decision {
        let response = body.get("tool_response").cloned().unwrap_or(Value::Null);
        let failed = response.get("is_error").and_then(Value::as_bool) == Some(true)
            || response.get("error").is_some_and(|e| !e.is_null());
        let outcome = if failed {
            ActionOutcome::Failure
        } else {
            ActionOutcome::Success
        };
        let sent = caller
            .arbiter
            .record(decision.clone())
            .outcome(outcome)
            .output_digest(call::digest_value(&response))
            .send()
            .await;
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
