//! Principals, API keys and the role table: identity comes only from the transport.

use std::future::Future;
use std::pin::Pin;

use arbiter_client::{proto as pb, Client, Error};
use tonic::Code;

use crate::harness::{
    arbiter, create_principal, keyed, query_all, spawn_server, ServerOptions, TestServer,
};

const POLICY: &str = r#"
version: 1
agents:
  - id: "bot-*"
    tools: {allow: ["*"]}
"#;

/// A server with one principal per role; returns it and the keys
/// (agent bound to `bot-*`, operator, admin, auditor).
async fn server_with_roles() -> (TestServer, [String; 4]) {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    // Development mode: the anonymous loopback caller bootstraps the first admin.
    let admin = create(&server.client(), "root", pb::Role::Admin, &[]).await;
    let a = keyed(&server, &admin);
    let agent = create(&a, "bot-runtime", pb::Role::Agent, &["bot-*"]).await;
    let operator = create(&a, "alice", pb::Role::Operator, &[]).await;
    let auditor = create(&a, "audrey", pb::Role::Auditor, &[]).await;
    (server, [agent, operator, admin, auditor])
}

type Call = Box<dyn Fn(Client) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>>;

fn call<F, Fut, T>(f: F) -> Call
where
    F: Fn(Client) -> Fut + 'static,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
{
    Box::new(move |c| {
        let fut = f(c);
        Box::pin(async move { fut.await.map(|_| ()) })
    })
}

/// Every arbiter.v1 RPC with the roles allowed to call it: [agent, operator, admin, auditor].
fn table() -> Vec<(&'static str, [bool; 4], Call)> {
    const AGENT: [bool; 4] = [true, false, false, false];
    const OPS: [bool; 4] = [false, true, true, false];
    const READ: [bool; 4] = [false, true, true, true];
    const ADMIN: [bool; 4] = [false, false, true, false];
    const AUDIT: [bool; 4] = [false, false, true, true];
    const ALL: [bool; 4] = [true, true, true, true];
    vec![
        (
            "Evaluate",
            AGENT,
            call(|c: Client| async move { c.evaluate("bot-1").tool("t").send().await }),
        ),
        (
            "Record",
            AGENT,
            call(|c: Client| async move { c.record("dec_missing").send().await }),
        ),
        (
            "FilterTools",
            [true, true, true, false],
            call(|c: Client| async move {
                c.filter_tools(pb::FilterToolsRequest {
                    agent_id: "bot-1".into(),
                    tools: vec!["t".into()],
                })
                .await
            }),
        ),
        (
            "Heartbeat",
            AGENT,
            call(|c: Client| async move {
                c.heartbeat(pb::HeartbeatRequest {
                    agent_id: "bot-1".into(),
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "Delegate",
            AGENT,
            call(|c: Client| async move {
                c.delegate(pb::DelegateRequest {
                    parent_agent_id: "bot-1".into(),
                    subject_agent_id: "bot-2".into(),
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "ReportTools",
            [true, true, true, false],
            call(|c: Client| async move {
                c.report_tools(pb::ReportToolsRequest {
                    agent_id: "bot-1".into(),
                    server: "files".into(),
                    tools: vec![],
                })
                .await
            }),
        ),
        (
            "ListToolPins",
            READ,
            call(
                |c: Client| async move { c.list_tool_pins(pb::ListToolPinsRequest::default()).await },
            ),
        ),
        (
            "ApproveToolPin",
            OPS,
            call(|c: Client| async move {
                c.approve_tool_pin(pb::ApproveToolPinRequest::default())
                    .await
            }),
        ),
        (
            "RejectToolPin",
            OPS,
            call(|c: Client| async move {
                c.reject_tool_pin(pb::RejectToolPinRequest::default()).await
            }),
        ),
        ("Ping", ALL, call(|c: Client| async move { c.ping().await })),
        (
            "WhoAmI",
            ALL,
            call(|c: Client| async move { c.who_am_i().await }),
        ),
        (
            "Approve",
            OPS,
            call(|c: Client| async move {
                c.approve(pb::ApproveRequest {
                    approval_id: "x".into(),
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "GetApproval",
            READ,
            call(|c: Client| async move {
                c.get_approval(pb::GetApprovalRequest {
                    approval_id: "x".into(),
                })
                .await
            }),
        ),
        (
            "ListApprovals",
            READ,
            call(
                |c: Client| async move { c.list_approvals(pb::ListApprovalsRequest::default()).await },
            ),
        ),
        (
            "WatchApproval",
            READ,
            call(|c: Client| async move {
                c.watch_approval(pb::WatchApprovalRequest {
                    approval_id: "x".into(),
                })
                .await
            }),
        ),
        (
            "Halt",
            OPS,
            call(|c: Client| async move { c.halt(pb::HaltRequest::default()).await }),
        ),
        (
            "Resume",
            OPS,
            call(|c: Client| async move { c.resume(pb::ResumeRequest::default()).await }),
        ),
        (
            "ListHalts",
            READ,
            call(|c: Client| async move { c.list_halts(pb::ListHaltsRequest {}).await }),
        ),
        (
            "SetTrust",
            OPS,
            call(|c: Client| async move {
                c.set_trust(pb::SetTrustRequest {
                    agent_id: "bot-1".into(),
                    level: pb::TrustLevel::L1Monitor as i32,
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "GetTrust",
            READ,
            call(|c: Client| async move {
                c.get_trust(pb::GetTrustRequest {
                    agent_id: "bot-1".into(),
                    scope: String::new(),
                })
                .await
            }),
        ),
        (
            "ListTrust",
            READ,
            call(|c: Client| async move { c.list_trust(pb::ListTrustRequest::default()).await }),
        ),
        (
            "GrantConsent",
            OPS,
            call(|c: Client| async move {
                c.grant_consent(pb::GrantConsentRequest {
                    agent_id: "bot-1".into(),
                    data_type: "email".into(),
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "RevokeConsent",
            OPS,
            call(|c: Client| async move {
                c.revoke_consent(pb::RevokeConsentRequest {
                    agent_id: "bot-1".into(),
                    data_type: "nothing".into(),
                    purpose: String::new(),
                })
                .await
            }),
        ),
        (
            "ListConsents",
            READ,
            call(
                |c: Client| async move { c.list_consents(pb::ListConsentsRequest::default()).await },
            ),
        ),
        (
            "GetBudgets",
            READ,
            call(|c: Client| async move { c.get_budgets(pb::GetBudgetsRequest::default()).await }),
        ),
        (
            "ListAgents",
            READ,
            call(|c: Client| async move { c.list_agents(pb::ListAgentsRequest {}).await }),
        ),
        (
            "GetPolicy",
            READ,
            call(|c: Client| async move { c.get_policy(pb::GetPolicyRequest {}).await }),
        ),
        (
            "CreatePrincipal",
            ADMIN,
            call(|c: Client| async move {
                c.create_principal(pb::CreatePrincipalRequest {
                    name: String::new(),
                    roles: vec![],
                    agents: vec![],
                    tls_identity: String::new(),
                })
                .await
            }),
        ),
        (
            "ListPrincipals",
            ADMIN,
            call(|c: Client| async move { c.list_principals(pb::ListPrincipalsRequest {}).await }),
        ),
        (
            "RevokePrincipal",
            ADMIN,
            call(|c: Client| async move {
                c.revoke_principal(pb::RevokePrincipalRequest {
                    name: "nobody".into(),
                })
                .await
            }),
        ),
        (
            "QueryAudit",
            AUDIT,
            call(|c: Client| async move { c.query_audit(pb::QueryAuditRequest::default()).await }),
        ),
        (
            "TailAudit",
            AUDIT,
            call(|c: Client| async move { c.tail_audit(pb::TailAuditRequest::default()).await }),
        ),
        (
            "VerifyAudit",
            AUDIT,
            call(
                |c: Client| async move { c.verify_audit(pb::VerifyAuditRequest::default()).await },
            ),
        ),
        (
            "ExportAudit",
            AUDIT,
            call(
                |c: Client| async move { c.export_audit(pb::ExportAuditRequest::default()).await },
            ),
        ),
        (
            "GetCheckpoint",
            AUDIT,
            call(|c: Client| async move { c.get_checkpoint(pb::GetCheckpointRequest {}).await }),
        ),
        (
            "GetInclusionProof",
            AUDIT,
            call(|c: Client| async move {
                c.get_inclusion_proof(pb::GetInclusionProofRequest::default())
                    .await
            }),
        ),
        (
            "GetConsistencyProof",
            AUDIT,
            call(|c: Client| async move {
                c.get_consistency_proof(pb::GetConsistencyProofRequest::default())
                    .await
            }),
        ),
    ]
}

#[tokio::test]
async fn every_rpc_admits_exactly_the_roles_in_the_table_and_audits_each_refusal() {
    let (server, keys) = server_with_roles().await;
    let roles = ["agent", "operator", "admin", "auditor"];
    let admin = keyed(&server, &keys[2]);
    let denied_before = query_all(
        &admin,
        pb::AuditFilter {
            kinds: vec!["auth.denied".into()],
            ..Default::default()
        },
    )
    .await
    .len();
    let mut refusals = 0;
    let mut wrong = Vec::new();
    for (rpc, allowed, f) in table() {
        for (i, key) in keys.iter().enumerate() {
            let got = f(keyed(&server, key)).await;
            let refused = matches!(&got, Err(e) if e.code() == Code::PermissionDenied);
            if matches!(&got, Err(e) if e.code() == Code::Unauthenticated) {
                wrong.push(format!("{rpc} as {}: unauthenticated", roles[i]));
            }
            if refused == allowed[i] {
                wrong.push(format!(
                    "{rpc} as {}: expected {}, got {got:?}",
                    roles[i],
                    if allowed[i] { "allowed" } else { "refused" }
                ));
            }
            refusals += usize::from(refused);
        }
    }
    assert!(
        wrong.is_empty(),
        "role table violations:\n{}",
        wrong.join("\n")
    );
    let denied = query_all(
        &admin,
        pb::AuditFilter {
            kinds: vec!["auth.denied".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        denied.len() - denied_before,
        refusals,
        "one auth.denied entry per refusal"
    );
    assert!(
        denied
            .last()
            .unwrap()
            .canonical
            .contains("\"principal\":\""),
        "the refused principal is inside the hashed entry"
    );
}

#[tokio::test]
async fn an_agent_key_acts_only_for_its_own_agents() {
    let (server, keys) = server_with_roles().await;
    let bot = keyed(&server, &keys[0]);
    let mine = bot.evaluate("bot-1").tool("t").send().await.unwrap();
    assert!(mine.allowed());
    let err = bot
        .evaluate("other-agent")
        .tool("t")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Another agent principal cannot record (settle) bot-1's decision.
    let admin = keyed(&server, &keys[2]);
    let other = keyed(
        &server,
        &create(&admin, "other-runtime", pb::Role::Agent, &["other-*"]).await,
    );
    let err = other.record(&mine.decision_id).send().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        !bot.record(&mine.decision_id)
            .send()
            .await
            .unwrap()
            .duplicate,
        "the owner still records it first"
    );
}

#[tokio::test]
async fn once_a_principal_exists_calls_without_a_valid_key_are_refused_and_revocation_is_immediate()
{
    let (server, keys) = server_with_roles().await;
    let anonymous = server.client();
    assert_eq!(
        anonymous.ping().await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let forged = keyed(&server, "arb_not-a-real-key");
    assert_eq!(
        forged.ping().await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let admin = keyed(&server, &keys[2]);
    let operator = keyed(&server, &keys[1]);
    operator.ping().await.unwrap();
    admin
        .revoke_principal(pb::RevokePrincipalRequest {
            name: "alice".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        operator.ping().await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let listed = admin
        .list_principals(pb::ListPrincipalsRequest {})
        .await
        .unwrap()
        .principals;
    assert!(listed
        .iter()
        .any(|p| p.name == "alice" && p.revoked_at.is_some()));

    // Health stays open to probes.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        status.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn keys_survive_a_restart_and_are_stored_only_as_hashes() {
    let (mut server, keys) = server_with_roles().await;
    server.restart().await;
    keyed(&server, &keys[2]).ping().await.unwrap();
    assert_eq!(
        server.client().ping().await.unwrap_err().code(),
        Code::Unauthenticated,
        "still authenticated mode"
    );
    // On PostgreSQL the whole database, as pg_dump writes it, stands in for the file.
    let (db, wal) = if crate::harness::on_postgres() {
        (server.pg_dump(), Vec::new())
    } else {
        (
            std::fs::read(server.db_path()).unwrap(),
            std::fs::read(server.db_path().with_extension("db-wal")).unwrap_or_default(),
        )
    };
    for key in &keys {
        let needle = key.as_bytes();
        assert!(
            !db.windows(needle.len()).any(|w| w == needle)
                && !wal.windows(needle.len()).any(|w| w == needle),
            "a raw API key is on disk"
        );
    }
}

#[tokio::test]
async fn a_non_loopback_address_is_refused_until_authentication_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = arbiter(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        data.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.code(), Some(1), "{}", out.text());
    assert!(
        out.text().contains("without authentication"),
        "{}",
        out.text()
    );
}

#[tokio::test]
async fn the_cli_creates_lists_and_revokes_principals() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let url = server.url();
    let out = arbiter(&[
        "principals",
        "create",
        "root",
        "--role",
        "admin",
        "--addr",
        &url,
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let key = out.stdout.trim().to_owned();
    assert!(
        key.starts_with("arb_"),
        "the key alone is printed on stdout: {key:?}"
    );
    let out = arbiter(&["principals", "list", "--addr", &url]).await;
    assert_eq!(out.code(), Some(1), "no key: refused\n{}", out.text());
    let out = arbiter(&["principals", "list", "--addr", &url, "--api-key", &key]).await;
    assert!(
        out.code() == Some(0) && out.stdout.contains("root\tadmin"),
        "{}",
        out.text()
    );
    let out = arbiter(&[
        "principals",
        "revoke",
        "root",
        "--addr",
        &url,
        "--api-key",
        &key,
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{}", out.text());
}

#[tokio::test]
async fn a_key_that_acts_for_an_agent_cannot_govern_it_even_with_the_operator_role() {
    let (server, keys) = server_with_roles().await;
    let admin = keyed(&server, &keys[2]);
    let op = keyed(&server, &keys[1]);
    let both = keyed(
        &server,
        &create_principal(
            &admin,
            "bot-and-op",
            &[pb::Role::Agent, pb::Role::Operator],
            &["bot-1"],
        )
        .await,
    );
    let agent_target = || {
        Some(pb::HaltTarget {
            scope: pb::HaltScope::Agent as i32,
            agent_id: "bot-1".into(),
            session_id: String::new(),
        })
    };
    op.halt(pb::HaltRequest {
        target: agent_target(),
        mode: pb::HaltMode::HaltAll as i32,
        reason: "stop".into(),
    })
    .await
    .unwrap();

    let denied = |r: Result<(), arbiter_client::Error>| {
        assert_eq!(r.unwrap_err().code(), Code::PermissionDenied)
    };
    denied(
        both.resume(pb::ResumeRequest {
            target: agent_target(),
            reason: "me".into(),
        })
        .await
        .map(|_| ()),
    );
    denied(
        both.halt(pb::HaltRequest {
            target: agent_target(),
            mode: pb::HaltMode::Disengaged as i32,
            reason: "me".into(),
        })
        .await
        .map(|_| ()),
    );
    denied(
        both.set_trust(pb::SetTrustRequest {
            agent_id: "bot-1".into(),
            level: pb::TrustLevel::L5Autonomous as i32,
            ..Default::default()
        })
        .await
        .map(|_| ()),
    );
    denied(
        both.grant_consent(pb::GrantConsentRequest {
            agent_id: "bot-1".into(),
            data_type: "ssn".into(),
            ..Default::default()
        })
        .await
        .map(|_| ()),
    );
    assert_eq!(
        op.list_halts(pb::ListHaltsRequest {})
            .await
            .unwrap()
            .halts
            .len(),
        1,
        "the halt stands"
    );
    // Naming itself (or a non-operator) as its accountable operator is refused too.
    let err = both
        .heartbeat(pb::HeartbeatRequest {
            agent_id: "bot-1".into(),
            operator: "bot-and-op".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.field()),
        (Code::InvalidArgument, Some("operator"))
    );
    // The same key may still govern agents it does not act for.
    both.set_trust(pb::SetTrustRequest {
        agent_id: "bot-2".into(),
        level: pb::TrustLevel::L1Monitor as i32,
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn create(c: &Client, name: &str, role: pb::Role, agents: &[&str]) -> String {
    create_principal(c, name, &[role], agents).await
}

/// Under a flood of unauthenticated calls the refusal queue fills; the refusals it
/// cannot take are counted in `arbiter_auth_refusals_dropped_total` and audited as
/// summary `auth.denied` entries (`dropped`), so the log accounts for every refusal.
#[tokio::test]
async fn a_refusal_flood_is_audited_entry_by_entry_or_in_a_summary_and_counted() {
    // A queue of one, so a small flood overflows it.
    let server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .env("ARBITER_DEV__REFUSAL_QUEUE", "1"),
    )
    .await;
    let admin_key = create(&server.client(), "root", pb::Role::Admin, &[]).await;
    let admin = keyed(&server, &admin_key);
    let intruder = keyed(&server, "arb_not_a_key");
    const BURST: u64 = 400;
    let mut calls_made = 0u64;
    // A burst overflows a queue of one unless the writer keeps pace with every call;
    // a few bursts make that practically impossible even on a loaded machine.
    let (one_by_one, summarized) = loop {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..BURST {
            let c = intruder.clone();
            calls.spawn(async move { c.ping().await });
        }
        while let Some(got) = calls.join_next().await {
            let got = got.unwrap();
            assert!(
                matches!(&got, Err(e) if e.code() == Code::Unauthenticated),
                "{got:?}"
            );
        }
        calls_made += BURST;
        let counted = audited_refusals(&admin, calls_made).await;
        if counted.1 > 0 || calls_made >= 5 * BURST {
            break counted;
        }
    };
    assert_eq!(
        one_by_one + summarized,
        calls_made,
        "every refused call is in the log, alone or in a summary"
    );
    assert!(
        summarized > 0,
        "a queue of one must overflow under bursts of {BURST} concurrent calls"
    );
    let (_, metrics) = server.scrape_metrics().await;
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("arbiter_auth_refusals_dropped_total "))
        .map(|v| v.trim().parse::<f64>().unwrap());
    assert_eq!(counted, Some(summarized as f64), "{metrics}");
}

/// docs/security.md §7: a Heartbeat may register as the agent's operator only an active
/// principal holding the `operator` role, other than the caller; the check runs at
/// registration, so revoking the operator later leaves it registered.
#[tokio::test]
async fn a_registered_operator_must_be_an_active_operator_principal_other_than_the_runtime() {
    let (server, [agent_key, _, admin_key, _]) = server_with_roles().await;
    let runtime = keyed(&server, &agent_key);
    let admin = keyed(&server, &admin_key);
    let beat = |operator: &str| {
        let runtime = runtime.clone();
        let operator = operator.to_owned();
        async move {
            runtime
                .heartbeat(pb::HeartbeatRequest {
                    agent_id: "bot-1".into(),
                    operator,
                    ..Default::default()
                })
                .await
        }
    };
    // Unknown, admin-only, auditor and the runtime itself: all refused, naming the field.
    for name in ["nobody-such", "root", "audrey", "bot-runtime"] {
        let err = beat(name).await.unwrap_err();
        assert_eq!(
            (err.code(), err.field()),
            (Code::InvalidArgument, Some("operator")),
            "{name}: {err:?}"
        );
    }
    let registered = || async {
        admin
            .list_agents(pb::ListAgentsRequest {})
            .await
            .unwrap()
            .agents
            .into_iter()
            .find(|a| a.agent_id == "bot-1")
            .map(|a| a.operator)
    };
    // An agent is listed once it has acted.
    runtime.evaluate("bot-1").tool("t").send().await.unwrap();
    assert_eq!(registered().await.as_deref(), Some(""));
    beat("alice").await.unwrap();
    assert_eq!(registered().await.as_deref(), Some("alice"));
    admin
        .revoke_principal(pb::RevokePrincipalRequest {
            name: "alice".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        registered().await.as_deref(),
        Some("alice"),
        "revoking the operator does not clear the registration"
    );
    let err = beat("alice").await.unwrap_err();
    assert_eq!(
        err.field(),
        Some("operator"),
        "a revoked operator cannot be named again"
    );
}

/// Unauthenticated refusals in the log (audited one by one, counted in summaries), once
/// they account for `expected` calls or 30 s have passed: the consumer audits in the
/// background.
async fn audited_refusals(admin: &Client, expected: u64) -> (u64, u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let entries = query_all(
            admin,
            pb::AuditFilter {
                kinds: vec!["auth.denied".into()],
                ..Default::default()
            },
        )
        .await;
        let (mut one, mut summary) = (0u64, 0u64);
        for e in &entries {
            let entry: serde_json::Value = serde_json::from_str(&e.canonical).unwrap();
            let body = &entry["body"];
            assert_eq!(body["principal"], "unauthenticated", "{body}");
            match body["dropped"].as_u64() {
                Some(n) => {
                    assert!(n > 0, "{body}");
                    summary += n;
                }
                None => one += 1,
            }
        }
        if one + summary >= expected || std::time::Instant::now() > deadline {
            return (one, summary);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Issue 14, defect 2: replacing a halt with one no stronger is a release. A key that
/// may not lift a halt (it acts for the halted agent, or holds the agent role under a
/// global halt) cannot weaken it or rewrite who engaged it; a stronger mode is fine,
/// and the log keeps the halt each engage replaced.
#[tokio::test]
async fn a_key_that_may_not_lift_a_halt_cannot_weaken_or_rewrite_it_either() {
    let (server, keys) = server_with_roles().await;
    let admin = keyed(&server, &keys[2]);
    let op = keyed(&server, &keys[1]);
    let both = keyed(
        &server,
        &create_principal(
            &admin,
            "bot-and-op",
            &[pb::Role::Agent, pb::Role::Operator],
            &["bot-1"],
        )
        .await,
    );
    let halt_target = |scope: pb::HaltScope, agent: &str, session: &str| {
        Some(pb::HaltTarget {
            scope: scope as i32,
            agent_id: agent.into(),
            session_id: session.into(),
        })
    };
    let engage = |c: &Client, t: Option<pb::HaltTarget>, mode: pb::HaltMode| {
        let c = c.clone();
        async move {
            c.halt(pb::HaltRequest {
                target: t,
                mode: mode as i32,
                reason: "by test".into(),
            })
            .await
            .map(|r| r.halt.unwrap())
        }
    };
    use pb::HaltMode::{Emergency, HaltAll, HaltNoncritical};
    let targets = [
        halt_target(pb::HaltScope::Global, "", ""),
        halt_target(pb::HaltScope::Agent, "bot-1", ""),
        halt_target(pb::HaltScope::Session, "bot-1", "s-1"),
    ];
    for t in &targets {
        for (held, tried) in [
            (Emergency, HaltNoncritical),
            (Emergency, HaltAll),
            (Emergency, Emergency),
            (HaltAll, HaltNoncritical),
            (HaltAll, HaltAll),
            (HaltNoncritical, HaltNoncritical),
        ] {
            engage(&op, t.clone(), held).await.unwrap();
            let err = engage(&both, t.clone(), tried).await.unwrap_err();
            assert_eq!(
                err.code(),
                Code::PermissionDenied,
                "{t:?} {held:?} → {tried:?}"
            );
            let halts = op.list_halts(pb::ListHaltsRequest {}).await.unwrap().halts;
            assert_eq!(halts.len(), 1, "{t:?}");
            assert_eq!(
                (halts[0].mode, halts[0].engaged_by.as_str()),
                (held as i32, "alice"),
                "{t:?} {held:?} → {tried:?}: the halt stands as engaged"
            );
            // The operator who may lift it may also weaken it.
            if tried < held {
                engage(&op, t.clone(), tried).await.unwrap();
            }
            op.resume(pb::ResumeRequest {
                target: t.clone(),
                reason: "next".into(),
            })
            .await
            .unwrap();
        }
        // Strengthening only adds, so the same key may do it; the log keeps what it
        // replaced.
        engage(&op, t.clone(), HaltNoncritical).await.unwrap();
        let h = engage(&both, t.clone(), Emergency).await.unwrap();
        assert_eq!(h.engaged_by, "bot-and-op");
        op.resume(pb::ResumeRequest {
            target: t.clone(),
            reason: "done".into(),
        })
        .await
        .unwrap();
    }
    let engages = query_all(
        &admin,
        pb::AuditFilter {
            kinds: vec!["halt.engage".into()],
            ..Default::default()
        },
    )
    .await;
    let last: serde_json::Value = serde_json::from_str(&engages.last().unwrap().canonical).unwrap();
    let body = &last["body"];
    assert_eq!(body["principal"], "bot-and-op", "{last}");
    assert_eq!(
        (&body["replaces"]["principal"], &body["replaces"]["mode"]),
        (
            &serde_json::json!("alice"),
            &serde_json::json!("HALT_NONCRITICAL")
        ),
        "{last}"
    );
    // Refusals are audited like any other.
    let refusals = query_all(
        &admin,
        pb::AuditFilter {
            kinds: vec!["auth.denied".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(refusals.len() >= 18, "{}", refusals.len());
}

#[tokio::test]
async fn who_am_i_names_the_callers_principal_roles_and_agents_from_its_key() {
    let (server, keys) = server_with_roles().await;
    let agent = keyed(&server, &keys[0]).who_am_i().await.unwrap();
    assert_eq!(agent.principal, "bot-runtime");
    assert_eq!(agent.roles, vec![pb::Role::Agent as i32]);
    assert_eq!(agent.agents, vec!["bot-*".to_owned()]);
    let operator = keyed(&server, &keys[1]).who_am_i().await.unwrap();
    assert_eq!(operator.principal, "alice");
    assert_eq!(operator.roles, vec![pb::Role::Operator as i32]);
    assert!(operator.agents.is_empty());
    let err = keyed(&server, "arb_unknown").who_am_i().await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}
