use super::*;
use crate::domain::{Action, DataAccess, Estimate, MicroUsd};
use crate::policy::compile;
use crate::state::{ConsentGrant, TrustAssignment};

const POLICY: &[u8] = br#"
version: 1
actions:
  - match: {tool: "pay_*"}
    trust: L3_ACT_APPROVE
agents:
  - id: "bot-*"
    tools: {allow: ["read_*", "pay_*", "send_email"], deny: ["read_secrets"], hidden: ["read_hidden"]}
    loop_guard: {max_calls: 2, window: 60s}
budgets:
  - {name: daily, scope: agent, period: day, max_usd: "1.00"}
"#;

fn tool(name: &str, usd_micros: u64) -> Action {
    Action {
        tool: Some(name.into()),
        estimate: Estimate {
            micro_usd: MicroUsd(usd_micros),
            tokens: 0,
        },
        ..Default::default()
    }
}

fn decide(state: &RuntimeState, agent: &str, action: &Action, explain: bool) -> Decision {
    let policy = compile(POLICY, "test.yaml").unwrap();
    let req = Request {
        agent_id: agent,
        session_id: Some("s1"),
        action,
        min_trust: None,
        explain,
        approval_id: None,
        delegation: None,
    };
    run(
        &req,
        &Snapshot {
            policy: &policy,
            state,
            now_ms: 1_000,
            store_available: true,
        },
    )
}

fn failed(d: &Decision) -> &str {
    &d.reasons
        .iter()
        .find(|r| !r.passed)
        .expect("a failing reason")
        .code
}

#[test]
fn allowed_action_reserves_its_estimate() {
    let d = decide(
        &RuntimeState::default(),
        "bot-1",
        &tool("read_invoice", 250),
        false,
    );
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.intents.reservation.unwrap().amounts.micro_usd, 250);
}

#[test]
fn estimate_equal_to_the_cap_is_allowed_and_one_more_micro_usd_is_not() {
    let s = RuntimeState::default();
    assert_eq!(
        decide(&s, "bot-1", &tool("read_x", 1_000_000), false).verdict,
        Verdict::Allow
    );
    let d = decide(&s, "bot-1", &tool("read_x", 1_000_001), false);
    assert_eq!(failed(&d), "budget.exceeded");
}

#[test]
fn failing_trust_stops_the_pipeline_and_reserves_nothing() {
    let d = decide(
        &RuntimeState::default(),
        "bot-1",
        &tool("pay_invoice", 10),
        false,
    );
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.reasons.len(), 2, "halt and trust only");
    assert_eq!(failed(&d), "trust.insufficient");
    assert!(d.intents.reservation.is_none());
}

#[test]
fn explain_reports_every_stage_but_still_denies_and_reserves_nothing() {
    let d = decide(
        &RuntimeState::default(),
        "bot-1",
        &tool("pay_invoice", 10),
        true,
    );
    assert_eq!(d.verdict, Verdict::Deny);
    let stages: Vec<&str> = d.reasons.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(
        stages,
        ["halt", "trust", "budget", "consent", "scope", "approval"]
    );
    assert!(d.intents.reservation.is_none());
}

#[test]
fn equal_trust_passes() {
    let mut s = RuntimeState::default();
    s.trust.set(TrustAssignment {
        agent_id: "bot-1".into(),
        scope: String::new(),
        level: crate::domain::TrustLevel::L3ActApprove,
        assigned_by: "op".into(),
        assigned_ms: 0,
    });
    assert_eq!(
        decide(&s, "bot-1", &tool("pay_invoice", 10), false).verdict,
        Verdict::Allow
    );
}

#[test]
fn scope_is_default_deny_and_deny_beats_allow() {
    let s = RuntimeState::default();
    assert_eq!(
        failed(&decide(&s, "other", &tool("read_x", 0), false)),
        "scope.no_policy"
    );
    assert_eq!(
        failed(&decide(&s, "bot-1", &tool("read_secrets", 0), false)),
        "scope.tool_denied"
    );
    assert_eq!(
        failed(&decide(&s, "bot-1", &tool("read_hidden", 0), false)),
        "scope.tool_hidden"
    );
    assert_eq!(
        failed(&decide(&s, "bot-1", &tool("delete_all", 0), false)),
        "scope.tool_not_allowed"
    );
}

#[test]
fn consent_is_required_for_personal_data() {
    let mut s = RuntimeState::default();
    let mut a = tool("send_email", 0);
    a.data.push(DataAccess {
        data_type: "user_email".into(),
        purpose: Some("notifications".into()),
    });
    assert_eq!(failed(&decide(&s, "bot-1", &a, false)), "consent.missing");
    s.consent.upsert(ConsentGrant {
        agent_id: "bot-1".into(),
        data_type: "user_email".into(),
        purpose: None,
        granted_by: "op".into(),
        granted_ms: 0,
        expires_ms: None,
    });
    assert_eq!(decide(&s, "bot-1", &a, false).verdict, Verdict::Allow);
}

#[test]
fn loop_guard_trips_on_call_max_plus_one() {
    let mut s = RuntimeState::default();
    for _ in 0..2 {
        let d = decide(&s, "bot-1", &tool("read_x", 0), false);
        assert_eq!(d.verdict, Verdict::Allow);
        let (key, window) = d.intents.loop_call.unwrap();
        s.loops.record(key, 1_000, window);
    }
    assert_eq!(
        failed(&decide(&s, "bot-1", &tool("read_x", 0), false)),
        "loop.detected"
    );
    assert_eq!(
        decide(&s, "bot-1", &tool("read_y", 0), false).verdict,
        Verdict::Allow
    );
}

#[test]
fn unknown_budget_name_is_denied() {
    let mut a = tool("read_x", 0);
    a.budget = Some("nope".into());
    assert_eq!(
        failed(&decide(&RuntimeState::default(), "bot-1", &a, false)),
        "budget.not_found"
    );
}

#[test]
fn budgets_fail_closed_when_the_store_is_unavailable() {
    let policy = compile(POLICY, "test.yaml").unwrap();
    let a = tool("read_x", 1);
    let req = Request {
        agent_id: "bot-1",
        session_id: None,
        action: &a,
        min_trust: None,
        explain: false,
        approval_id: None,
        delegation: None,
    };
    let state = RuntimeState::default();
    let d = run(
        &req,
        &Snapshot {
            policy: &policy,
            state: &state,
            now_ms: 0,
            store_available: false,
        },
    );
    assert_eq!(failed(&d), "budget.unavailable");
}
