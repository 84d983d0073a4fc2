//! What the MCP client is told when a call is not forwarded. This module owns the
//! gateway's JSON-RPC error codes and the text of its `isError` results.
//!
//! Two channels, as MCP defines them: an `isError: true` tool result is for the model
//! ("language models can use it to self-correct"), a JSON-RPC error is for the client
//! program. A policy denial is a tool result naming the reason code and what to do,
//! never the policy's internals; a halt, an unauthenticated key and an Arbiter that
//! cannot decide are JSON-RPC errors, so the model cannot talk its way around them.

use rmcp::model::{
    CallToolResult, ContentBlock, ElicitRequest, ElicitRequestParams, ErrorCode, ErrorData,
    InputRequest, InputRequests, InputRequiredResult, MetaObject,
};
use serde_json::json;

/// The agent (or everything) is halted by an operator.
pub const HALTED: ErrorCode = ErrorCode(-32001);
/// Arbiter could not decide (unreachable, overloaded, or it refused the key).
pub const UNDECIDED: ErrorCode = ErrorCode(-32002);
/// The upstream MCP server failed, hung or is restarting.
pub const UPSTREAM: ErrorCode = ErrorCode(-32003);

/// A denial as a tool result: `denied by Arbiter: <code>` and advice for the model.
pub fn denied(code: &str, decision_id: &str) -> CallToolResult {
    let text = format!(
        "denied by Arbiter: {code}. {} (decision {decision_id})",
        advice(code)
    );
    error_result(text, json!({"code": code, "decision_id": decision_id}))
}

/// A call of a tool whose definition Arbiter does not trust (tool pinning). There is
/// no decision: the gateway refused before asking Arbiter about the call.
pub fn untrusted_tool(code: &str) -> CallToolResult {
    let text = format!("denied by Arbiter: {code}. {}", advice(code));
    error_result(text, json!({"code": code}))
}

/// A call held for a human that was not approved in time.
pub fn pending(approval_id: &str) -> CallToolResult {
    let text = format!(
        "approval required: Arbiter holds this call as approval {approval_id}. An operator \
         can grant it (arbiter approvals approve {approval_id}); then repeat this exact call \
         with the same arguments, which runs it once."
    );
    error_result(
        text,
        json!({"code": "approval.required", "approval_id": approval_id}),
    )
}

/// The 2026-07-28 answer to a call still held for a human: `input_required` with only a
/// sealed `requestState` (nothing for the client to fill in; its retry with the state
/// is the "try again"), and `_meta` naming the approval for the people involved.
pub fn input_required(
    approval_id: &str,
    request_state: String,
    page: Option<String>,
) -> InputRequiredResult {
    let mut meta = serde_json::Map::new();
    meta.insert(
        APPROVAL_META.to_owned(),
        json!({
            "approval_id": approval_id,
            "message": format!(
                "Arbiter holds this call as approval {approval_id}. An operator can grant it \
                 (arbiter approvals approve {approval_id}); then retry with this requestState \
                 and the same arguments, which runs it once."
            ),
        }),
    );
    let mut result =
        InputRequiredResult::from_request_state(request_state).with_meta(MetaObject(meta));
    if let Some(url) = page {
        result.input_requests = Some(InputRequests::from([(
            crate::console::INPUT_KEY.to_owned(),
            approval_page(approval_id, url),
        )]));
    }
    result
}

/// A URL-mode elicitation of the console's approval page: the client shows the host and
/// asks its user before opening it. Nothing comes back through it but consent.
fn approval_page(approval_id: &str, url: String) -> InputRequest {
    let params = ElicitRequestParams::UrlElicitationParams {
        meta: None,
        message: format!(
            "This call waits for an Arbiter operator's approval ({approval_id}). An operator \
             can review and grant it on this page (sign-in required); the call is retried \
             once it is granted."
        ),
        url,
        // Removed in 2026-07-28; the approval id is in the page and the message.
        elicitation_id: String::new(),
    };
    InputRequest::Elicitation(ElicitRequest::new(params))
}

/// The `_meta` key of an `input_required` answer that names the approval.
pub const APPROVAL_META: &str = "io.github.arbiter/approval";

/// A retry whose `requestState` does not verify or does not match the retry: a protocol
/// error (the client program sent it), and neither Arbiter nor the upstream is asked.
pub fn request_state_refused(why: &crate::state::Refused) -> ErrorData {
    ErrorData::invalid_params(
        format!("{why}; the call was not forwarded"),
        Some(json!({"code": "mcp.request_state_refused"})),
    )
}

fn error_result(text: String, meta: serde_json::Value) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json!({ "arbiter": meta }));
    result
}

/// What to do about a denial, by code family. Generic on purpose: the reason's own
/// message can name rules and other agents' settings, which the model need not see.
fn advice(code: &str) -> &'static str {
    let family = code.split('.').next().unwrap_or(code);
    match (family, code) {
        (_, "loop.detected") => "This call repeats too often; change approach instead of retrying.",
        (_, "approval.denied") => "A human refused this call; do not retry it.",
        (_, "approval.expired") => "The approval expired; the call may be asked for again.",
        (_, "approval.mismatch") => "The approval was for other arguments; it cannot be reused.",
        (_, "mcp.tool_changed") => "This tool's definition changed since it was trusted; an operator must review it (arbiter mcp tools list) before it can be called.",
        (_, "mcp.tool_unapproved") => "This tool has not been approved by an operator yet (arbiter mcp tools list).",
        ("scope", _) => "This tool or these arguments are not allowed for this agent.",
        ("budget", _) => "The budget for this agent or run is spent or unavailable.",
        ("trust", _) => "This agent's trust level is too low for this call.",
        ("consent", _) => "The data subject has not consented to this use.",
        ("delegation", _) => "The delegation does not cover this call.",
        ("mcp", _) => "The gateway does not allow this call.",
        _ => "Policy does not allow this call.",
    }
}

pub fn halted(code: &str, decision_id: &str) -> ErrorData {
    ErrorData::new(
        HALTED,
        format!("halted by an operator ({code}); no tool call runs until the halt is lifted"),
        Some(json!({"code": code, "decision_id": decision_id})),
    )
}

pub fn undecided(why: impl std::fmt::Display) -> ErrorData {
    ErrorData::new(
        UNDECIDED,
        format!("Arbiter could not decide, so the call was not forwarded: {why}"),
        None,
    )
}

pub fn upstream(error: impl std::fmt::Display) -> ErrorData {
    ErrorData::new(UPSTREAM, error.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_names_its_code_and_is_an_error_result() {
        let r = denied("scope.tool_denied", "dec_1");
        assert_eq!(r.is_error, Some(true));
        let text = serde_json::to_string(&r.content).unwrap();
        assert!(
            text.contains("denied by Arbiter: scope.tool_denied"),
            "{text}"
        );
        assert!(text.contains("not allowed for this agent"), "{text}");
    }

    #[test]
    fn input_required_carries_only_the_state_and_names_the_approval() {
        let v = serde_json::to_value(input_required("apr_9", "rs1.x.y".into(), None)).unwrap();
        assert_eq!(v["resultType"], "input_required");
        assert_eq!(v["requestState"], "rs1.x.y");
        assert!(v.get("inputRequests").is_none(), "{v}");
        assert_eq!(v["_meta"][APPROVAL_META]["approval_id"], "apr_9");
    }

    #[test]
    fn with_a_page_input_required_asks_to_open_it_by_url() {
        let page = "https://console.example/approvals/apr_9".to_owned();
        let v =
            serde_json::to_value(input_required("apr_9", "rs1.x.y".into(), Some(page))).unwrap();
        let asked = &v["inputRequests"][crate::console::INPUT_KEY];
        assert_eq!(asked["method"], "elicitation/create", "{v}");
        assert_eq!(asked["params"]["mode"], "url", "{v}");
        assert_eq!(
            asked["params"]["url"],
            "https://console.example/approvals/apr_9"
        );
        assert_eq!(v["requestState"], "rs1.x.y");
    }

    #[test]
    fn a_pending_answer_names_the_approval_and_how_to_grant_it() {
        let text = serde_json::to_string(&pending("apr_9").content).unwrap();
        assert!(text.contains("arbiter approvals approve apr_9"), "{text}");
    }
}
