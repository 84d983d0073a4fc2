//! The kill switch: halts by target and mode, checked before every other stage.

use arbiter_client::{proto as pb, Client};
use tonic::Code;

use crate::harness::{arbiter, query_all, spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
actions:
  - match: {tool: "page_oncall"}
    critical: true
agents:
  - id: crit-bot
    critical: true
    tools: {allow: ["*"]}
  - id: "bot*"
    tools: {allow: ["*"]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "100.00"}
"#;

fn target(scope: pb::HaltScope, agent: &str, session: &str) -> Option<pb::HaltTarget> {
    Some(pb::HaltTarget {
        scope: scope as i32,
        agent_id: agent.into(),
        session_id: session.into(),
    })
}

async fn allowed(c: &Client, agent: &str, session: &str, tool: &str) -> bool {
    let d = c
        .evaluate(agent)
        .session(session)
        .tool(tool)
        .cost_micro_usd(1)
        .send()
        .await
        .unwrap();
    if !d.allowed() {
        let r = d.reason().unwrap();
        assert_eq!(
            (r.stage.as_str(), r.code.as_str()),
            ("halt", "halt.engaged"),
            "{r:?}"
        );
    }
    d.allowed()
}

#[tokio::test]
async fn each_mode_lets_through_exactly_the_critical_work_it_promises_for_every_target() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    let modes = [
        // (mode, critical agent + normal action, normal agent + critical action, normal + normal)
        (pb::HaltMode::HaltNoncritical, [true, true, false]),
        (pb::HaltMode::HaltAll, [false, true, false]),
        (pb::HaltMode::Emergency, [false, false, false]),
    ];
    let targets = [
        (target(pb::HaltScope::Global, "", ""), "global"),
        (target(pb::HaltScope::Agent, "bot", ""), "agent"),
        (target(pb::HaltScope::Session, "bot", "s1"), "session"),
    ];
    for (mode, expect) in modes {
        for (t, name) in &targets {
            c.halt(pb::HaltRequest {
                target: t.clone(),
                mode: mode as i32,
                reason: "drill".into(),
            })
            .await
            .unwrap();
            // Agent and session halts block everything for their target (SPEC §5); the
            // critical agent is another agent there and is untouched.
            let crit_expect = if *name == "global" { expect[0] } else { true };
            assert_eq!(
                allowed(&c, "crit-bot", "s1", "summarize").await,
                crit_expect,
                "{mode:?} {name}: critical agent"
            );
            assert_eq!(
                allowed(&c, "bot", "s1", "page_oncall").await,
                expect[1] && *name == "global",
                "{mode:?} {name}: critical action"
            );
            assert_eq!(
                allowed(&c, "bot", "s1", "summarize").await,
                expect[2],
                "{mode:?} {name}: normal work"
            );
            // Other sessions and agents are untouched by narrower halts.
            let other_session = allowed(&c, "bot", "s2", "summarize").await;
            assert_eq!(
                other_session,
                expect[2] || *name == "session",
                "{mode:?} {name}: other session"
            );
            let other_agent = allowed(&c, "bot2", "s1", "summarize").await;
            assert_eq!(
                other_agent,
                *name != "global" || expect[2],
                "{mode:?} {name}: other agent"
            );
            c.resume(pb::ResumeRequest {
                target: t.clone(),
                reason: "drill over".into(),
            })
            .await
            .unwrap();
            assert!(
                allowed(&c, "bot", "s1", "summarize").await,
                "{mode:?} {name}: resumed"
            );
        }
    }
}

#[tokio::test]
async fn a_halted_agent_is_denied_before_any_other_stage_even_without_a_policy_rule() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    // Never seen before, and no agent rule matches it: the halt still applies first.
    c.halt(pb::HaltRequest {
        target: target(pb::HaltScope::Agent, "stranger", ""),
        mode: pb::HaltMode::HaltAll as i32,
        reason: "runaway spend".into(),
    })
    .await
    .unwrap();
    let d = c
        .evaluate("stranger")
        .tool("anything")
        .cost_micro_usd(5)
        .explain(false)
        .send()
        .await
        .unwrap();
    assert!(d.is_denied());
    assert_eq!(d.reasons.len(), 1, "halt decides alone: {:?}", d.reasons);
    let r = d.reason().unwrap();
    assert_eq!(r.code, "halt.engaged");
    assert!(
        r.message.contains("anonymous")
            && r.message.contains("runaway spend")
            && r.message.contains("HALT_ALL"),
        "{}",
        r.message
    );
    assert!(d.reservation_id.is_none(), "nothing is reserved");

    let agents = c
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .agents;
    assert!(agents.iter().any(|a| a.agent_id == "stranger" && a.halted));
}

#[tokio::test]
async fn halts_survive_a_restart_and_every_engage_and_release_is_audited() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    c.halt(pb::HaltRequest {
        target: target(pb::HaltScope::Global, "", ""),
        mode: pb::HaltMode::Emergency as i32,
        reason: "incident 42".into(),
    })
    .await
    .unwrap();
    server.restart().await;
    let c = server.client();
    assert!(
        !allowed(&c, "crit-bot", "s", "page_oncall").await,
        "EMERGENCY survives the restart"
    );
    let listed = c.list_halts(pb::ListHaltsRequest {}).await.unwrap().halts;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reason, "incident 42");

    c.resume(pb::ResumeRequest {
        target: target(pb::HaltScope::Global, "", ""),
        reason: "resolved".into(),
    })
    .await
    .unwrap();
    assert!(allowed(&c, "bot", "s", "summarize").await);
    let err = c
        .resume(pb::ResumeRequest {
            target: target(pb::HaltScope::Global, "", ""),
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let entries = query_all(
        &c,
        pb::AuditFilter {
            kinds: vec!["halt.engage".into(), "halt.release".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(entries.len(), 2);
    assert!(
        entries[0].canonical.contains("\"reason\":\"incident 42\"")
            && entries[0].canonical.contains("\"principal\":\"anonymous\"")
    );
    assert!(entries[1].canonical.contains("\"reason\":\"resolved\""));
}

#[tokio::test]
async fn malformed_halts_are_refused_naming_the_field_and_change_nothing() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    let cases = [
        (
            pb::HaltRequest {
                target: None,
                mode: pb::HaltMode::HaltAll as i32,
                reason: "r".into(),
            },
            "target",
        ),
        (
            pb::HaltRequest {
                target: target(pb::HaltScope::Unspecified, "", ""),
                mode: pb::HaltMode::HaltAll as i32,
                reason: "r".into(),
            },
            "target.scope",
        ),
        (
            pb::HaltRequest {
                target: target(pb::HaltScope::Agent, "", ""),
                mode: pb::HaltMode::HaltAll as i32,
                reason: "r".into(),
            },
            "target.agent_id",
        ),
        (
            pb::HaltRequest {
                target: target(pb::HaltScope::Global, "", ""),
                mode: 0,
                reason: "r".into(),
            },
            "mode",
        ),
        (
            pb::HaltRequest {
                target: target(pb::HaltScope::Global, "", ""),
                mode: pb::HaltMode::HaltAll as i32,
                reason: String::new(),
            },
            "reason",
        ),
    ];
    for (req, field) in cases {
        let err = c.halt(req).await.unwrap_err();
        assert_eq!(
            (err.code(), err.field()),
            (Code::InvalidArgument, Some(field)),
            "{err}"
        );
    }
    assert!(c
        .list_halts(pb::ListHaltsRequest {})
        .await
        .unwrap()
        .halts
        .is_empty());
}

#[tokio::test]
async fn the_cli_halts_lists_and_resumes() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let url = server.url();
    let out = arbiter(&[
        "halt",
        "--agent",
        "bot",
        "--mode",
        "emergency",
        "--reason",
        "cli drill",
        "--addr",
        &url,
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(!allowed(&server.client(), "bot", "s", "page_oncall").await);
    let out = arbiter(&["halts", "--addr", &url]).await;
    assert!(
        out.stdout.contains("EMERGENCY on agent bot") && out.stdout.contains("cli drill"),
        "{}",
        out.text()
    );
    let out = arbiter(&[
        "resume", "--agent", "bot", "--reason", "done", "--addr", &url,
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{}", out.text());
    assert!(allowed(&server.client(), "bot", "s", "summarize").await);
}

/// Issue 14, defect 1: a critical rule speaks only for the facets it matches. Every
/// facet of an action (tool, API call, model, data access) must be covered by a
/// critical rule, or a global halt stops the whole action.
const FACETS_POLICY: &str = r#"
version: 1
actions:
  - match: {tool: escalate_to_human}
    critical: true
  - match: {api: "POST https://pager.example.com/**"}
    critical: true
  - match: {model: "gpt-4o-mini*"}
    critical: true
  - match: {tool: summarize, model: "claude-*"}
    critical: true
agents:
  - id: "bot*"
    tools: {allow: ["*"]}
    apis: {allow: ["* https://**"]}
    models: ["*"]
defaults:
  consent: allow
"#;

/// (what, tool, api url, model, data access, passes a global HALT_ALL / HALT_NONCRITICAL)
type FacetCase = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    bool,
    bool,
);

const FACET_CASES: &[FacetCase] = &[
    (
        "critical tool alone",
        Some("escalate_to_human"),
        None,
        None,
        false,
        true,
    ),
    (
        "critical api alone",
        None,
        Some("https://pager.example.com/v1/page"),
        None,
        false,
        true,
    ),
    (
        "critical model alone",
        None,
        None,
        Some("gpt-4o-mini"),
        false,
        true,
    ),
    (
        "critical tool + critical api",
        Some("escalate_to_human"),
        Some("https://pager.example.com/x"),
        None,
        false,
        true,
    ),
    (
        "one rule covering tool and model",
        Some("summarize"),
        None,
        Some("claude-sonnet-4"),
        false,
        true,
    ),
    (
        "critical tool + other api",
        Some("escalate_to_human"),
        Some("https://api.example.com/x"),
        None,
        false,
        false,
    ),
    (
        "critical tool + other api, upper-case host",
        Some("escalate_to_human"),
        Some("https://API.example.com/x"),
        None,
        false,
        false,
    ),
    (
        "critical tool + other model",
        Some("escalate_to_human"),
        None,
        Some("gpt-4o"),
        false,
        false,
    ),
    (
        "critical api + other tool",
        Some("refund_order"),
        Some("https://pager.example.com/x"),
        None,
        false,
        false,
    ),
    (
        "critical model + other api",
        None,
        Some("https://api.example.com/x"),
        Some("gpt-4o-mini"),
        false,
        false,
    ),
    (
        "critical tool + data access",
        Some("escalate_to_human"),
        None,
        None,
        true,
        false,
    ),
    (
        "tool of a two-matcher rule without its model",
        Some("summarize"),
        None,
        None,
        false,
        false,
    ),
    (
        "tool of a two-matcher rule with another model",
        Some("summarize"),
        None,
        Some("gpt-4o"),
        false,
        false,
    ),
    (
        "all three critical + another tool's api",
        Some("escalate_to_human"),
        Some("https://api.example.com/pay"),
        Some("gpt-4o-mini"),
        false,
        false,
    ),
];

async fn facet_decision(c: &Client, case: &FacetCase, explain: bool) -> arbiter_client::Decision {
    let (_, tool, url, model, data, _) = *case;
    let mut b = c.evaluate("bot").explain(explain).cost_micro_usd(1);
    if let Some(t) = tool {
        b = b.tool(t);
    }
    if let Some(u) = url {
        b = b.api("POST", u);
    }
    if let Some(m) = model {
        b = b.model(m);
    }
    if data {
        b = b.data("user_email", Some("support"));
    }
    b.send().await.unwrap()
}

#[tokio::test]
async fn a_global_halt_passes_an_action_only_if_every_facet_is_covered_by_a_critical_rule() {
    let server = spawn_server(ServerOptions::new().policy(FACETS_POLICY)).await;
    let c = server.client();
    // Without a halt every case is allowed: the halt alone decides below.
    for case in FACET_CASES {
        assert!(
            facet_decision(&c, case, false).await.allowed(),
            "{}: no halt",
            case.0
        );
    }
    for mode in [pb::HaltMode::HaltAll, pb::HaltMode::HaltNoncritical] {
        c.halt(pb::HaltRequest {
            target: target(pb::HaltScope::Global, "", ""),
            mode: mode as i32,
            reason: "incident".into(),
        })
        .await
        .unwrap();
        for case in FACET_CASES {
            for explain in [false, true] {
                let d = facet_decision(&c, case, explain).await;
                let halt = d.reasons.iter().find(|r| r.stage == "halt").unwrap();
                assert_eq!(
                    (d.allowed(), halt.passed),
                    (case.5, case.5),
                    "{mode:?} explain={explain} {}: {:?}",
                    case.0,
                    d.reasons
                );
                if !case.5 {
                    assert_eq!(halt.code, "halt.engaged", "{}", case.0);
                }
            }
        }
    }
    // EMERGENCY stops even fully critical actions.
    c.halt(pb::HaltRequest {
        target: target(pb::HaltScope::Global, "", ""),
        mode: pb::HaltMode::Emergency as i32,
        reason: "incident".into(),
    })
    .await
    .unwrap();
    for case in FACET_CASES {
        assert!(
            !facet_decision(&c, case, false).await.allowed(),
            "EMERGENCY {}",
            case.0
        );
    }
}
