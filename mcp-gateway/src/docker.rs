//! Docker MCP Gateway interceptors (`docker mcp gateway run --interceptor
//! before:http:URL`, and `after:http:URL`), on the same code path as a `tools/call`.
//!
//! Docker's contract (docker/mcp-gateway `pkg/interceptors/interceptors.go`): the
//! `before` hook receives the `tools/call` request as JSON; an **empty body means
//! continue**, any other body is parsed as the `CallToolResult` the client gets instead,
//! and the call is not made. The `after` hook receives only the result. Docker sends no
//! headers of its own, ignores the status code and sets no timeout. So:
//! - the agent key travels in the URL path (`/hooks/docker/{key}/before`), the only part
//!   of the request Docker lets an operator configure; the agent id comes from that key's
//!   principal, never from the body;
//! - every refusal, including a refused key and an Arbiter that cannot decide, answers a
//!   non-empty `isError` result: an empty answer would let the call through;
//! - the wait is bounded here: Evaluate by the Arbiter timeout, a pending approval by
//!   `approval_wait`;
//! - a tool priced in `hooks.docker.prices` (by Docker's tool name) has its price sent as
//!   the estimate and Recorded by `after` as the cost.

use crate::answer;
use crate::call::{self, Call, Settled};
use crate::gateway::Gateway;
use crate::identity::{Caller, Identities};
use arbiter_client::{ActionOutcome, DecisionOutcome};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rmcp::model::{CallToolResult, JsonObject};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Bound on agents with an allowed call awaiting its `after` hook.
const OPEN_MAX: usize = 10_000;
/// Bound on one agent's open calls (without an `after` hook configured, none closes).
const OPEN_PER_AGENT: usize = 64;

#[derive(Clone)]
pub struct Interceptors {
    pub gateway: Gateway,
    pub ids: Arc<Identities>,
    /// Cost of one call per Docker tool name, in micro-USD (`hooks.docker.prices`).
    prices: Arc<BTreeMap<String, u64>>,
    /// Per agent, the calls allowed by `before` whose `after` has not come yet.
    open: Arc<Mutex<HashMap<String, Vec<Open>>>>,
}

/// An allowed call: its decision, and the price its Record charges.
struct Open {
    decision: String,
    price: Option<u64>,
}

impl Interceptors {
    pub fn new(gateway: Gateway, ids: Arc<Identities>, prices: BTreeMap<String, u64>) -> Self {
        Self {
            gateway,
            ids,
            prices: Arc::new(prices),
            open: Arc::default(),
        }
    }

    fn opened(&self, agent: &str, decision: Open) {
        let mut open = self.open.lock().expect("open calls lock");
        if open.len() >= OPEN_MAX && !open.contains_key(agent) {
            open.clear();
        }
        let calls = open.entry(agent.to_owned()).or_default();
        if calls.len() >= OPEN_PER_AGENT {
            calls.remove(0);
        }
        calls.push(decision);
    }

    /// The decision an `after` belongs to: only when exactly one call of this agent is
    /// open. Docker's `after` carries no request, so with several in flight a result
    /// cannot be attributed, and a wrong attribution would falsify the log: those
    /// decisions go unrecorded (their reservations lapse) and are logged.
    fn closing(&self, agent: &str) -> Option<Open> {
        let mut open = self.open.lock().expect("open calls lock");
        let mut calls = open.remove(agent)?;
        if calls.len() == 1 {
            return calls.pop();
        }
        tracing::warn!(%agent, open = calls.len(), "Docker after-hook cannot tell which call it closes; none recorded");
        None
    }
}

#[derive(Deserialize)]
pub struct HookQuery {
    /// The Arbiter session for budgets, loop guards and session halts (Docker has no
    /// session of its own to offer).
    #[serde(default)]
    session: String,
}

pub async fn before(
    State(hooks): State<Interceptors>,
    Path(key): Path<String>,
    Query(query): Query<HookQuery>,
    body: Bytes,
) -> Response {
    let caller = match hooks.ids.for_key(&key).await {
        Ok(caller) => caller,
        Err(e) => return refused(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    let (tool, arguments) = match tool_call(&body) {
        Ok(call) => call,
        Err(why) => return refused(StatusCode::BAD_REQUEST, &why),
    };
    if let Err(e) = hooks.gateway.bind_session(&caller.agent, &query.session) {
        return refused(StatusCode::FORBIDDEN, &e.message);
    }
    // The price is the estimate budgets reserve (and the same on a retry, so an
    // approval's action digest still matches).
    let price = hooks.prices.get(&tool).copied();
    let call = Call {
        price,
        ..Call::new(&tool, &arguments)
    };
    let settled = call::decide(&hooks.gateway, &caller, &query.session, &call, None, None).await;
    let decision = match settled {
        Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, &e.message),
        Ok(Settled::Held(approval)) => return replace(&answer::pending(&approval)),
        Ok(Settled::Decided(d)) => *d,
    };
    match decision.outcome {
        DecisionOutcome::Allow => {
            let open = Open {
                decision: decision.decision_id,
                price,
            };
            hooks.opened(&caller.agent, open);
            // Empty: Docker makes the call.
            StatusCode::OK.into_response()
        }
        // A halt cannot be a JSON-RPC error through this contract; its result names
        // the halt, and every further call is refused the same way.
        DecisionOutcome::Deny => match call::refuse(&decision) {
            Ok(result) => replace(&result),
            Err(halt) => refused(StatusCode::OK, &halt.message),
        },
        DecisionOutcome::PendingApproval => replace(&answer::pending(
            decision.approval_id.as_deref().unwrap_or_default(),
        )),
    }
}

pub async fn after(
    State(hooks): State<Interceptors>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    // Nothing here may replace the result: the answer is always empty.
    let Ok(caller) = hooks.ids.for_key(&key).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if let Some(open) = hooks.closing(&caller.agent) {
        record(&caller, open, &body).await;
    }
    StatusCode::OK.into_response()
}

async fn record(caller: &Caller, Open { decision, price }: Open, body: &[u8]) {
    let result: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // Docker passes `null` when the call itself failed.
    let outcome = match result.get("isError").and_then(Value::as_bool) {
        _ if result.is_null() => ActionOutcome::Error,
        Some(true) => ActionOutcome::Failure,
        _ => ActionOutcome::Success,
    };
    let mut record = caller
        .arbiter
        .record(decision.clone())
        .outcome(outcome)
        .output_digest(call::digest_value(&result));
    // Docker reports no cost: a priced tool is charged its price, an unpriced one nothing.
    if let Some(usage) = crate::usage::of(None, price) {
        record = record.usage(usage);
    }
    let sent = record.send().await;
    if let Err(e) = sent {
        tracing::warn!(%decision, error = %e, "Record for a Docker after-hook failed");
    }
}

/// The tool name and arguments of Docker's request. Go marshals its request struct with
/// the field names as declared (`Params`), the documented shape is `params`: JSON object
/// keys are matched without regard to case, as Go's own decoder does.
fn tool_call(body: &[u8]) -> Result<(String, JsonObject), String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body: not JSON ({e})"))?;
    let params = member(&value, "params").ok_or("params: missing")?;
    let name = member(params, "name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("params.name: missing or not a string")?;
    let arguments = match member(params, "arguments") {
        None | Some(Value::Null) => JsonObject::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err("params.arguments: expected an object".into()),
    };
    Ok((name.to_owned(), arguments))
}

fn member<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A result Docker returns instead of making the call.
fn replace(result: &CallToolResult) -> Response {
    Json(result).into_response()
}

/// A refusal that is not a policy decision: still a non-empty result, so Docker stops
/// the call whatever the status (it ignores the status).
fn refused(status: StatusCode, why: &str) -> Response {
    let result = CallToolResult::error(vec![rmcp::model::ContentBlock::text(format!(
        "not allowed by Arbiter: {why}"
    ))]);
    (status, Json(result)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_of_the_request_give_the_tool_and_its_arguments() {
        let documented =
            br#"{"method":"tools/call","params":{"name":"fetch","arguments":{"url":"u"}}}"#;
        let go_struct = br#"{"Session":{},"Params":{"_meta":{},"name":"fetch","arguments":{"url":"u"}},"Extra":null}"#;
        for body in [&documented[..], &go_struct[..]] {
            let (name, args) = tool_call(body).unwrap();
            assert_eq!(name, "fetch");
            assert_eq!(args.get("url"), Some(&Value::from("u")));
        }
    }

    #[test]
    fn a_request_without_a_name_or_with_odd_arguments_is_refused_naming_the_field() {
        assert_eq!(
            tool_call(br#"{"params":{}}"#).unwrap_err(),
            "params.name: missing or not a string"
        );
        assert_eq!(
            tool_call(br#"{"params":{"name":"x","arguments":[1]}}"#).unwrap_err(),
            "params.arguments: expected an object"
        );
        assert_eq!(tool_call(b"{}").unwrap_err(), "params: missing");
        assert!(tool_call(b"nope")
            .unwrap_err()
            .starts_with("body: not JSON"));
    }
}
