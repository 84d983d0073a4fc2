//! Human approvals: PENDING_APPROVAL, Approve, WatchApproval, single use, binding,
//! expiry, four-eyes, races, restarts.

use std::time::Duration;

use arbiter_client::{proto as pb, Client, DecisionOutcome};
use futures::StreamExt;
use tonic::Code;

use crate::harness::{
    amount, create_principal as principal, keyed, query_all, spawn_server, ServerOptions,
    TestServer,
};

const POLICY: &str = r#"
version: 1
defaults: {approval_ttl: 1h}
actions:
  - match: {tool: "refund_*"}
    approval: always
  - match: {tool: "wire_money"}
    trust: L4_ACT_REPORT
agents:
  - id: "bot*"
    tools: {allow: ["*"]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "10.00"}
"#;

/// A server in authenticated mode: (server, agent client for bot*, operator client, admin client).
async fn authed(policy: &str, clock: Option<&str>) -> (TestServer, Client, Client, Client) {
    let mut opts = ServerOptions::new().policy(policy);
    if let Some(t) = clock {
        opts = opts.clock(t);
    }
    let server = spawn_server(opts).await;
    let admin_key = principal(&server.client(), "root", &[pb::Role::Admin], &[]).await;
    let admin = keyed(&server, &admin_key);
    let bot = keyed(
        &server,
        &principal(&admin, "bot-runtime", &[pb::Role::Agent], &["bot*"]).await,
    );
    let op = keyed(
        &server,
        &principal(&admin, "alice", &[pb::Role::Operator], &[]).await,
    );
    (server, bot, op, admin)
}

async fn get(c: &Client, id: &str) -> pb::Approval {
    c.get_approval(pb::GetApprovalRequest {
        approval_id: id.into(),
    })
    .await
    .unwrap()
    .approval
    .unwrap()
}

fn approve(id: &str, grant: bool) -> pb::ApproveRequest {
    pb::ApproveRequest {
        approval_id: id.into(),
        grant,
        reason: if grant { "looks fine" } else { "no" }.into(),
    }
}

#[tokio::test]
async fn an_approved_action_passes_once_through_watch_approval_and_reserves_once() {
    let (_server, bot, op, admin) = authed(POLICY, None).await;
    let d = bot
        .evaluate("bot-1")
        .session("s")
        .tool("refund_order")
        .cost_micro_usd(2_000_000)
        .send()
        .await
        .unwrap();
    assert_eq!(d.outcome, DecisionOutcome::PendingApproval);
    let id = d.approval_id.clone().expect("approval id");
    assert_eq!(d.reason().unwrap().code, "approval.required");
    assert_eq!(
        amount(&admin, "bot-1", "", "cap", "micro_usd")
            .await
            .reserved,
        2_000_000,
        "held while pending"
    );

    // The agent waits on the stream; an operator grants.
    let mut watch = bot
        .watch_approval(pb::WatchApprovalRequest {
            approval_id: id.clone(),
        })
        .await
        .unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.state, pb::ApprovalState::Pending as i32);
    let granted = op
        .approve(approve(&id, true))
        .await
        .unwrap()
        .approval
        .unwrap();
    assert_eq!(
        (granted.state, granted.decided_by.as_str()),
        (pb::ApprovalState::Granted as i32, "alice")
    );
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.state, pb::ApprovalState::Granted as i32);

    let ok = bot
        .evaluate("bot-1")
        .session("s")
        .tool("refund_order")
        .cost_micro_usd(2_000_000)
        .approval_id(&id)
        .send()
        .await
        .unwrap();
    assert!(ok.allowed(), "{:?}", ok.reasons);
    assert_eq!(
        amount(&admin, "bot-1", "", "cap", "micro_usd")
            .await
            .reserved,
        2_000_000,
        "never reserved twice"
    );
    assert_eq!(
        get(&admin, &id).await.state,
        pb::ApprovalState::Consumed as i32
    );

    let again = bot
        .evaluate("bot-1")
        .session("s")
        .tool("refund_order")
        .cost_micro_usd(2_000_000)
        .approval_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(again.reason().unwrap().code, "approval.consumed");

    // The approver's identity is inside the hashed entry.
    let grants = query_all(
        &admin,
        pb::AuditFilter {
            kinds: vec!["approval.grant".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(grants[0].canonical.contains("\"approver\":\"alice\""));
}

#[tokio::test]
async fn an_approval_for_one_action_does_not_cover_another() {
    let (_server, bot, op, _admin) = authed(POLICY, None).await;
    let d = bot
        .evaluate("bot-1")
        .tool("refund_order")
        .cost_micro_usd(100)
        .send()
        .await
        .unwrap();
    let id = d.approval_id.unwrap();
    op.approve(approve(&id, true)).await.unwrap();
    let other = bot
        .evaluate("bot-1")
        .tool("refund_everything")
        .cost_micro_usd(100)
        .approval_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(other.reason().unwrap().code, "approval.mismatch");
    let other_agent = bot
        .evaluate("bot-2")
        .tool("refund_order")
        .cost_micro_usd(100)
        .approval_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(other_agent.reason().unwrap().code, "approval.mismatch");
    let denied = bot
        .evaluate("bot-1")
        .tool("refund_order")
        .cost_micro_usd(100)
        .approval_id("apr_unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.reason().unwrap().code, "approval.not_found");
}

#[tokio::test]
async fn a_pending_approval_expires_releases_its_budget_and_cannot_be_decided() {
    let (server, bot, op, admin) = authed(POLICY, Some("2030-01-01T00:00:00Z")).await;
    let d = bot
        .evaluate("bot-1")
        .tool("refund_order")
        .cost_micro_usd(3_000_000)
        .send()
        .await
        .unwrap();
    let id = d.approval_id.unwrap();
    server.set_time("2030-01-01T01:00:01Z");
    let expired =
        crate::harness::eventually("the approval expires", Duration::from_secs(10), || {
            let admin = admin.clone();
            let id = id.clone();
            async move {
                let a = get(&admin, &id).await;
                let entries = query_all(
                    &admin,
                    pb::AuditFilter {
                        kinds: vec!["approval.expire".into()],
                        ..Default::default()
                    },
                )
                .await;
                (a.state == pb::ApprovalState::Expired as i32 && entries.len() == 1).then_some(a)
            }
        })
        .await;
    assert_eq!(expired.state, pb::ApprovalState::Expired as i32);
    assert_eq!(
        amount(&admin, "bot-1", "", "cap", "micro_usd")
            .await
            .reserved,
        0,
        "released on expiry"
    );
    let err = op.approve(approve(&id, true)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let late = bot
        .evaluate("bot-1")
        .tool("refund_order")
        .cost_micro_usd(3_000_000)
        .approval_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(late.reason().unwrap().code, "approval.expired");
}

#[tokio::test]
async fn agents_cannot_approve_their_own_actions_and_the_policy_can_require_a_registered_operator()
{
    let (server, bot, _op, admin) = authed(POLICY, None).await;
    let d = bot
        .evaluate("bot-1")
        .tool("refund_order")
        .send()
        .await
        .unwrap();
    let id = d.approval_id.unwrap();
    // An operator that also acts for the agent is the agent itself.
    let both = keyed(
        &server,
        &principal(
            &admin,
            "bot-and-op",
            &[pb::Role::Agent, pb::Role::Operator],
            &["bot-1"],
        )
        .await,
    );
    assert_eq!(
        both.approve(approve(&id, true)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // The agent principal itself has no operator role at all.
    assert_eq!(
        bot.approve(approve(&id, true)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        get(&admin, &id).await.state,
        pb::ApprovalState::Pending as i32,
        "refusals change nothing"
    );

    let strict = POLICY.replace(
        "defaults: {approval_ttl: 1h}",
        "defaults: {approval_ttl: 1h, approval_without_operator: nobody}",
    );
    let (_s2, bot2, op2, _admin2) = authed(&strict, None).await;
    let id2 = bot2
        .evaluate("bot-1")
        .tool("refund_order")
        .send()
        .await
        .unwrap()
        .approval_id
        .unwrap();
    assert_eq!(
        op2.approve(approve(&id2, true)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn a_concurrent_grant_and_deny_have_exactly_one_winner() {
    let (server, bot, op, admin) = authed(POLICY, None).await;
    let op2 = keyed(
        &server,
        &principal(&admin, "bob", &[pb::Role::Operator], &[]).await,
    );
    for round in 0..15 {
        let id = bot
            .evaluate("bot-1")
            .session(format!("s{round}"))
            .tool("refund_order")
            .send()
            .await
            .unwrap()
            .approval_id
            .unwrap();
        let (g, d) = tokio::join!(
            op.approve(approve(&id, true)),
            op2.approve(approve(&id, false))
        );
        assert!(
            g.is_ok() != d.is_ok(),
            "round {round}: exactly one wins ({g:?}, {d:?})"
        );
        let granted = g.is_ok();
        let loser = if granted {
            d.unwrap_err()
        } else {
            g.unwrap_err()
        };
        assert_eq!(loser.code(), Code::FailedPrecondition);
        let state = get(&admin, &id).await.state;
        assert_eq!(state == pb::ApprovalState::Granted as i32, granted);
    }
    let decided = query_all(
        &admin,
        pb::AuditFilter {
            kinds: vec!["approval.grant".into(), "approval.deny".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(decided.len(), 15, "one audit entry per winner");
}

#[tokio::test]
async fn pending_approvals_survive_a_restart_and_can_be_decided_while_the_agent_is_halted() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let admin_key = principal(&server.client(), "root", &[pb::Role::Admin], &[]).await;
    let admin = keyed(&server, &admin_key);
    let bot_key = principal(&admin, "bot-runtime", &[pb::Role::Agent], &["bot*"]).await;
    let op_key = principal(&admin, "alice", &[pb::Role::Operator], &[]).await;
    let bot = keyed(&server, &bot_key);
    let id = bot
        .evaluate("bot-1")
        .tool("refund_order")
        .cost_micro_usd(500)
        .send()
        .await
        .unwrap()
        .approval_id
        .unwrap();

    server.restart().await; // a new port: new clients
    let (bot, op, admin) = (
        keyed(&server, &bot_key),
        keyed(&server, &op_key),
        keyed(&server, &admin_key),
    );
    assert_eq!(
        get(&admin, &id).await.state,
        pb::ApprovalState::Pending as i32
    );
    assert_eq!(
        amount(&admin, "bot-1", "", "cap", "micro_usd")
            .await
            .reserved,
        500,
        "the hold survives too"
    );

    op.halt(pb::HaltRequest {
        target: Some(pb::HaltTarget {
            scope: pb::HaltScope::Agent as i32,
            agent_id: "bot-1".into(),
            session_id: String::new(),
        }),
        mode: pb::HaltMode::Emergency as i32,
        reason: "investigating".into(),
    })
    .await
    .unwrap();
    op.approve(approve(&id, true))
        .await
        .expect("humans can still resolve approvals while halted");
    let d = bot
        .evaluate("bot-1")
        .tool("refund_order")
        .cost_micro_usd(500)
        .approval_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.reason().unwrap().code,
        "halt.engaged",
        "the halt still wins"
    );
    assert_eq!(
        get(&admin, &id).await.state,
        pb::ApprovalState::Granted as i32,
        "not consumed by a denied request"
    );
}

#[tokio::test]
async fn an_agent_at_l3_escalates_to_a_human_instead_of_being_denied() {
    let (_server, bot, op, _admin) = authed(POLICY, None).await;
    let d = bot
        .evaluate("bot-1")
        .tool("wire_money")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.reason().unwrap().code,
        "trust.insufficient",
        "below L3 there is no escalation"
    );
    op.set_trust(pb::SetTrustRequest {
        agent_id: "bot-1".into(),
        level: pb::TrustLevel::L3ActApprove as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = bot
        .evaluate("bot-1")
        .tool("wire_money")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.outcome,
        DecisionOutcome::PendingApproval,
        "{:?}",
        d.reasons
    );
    assert_eq!(d.reasons[1].code, "trust.escalated");
    let id = d.approval_id.unwrap();
    op.approve(approve(&id, true)).await.unwrap();
    assert!(bot
        .evaluate("bot-1")
        .tool("wire_money")
        .approval_id(&id)
        .send()
        .await
        .unwrap()
        .allowed());
}

#[tokio::test]
async fn an_agent_principal_sees_only_its_own_agents_approvals() {
    let (server, bot, _op, admin) = authed(POLICY, None).await;
    let id = bot
        .evaluate("bot-1")
        .tool("refund_order")
        .send()
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let stranger = keyed(
        &server,
        &principal(&admin, "other-runtime", &[pb::Role::Agent], &["other-*"]).await,
    );
    assert_eq!(
        stranger
            .get_approval(pb::GetApprovalRequest {
                approval_id: id.clone()
            })
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert!(stranger
        .watch_approval(pb::WatchApprovalRequest {
            approval_id: id.clone()
        })
        .await
        .is_err());
    let listed = bot
        .list_approvals(pb::ListApprovalsRequest {
            agent_id: "bot-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.approvals.len(), 1);
    assert_eq!(
        stranger
            .list_approvals(pb::ListApprovalsRequest {
                agent_id: "bot-1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // Whether an id exists is not revealed to an agent key either.
    let unknown = stranger
        .get_approval(pb::GetApprovalRequest {
            approval_id: "apr_nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn the_cli_lists_shows_approves_and_watches_approvals() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    let url = server.url();
    let id = c
        .evaluate("bot-1")
        .tool("refund_order")
        .send()
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let out =
        crate::harness::arbiter(&["approvals", "list", "--state", "pending", "--addr", &url]).await;
    assert!(
        out.code() == Some(0) && out.stdout.contains(&id) && out.stdout.contains("pending"),
        "{}",
        out.text()
    );
    let out = crate::harness::arbiter(&[
        "approvals",
        "approve",
        &id,
        "--reason",
        "checked",
        "--addr",
        &url,
    ])
    .await;
    assert!(
        out.code() == Some(0) && out.stdout.contains("granted by anonymous (checked)"),
        "{}",
        out.text()
    );
    let out = crate::harness::arbiter(&["approvals", "show", &id, "--addr", &url]).await;
    assert!(
        out.stdout.contains("granted") && out.stdout.contains("sha256:"),
        "{}",
        out.text()
    );
    let out = crate::harness::arbiter(&["approvals", "deny", &id, "--addr", &url]).await;
    assert_eq!(
        out.code(),
        Some(1),
        "a decided approval cannot be decided again: {}",
        out.text()
    );
    // A granted approval is not final yet; watch prints its state and ends when it is used.
    let watch = tokio::spawn({
        let url = url.clone();
        let id = id.clone();
        async move { crate::harness::arbiter(&["approvals", "watch", &id, "--addr", &url]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c
        .evaluate("bot-1")
        .tool("refund_order")
        .approval_id(&id)
        .send()
        .await
        .unwrap()
        .allowed());
    let out = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.stdout.contains("granted") && out.stdout.contains("consumed"),
        "{}",
        out.text()
    );
}

const ARGUMENT_POLICY: &str = r#"
version: 1
defaults: {approval_ttl: 1h}
actions:
  - match: {tool: delete.user}
    approval: always
audit:
  sensitive_keys: {password: digest, ssn: drop}
agents:
  - id: "bot*"
    tools: {allow: ["*"]}
"#;

/// Issue 13: an approval granted for `delete.user {user_id: u1}` was accepted for `u2`.
/// It binds the exact arguments now (in any key order), sensitive argument values are
/// kept out of the log and the approval but still bind it, and the approver sees what
/// they allow.
#[tokio::test]
async fn an_approval_binds_the_calls_arguments_and_hides_sensitive_ones() {
    let (_server, bot, op, admin) = authed(ARGUMENT_POLICY, None).await;
    let call = |args: serde_json::Value| bot.evaluate("bot-1").tool("delete.user").arguments(args);
    let u1 = serde_json::json!({"user_id": "u1", "hard": true, "password": "hunter2", "ssn": "078-05-1120"});
    let d = call(u1.clone()).send().await.unwrap();
    assert_eq!(
        d.outcome,
        DecisionOutcome::PendingApproval,
        "{:?}",
        d.reasons
    );
    let id = d.approval_id.clone().unwrap();

    // The approver sees the arguments, with the sensitive ones digested or left out.
    let a = get(&op, &id).await;
    assert!(
        a.action_summary.contains("\"user_id\":\"u1\""),
        "{}",
        a.action_summary
    );
    let shown: serde_json::Value = serde_json::from_str(&a.action_json).unwrap();
    assert_eq!(shown["arguments"]["user_id"], "u1");
    assert!(shown["arguments"]["password"]
        .as_str()
        .unwrap()
        .starts_with("hmac-sha256:"));
    assert!(shown["arguments"].get("ssn").is_none(), "{shown}");
    op.approve(approve(&id, true)).await.unwrap();

    // Other arguments, a changed sensitive value, a dropped one: each is another action.
    for (what, args) in [
        (
            "another user",
            serde_json::json!({"user_id": "u2", "hard": true, "password": "hunter2", "ssn": "078-05-1120"}),
        ),
        (
            "another password",
            serde_json::json!({"user_id": "u1", "hard": true, "password": "x", "ssn": "078-05-1120"}),
        ),
        (
            "another dropped value",
            serde_json::json!({"user_id": "u1", "hard": true, "password": "hunter2", "ssn": "1"}),
        ),
        ("no arguments", serde_json::json!({})),
        (
            "a number as text",
            serde_json::json!({"user_id": "u1", "hard": "true", "password": "hunter2", "ssn": "078-05-1120"}),
        ),
    ] {
        let d = call(args).approval_id(&id).send().await.unwrap();
        assert_eq!(d.outcome, DecisionOutcome::Deny, "{what}: {:?}", d.reasons);
        assert_eq!(d.reason().unwrap().code, "approval.mismatch", "{what}");
        assert!(d.reason().unwrap().message.contains("arguments"), "{what}");
    }
    assert_eq!(
        get(&op, &id).await.state,
        pb::ApprovalState::Granted as i32,
        "refusals consume nothing"
    );

    // The same call, keys in another order: allowed once.
    let same = serde_json::json!({"ssn": "078-05-1120", "password": "hunter2", "hard": true, "user_id": "u1"});
    let d = call(same.clone()).approval_id(&id).send().await.unwrap();
    assert_eq!(d.outcome, DecisionOutcome::Allow, "{:?}", d.reasons);

    // The log keeps what was decided, not the secrets.
    let entries = query_all(
        &admin,
        pb::AuditFilter {
            kinds: vec!["evaluate".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(!entries.is_empty());
    for e in &entries {
        assert!(
            !e.canonical.contains("hunter2") && !e.canonical.contains("078-05-1120"),
            "{}",
            e.canonical
        );
    }
    let last: serde_json::Value = serde_json::from_str(&entries.last().unwrap().canonical).unwrap();
    assert_eq!(last["body"]["action"]["arguments"]["user_id"], "u1");
    assert_eq!(last["body"]["action_digest"], d.action_digest);
}
