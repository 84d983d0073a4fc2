//! PostgreSQL, several replicas on one database (issue 14): a revoked API key and a new
//! halt are refused on every replica within the propagation bound (measured, with the
//! figures printed), and a halt engaged on one replica cannot be weakened from another
//! by a key that may not lift it, however fresh the other replica's copy is.

use std::time::{Duration, Instant};

use arbiter_client::{proto as pb, Client, DecisionOutcome};
use tonic::Code;

use crate::harness::{create_principal, keyed, query_all, skip_unless_postgres, TestServer};
use crate::streams::{accepted_everywhere, replicas};

const POLICY: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: [read]}
"#;

/// The spec'd propagation bound is 1 s; it is asserted as a correctness bound with a
/// generous margin for a loaded test machine (never as a speed target: the figures are
/// printed for docs/postgres.md).
pub(crate) const BOUND: Duration = Duration::from_secs(3);

/// Polls `check` every 5 ms until it holds; how long that took (at most 10 s).
async fn until<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// p50, p99 and max of `delays`, printed; every one must be within the bound.
fn report(what: &str, mut delays: Vec<Duration>) {
    delays.sort();
    let p = |q: f64| delays[((delays.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    eprintln!(
        "{what} over {} observations: p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        p(0.50),
        p(0.99),
        delays.last().unwrap()
    );
    let max = *delays.last().unwrap();
    assert!(max <= BOUND, "{what}: {max:?} > {BOUND:?}");
}

/// Three replicas and an admin key (bootstrapped on the first) that works on all.
async fn three() -> (Vec<TestServer>, tempfile::TempDir, String) {
    let (servers, dir) = replicas(3, POLICY).await;
    let admin = create_principal(&servers[0].client(), "root", &[pb::Role::Admin], &[]).await;
    accepted_everywhere(&servers, &admin).await;
    (servers, dir, admin)
}

#[tokio::test]
async fn a_revoked_key_and_a_new_halt_are_refused_on_every_replica_within_a_second() {
    if skip_unless_postgres(
        "replicas::a_revoked_key_and_a_new_halt_are_refused_on_every_replica_within_a_second",
    ) {
        return;
    }
    const TRIALS: usize = 20;
    let (servers, _dir, admin) = three().await;
    let admins: Vec<Client> = servers.iter().map(|s| keyed(s, &admin)).collect();

    let mut revoked = Vec::new();
    for trial in 0..TRIALS {
        let on = trial % servers.len();
        let name = format!("key-{trial}");
        let key = create_principal(&admins[on], &name, &[pb::Role::Auditor], &[]).await;
        accepted_everywhere(&servers, &key).await;
        admins[on]
            .revoke_principal(pb::RevokePrincipalRequest { name })
            .await
            .unwrap();
        for (i, s) in servers.iter().enumerate().filter(|(i, _)| *i != on) {
            let c = keyed(s, &key);
            revoked.push(
                until(&format!("key {trial} refused on replica {i}"), || {
                    let c = c.clone();
                    async move {
                        matches!(c.ping().await, Err(e) if e.code() == Code::Unauthenticated)
                    }
                })
                .await,
            );
        }
    }

    let ops = create_principal(&admins[0], "ops", &[pb::Role::Operator], &[]).await;
    let bot = create_principal(&admins[0], "bots", &[pb::Role::Agent], &["bot-*"]).await;
    accepted_everywhere(&servers, &ops).await;
    accepted_everywhere(&servers, &bot).await;
    let mut halted = Vec::new();
    for trial in 0..TRIALS {
        let on = trial % servers.len();
        let agent = format!("bot-{trial}");
        keyed(&servers[on], &ops)
            .halt(pb::HaltRequest {
                target: Some(pb::HaltTarget {
                    scope: pb::HaltScope::Agent as i32,
                    agent_id: agent.clone(),
                    session_id: String::new(),
                }),
                mode: pb::HaltMode::Emergency as i32,
                reason: "propagation drill".into(),
            })
            .await
            .unwrap();
        for (i, s) in servers.iter().enumerate().filter(|(i, _)| *i != on) {
            let c = keyed(s, &bot);
            let agent = agent.clone();
            halted.push(
                until(&format!("halt {trial} on replica {i}"), || {
                    let (c, agent) = (c.clone(), agent.clone());
                    async move {
                        let d = c.evaluate(agent).tool("read").send().await.unwrap();
                        d.outcome == DecisionOutcome::Deny
                    }
                })
                .await,
            );
        }
    }
    report(
        &format!("a revoked API key refused by the 2 other replicas ({TRIALS} trials)"),
        revoked,
    );
    report(
        &format!("a new EMERGENCY halt enforced by the 2 other replicas ({TRIALS} trials)"),
        halted,
    );
}

fn global() -> Option<pb::HaltTarget> {
    Some(pb::HaltTarget {
        scope: pb::HaltScope::Global as i32,
        agent_id: String::new(),
        session_id: String::new(),
    })
}

fn agent_target(agent: &str) -> Option<pb::HaltTarget> {
    Some(pb::HaltTarget {
        scope: pb::HaltScope::Agent as i32,
        agent_id: agent.into(),
        session_id: String::new(),
    })
}

fn engage(target: Option<pb::HaltTarget>, mode: pb::HaltMode) -> pb::HaltRequest {
    pb::HaltRequest {
        target,
        mode: mode as i32,
        reason: "by test".into(),
    }
}

#[tokio::test]
async fn a_halt_engaged_on_one_replica_cannot_be_weakened_from_another_by_a_key_that_may_not_lift_it(
) {
    if skip_unless_postgres(
        "replicas::a_halt_engaged_on_one_replica_cannot_be_weakened_from_another_by_a_key_that_may_not_lift_it",
    ) {
        return;
    }
    use pb::HaltMode::{Emergency, HaltAll, HaltNoncritical};
    let (servers, _dir, admin) = three().await;
    let root = keyed(&servers[0], &admin);
    let op = create_principal(&root, "alice", &[pb::Role::Operator], &[]).await;
    let both = create_principal(
        &root,
        "bot-and-op",
        &[pb::Role::Agent, pb::Role::Operator],
        &["bot-1"],
    )
    .await;
    accepted_everywhere(&servers, &op).await;
    accepted_everywhere(&servers, &both).await;
    let (op_b, both_a) = (keyed(&servers[1], &op), keyed(&servers[0], &both));
    for target in [global(), agent_target("bot-1")] {
        for (held, tried) in [
            (Emergency, HaltNoncritical),
            (Emergency, HaltAll),
            (Emergency, Emergency),
            (HaltAll, HaltNoncritical),
        ] {
            // Engaged on B, tried on A right away: A's own copy may still be older.
            op_b.halt(engage(target.clone(), held)).await.unwrap();
            let err = both_a
                .halt(engage(target.clone(), tried))
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Code::PermissionDenied,
                "{target:?} {held:?} → {tried:?}: {err}"
            );
            for s in &servers {
                let c = keyed(s, &op);
                until("the halt as engaged on every replica", || {
                    let c = c.clone();
                    async move {
                        let halts = c.list_halts(pb::ListHaltsRequest {}).await.unwrap().halts;
                        halts.len() == 1
                            && (halts[0].mode, halts[0].engaged_by.as_str())
                                == (held as i32, "alice")
                    }
                })
                .await;
            }
            op_b.resume(pb::ResumeRequest {
                target: target.clone(),
                reason: "next".into(),
            })
            .await
            .unwrap();
        }
    }
    // The log holds no halt change by the refused key, and every refusal is audited.
    let engages = query_all(
        &root,
        pb::AuditFilter {
            kinds: vec!["halt.engage".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(engages.len(), 8);
    assert!(
        engages
            .iter()
            .all(|e| !e.canonical.contains("\"bot-and-op\"")),
        "a refused key changed a halt"
    );
    let refusals = query_all(
        &root,
        pb::AuditFilter {
            kinds: vec!["auth.denied".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(refusals.len() >= 8, "{}", refusals.len());

    // Strengthening from a stale copy only adds, and names what it replaced.
    op_b.halt(engage(global(), HaltNoncritical)).await.unwrap();
    let h = both_a
        .halt(engage(global(), Emergency))
        .await
        .unwrap()
        .halt
        .unwrap();
    assert_eq!(h.engaged_by, "bot-and-op");
    let engages = query_all(
        &root,
        pb::AuditFilter {
            kinds: vec!["halt.engage".into()],
            ..Default::default()
        },
    )
    .await;
    let last: serde_json::Value = serde_json::from_str(&engages.last().unwrap().canonical).unwrap();
    assert_eq!(
        last["body"]["replaces"]["principal"], "alice",
        "the replaced halt is kept in the log: {last}"
    );
}

/// Two replicas hear of the same new tool at once, each with another definition (an
/// upstream answering two gateways differently): each replica decides against its own
/// copy, so both would pin "their" definition on first use. The store's sequenced commit
/// checks the stored pin, so exactly one definition is trusted per tool and the other
/// waits for an operator as a changed one, on both replicas.
#[tokio::test]
async fn two_replicas_pinning_the_same_new_tool_at_once_trust_only_one_definition() {
    if skip_unless_postgres(
        "replicas::two_replicas_pinning_the_same_new_tool_at_once_trust_only_one_definition",
    ) {
        return;
    }
    const TOOLS: usize = 20;
    let (servers, _dir, admin) = three().await;
    let a = keyed(&servers[0], &admin);
    let gw = create_principal(&a, "gw", &[pb::Role::Agent], &["*"]).await;
    accepted_everywhere(&servers, &gw).await;
    let report = |s: usize, tool: String, text: &'static str| {
        let c = keyed(&servers[s], &gw);
        async move {
            c.report_tools(pb::ReportToolsRequest {
                agent_id: "bot-1".into(),
                server: "files".into(),
                tools: vec![pb::ToolDefinition {
                    definition_json: serde_json::json!({"name": tool, "description": text})
                        .to_string(),
                    name: tool,
                }],
            })
            .await
            .expect("ReportTools")
            .tools
            .remove(0)
        }
    };
    let mut both_trusted = Vec::new();
    for i in 0..TOOLS {
        let tool = format!("t{i}");
        let (x, y) = tokio::join!(
            report(0, tool.clone(), "honest"),
            report(1, tool.clone(), "poisoned")
        );
        let trusted = [&x, &y]
            .iter()
            .filter(|v| v.state == pb::ToolPinState::Trusted as i32)
            .count();
        if trusted != 1 {
            both_trusted.push(format!("{tool}: {x:?} / {y:?}"));
        }
    }
    assert!(
        both_trusted.is_empty(),
        "exactly one definition per tool is trusted:\n{}",
        both_trusted.join("\n")
    );
    // Every replica's copy converges on one trusted and one waiting definition per tool.
    for s in &servers {
        let c = keyed(s, &admin);
        until("the pins reach every replica", || {
            let c = c.clone();
            async move {
                let pins = c
                    .list_tool_pins(pb::ListToolPinsRequest::default())
                    .await
                    .unwrap()
                    .pins;
                pins.len() == TOOLS
                    && pins
                        .iter()
                        .all(|p| !p.trusted_digest.is_empty() && !p.candidate_digest.is_empty())
            }
        })
        .await;
    }
}
