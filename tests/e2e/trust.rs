//! Stage 2, trust: required level from the policy (and the request), agent level
//! from assignments or `defaults.trust_level`.

use arbiter_client::proto::{GetTrustRequest, TrustLevel};

use crate::harness::{code, set_trust, spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
defaults:
  trust_level: L2_SUGGEST
actions:
  - match: {tool: send_email}
    trust: L3_ACT_APPROVE
  - match: {tool: "refund_*"}
    trust: L4
  - match: {tool: suggest}
    trust: L2
agents:
  - id: "*"
    tools: {allow: [send_email, "refund_*", suggest]}
"#;

#[tokio::test]
async fn an_agent_at_exactly_the_required_level_is_allowed_and_one_level_below_is_denied() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    set_trust(&client, "at-level", TrustLevel::L3ActApprove, "").await;
    set_trust(&client, "below", TrustLevel::L2Suggest, "").await;

    let d = client
        .evaluate("at-level")
        .tool("send_email")
        .send()
        .await
        .unwrap();
    assert!(d.allowed(), "{:?}", d.reasons);

    let d = client
        .evaluate("below")
        .tool("send_email")
        .send()
        .await
        .unwrap();
    assert!(d.is_denied());
    let reason = d.reason().unwrap();
    assert_eq!(
        (reason.stage.as_str(), reason.code.as_str()),
        ("trust", "trust.insufficient")
    );
    assert!(
        reason.message.contains("L2_SUGGEST") && reason.message.contains("L3_ACT_APPROVE"),
        "the message names both levels: {}",
        reason.message
    );
}

#[tokio::test]
async fn a_request_can_raise_the_required_level_but_never_lower_it() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    // L2, not L3: an L3 agent would escalate to a human instead (see approval.rs).
    set_trust(&client, "agent", TrustLevel::L2Suggest, "").await;

    let raised = client
        .evaluate("agent")
        .tool("suggest")
        .min_trust(TrustLevel::L3ActApprove)
        .send()
        .await
        .unwrap();
    assert_eq!(code(&raised), "trust.insufficient");

    let lowered = client
        .evaluate("agent")
        .tool("refund_order")
        .min_trust(TrustLevel::L0Observer)
        .send()
        .await
        .unwrap();
    assert_eq!(code(&lowered), "trust.insufficient");
}

#[tokio::test]
async fn a_trust_level_scoped_to_a_tool_applies_to_that_tool_only() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    set_trust(&client, "refunder", TrustLevel::L4ActReport, "refund_order").await;

    let scoped = client
        .evaluate("refunder")
        .tool("refund_order")
        .send()
        .await
        .unwrap();
    assert!(scoped.allowed(), "{:?}", scoped.reasons);

    let other = client
        .evaluate("refunder")
        .tool("refund_everything")
        .send()
        .await
        .unwrap();
    assert_eq!(code(&other), "trust.insufficient");
    assert!(
        other.reason().unwrap().message.contains("default"),
        "an unscoped action uses the default level: {:?}",
        other.reason()
    );

    // A scoped assignment replaces the agent-wide level for its tool, even when lower.
    set_trust(&client, "demoted", TrustLevel::L5Autonomous, "").await;
    set_trust(&client, "demoted", TrustLevel::L1Monitor, "send_email").await;
    let d = client
        .evaluate("demoted")
        .tool("send_email")
        .send()
        .await
        .unwrap();
    assert_eq!(code(&d), "trust.insufficient");
    let d = client
        .evaluate("demoted")
        .tool("refund_order")
        .send()
        .await
        .unwrap();
    assert!(d.allowed(), "{:?}", d.reasons);
}

#[tokio::test]
async fn an_agent_nobody_assigned_a_level_gets_the_policy_default() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();

    let trust = client
        .get_trust(GetTrustRequest {
            agent_id: "newcomer".into(),
            scope: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(trust.effective_level, TrustLevel::L2Suggest as i32);
    assert_eq!(trust.source, "default");

    let d = client
        .evaluate("newcomer")
        .tool("suggest")
        .send()
        .await
        .unwrap();
    assert!(d.allowed(), "L2 default meets L2: {:?}", d.reasons);
    let d = client
        .evaluate("newcomer")
        .tool("send_email")
        .send()
        .await
        .unwrap();
    assert_eq!(code(&d), "trust.insufficient");
    assert!(
        d.reason().unwrap().message.contains("(default)"),
        "{:?}",
        d.reason()
    );
}
