//! Heartbeats, operator binding (four-eyes) and the watchdog.

use std::time::Duration;

use arbiter_client::{proto as pb, Client};
use tonic::Code;

use crate::harness::{create_principal, eventually, keyed, query_all, spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
actions:
  - match: {tool: "refund_*"}
    approval: always
agents:
  - id: "bot*"
    tools: {allow: ["*"]}
    loop_guard: {max_calls: 1, window: 60s}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "1.00"}
watchdog:
  unresponsive_after: 1m
  halt_silent_after: 5m
  halt_over_budget: true
  halt_looping: true
"#;

fn beat(agent: &str, operator: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        agent_id: agent.into(),
        operator: operator.into(),
        ..Default::default()
    }
}

async fn watchdog_halts(c: &Client) -> Vec<pb::AuditEntry> {
    query_all(
        c,
        pb::AuditFilter {
            kinds: vec!["halt.engage".into()],
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .filter(|e| e.canonical.contains("\"principal\":\"watchdog\""))
    .collect()
}

async fn halted(c: &Client, agent: &str) -> bool {
    c.list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .agents
        .iter()
        .any(|a| a.agent_id == agent && a.halted)
}

#[tokio::test]
async fn the_registered_operator_cannot_approve_its_agents_actions_but_another_operator_can() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let admin = keyed(
        &server,
        &principal(&server.client(), "root", pb::Role::Admin, &[]).await,
    );
    let bot = keyed(
        &server,
        &principal(&admin, "bot-runtime", pb::Role::Agent, &["bot*"]).await,
    );
    let alice = keyed(
        &server,
        &principal(&admin, "alice", pb::Role::Operator, &[]).await,
    );
    let bob = keyed(
        &server,
        &principal(&admin, "bob", pb::Role::Operator, &[]).await,
    );

    let resp = bot.heartbeat(beat("bot-1", "alice")).await.unwrap();
    assert!(!resp.halted);
    let agents = admin
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .agents;
    let me = agents.iter().find(|a| a.agent_id == "bot-1");
    // An agent first seen by heartbeat appears once it evaluates; presence is kept meanwhile.
    if let Some(me) = me {
        assert_eq!(
            (me.presence, me.operator.as_str()),
            (pb::PresenceStatus::Live as i32, "alice")
        );
    }

    let id = bot
        .evaluate("bot-1")
        .tool("refund_order")
        .send()
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let err = alice
        .approve(pb::ApproveRequest {
            approval_id: id.clone(),
            grant: true,
            reason: "mine".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "four-eyes");
    bob.approve(pb::ApproveRequest {
        approval_id: id.clone(),
        grant: true,
        reason: "ok".into(),
    })
    .await
    .unwrap();
    let agents = admin
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .agents;
    let me = agents.iter().find(|a| a.agent_id == "bot-1").unwrap();
    assert_eq!(
        (me.presence, me.operator.as_str()),
        (pb::PresenceStatus::Live as i32, "alice")
    );
    let bound = query_all(
        &admin,
        pb::AuditFilter {
            kinds: vec!["agent.operator".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(bound.len(), 1, "the binding is audited once");
}

#[tokio::test]
async fn a_heartbeat_reports_a_halt_and_never_clears_it() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    c.halt(pb::HaltRequest {
        target: Some(pb::HaltTarget {
            scope: pb::HaltScope::Agent as i32,
            agent_id: "bot-1".into(),
            session_id: String::new(),
        }),
        mode: pb::HaltMode::HaltAll as i32,
        reason: "stop".into(),
    })
    .await
    .unwrap();
    for _ in 0..3 {
        let r = c.heartbeat(beat("bot-1", "")).await.unwrap();
        assert!(r.halted && r.halt.unwrap().reason == "stop");
    }
    assert_eq!(
        c.list_halts(pb::ListHaltsRequest {})
            .await
            .unwrap()
            .halts
            .len(),
        1
    );
}

#[tokio::test]
async fn the_watchdog_marks_silence_and_halts_silent_looping_and_overspending_agents_once_each() {
    let server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .clock("2030-01-01T00:00:00Z"),
    )
    .await;
    let c = server.client();
    let d = Duration::from_secs(10);

    // Silent: a heartbeat, then time passes.
    c.evaluate("bot-silent").tool("t").send().await.unwrap();
    c.heartbeat(beat("bot-silent", "")).await.unwrap();
    server.set_time("2030-01-01T00:02:00Z");
    eventually("bot-silent is unresponsive", d, || {
        let c = c.clone();
        async move {
            let agents = c
                .list_agents(pb::ListAgentsRequest {})
                .await
                .unwrap()
                .agents;
            agents
                .iter()
                .any(|a| {
                    a.agent_id == "bot-silent"
                        && a.presence == pb::PresenceStatus::Unresponsive as i32
                })
                .then_some(())
        }
    })
    .await;
    assert!(
        !halted(&c, "bot-silent").await,
        "unresponsive is not yet halted"
    );
    server.set_time("2030-01-01T00:06:00Z");
    eventually("bot-silent is halted", d, || {
        let c = c.clone();
        async move { halted(&c, "bot-silent").await.then_some(()) }
    })
    .await;

    // Looping: the loop guard trips on the second call.
    c.evaluate("bot-loop")
        .session("s")
        .tool("t")
        .send()
        .await
        .unwrap();
    let d2 = c
        .evaluate("bot-loop")
        .session("s")
        .tool("t")
        .send()
        .await
        .unwrap();
    assert_eq!(d2.reason().unwrap().code, "loop.detected");
    eventually("bot-loop is halted", d, || {
        let c = c.clone();
        async move { halted(&c, "bot-loop").await.then_some(()) }
    })
    .await;

    // Over budget: Record reports more than the cap.
    let ok = c
        .evaluate("bot-spend")
        .tool("t")
        .cost_micro_usd(500_000)
        .send()
        .await
        .unwrap();
    c.record(&ok.decision_id)
        .cost_micro_usd(2_000_000)
        .send()
        .await
        .unwrap();
    eventually("bot-spend is halted", d, || {
        let c = c.clone();
        async move { halted(&c, "bot-spend").await.then_some(()) }
    })
    .await;

    // Once each: by now the watchdog has run many times over the earlier conditions.
    let halts = watchdog_halts(&c).await;
    assert_eq!(
        halts.len(),
        3,
        "{:#?}",
        halts.iter().map(|e| &e.canonical).collect::<Vec<_>>()
    );
    for (agent, why) in [
        ("bot-silent", "no heartbeat"),
        ("bot-loop", "loop guard"),
        ("bot-spend", "over budget"),
    ] {
        assert!(
            halts
                .iter()
                .any(|e| e.agent_id == agent && e.canonical.contains(why)),
            "{agent}"
        );
    }
}

async fn principal(c: &Client, name: &str, role: pb::Role, agents: &[&str]) -> String {
    create_principal(c, name, &[role], agents).await
}

async fn presence_of(c: &Client, agent: &str) -> i32 {
    c.list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .agents
        .iter()
        .find(|a| a.agent_id == agent)
        .map(|a| a.presence)
        .unwrap_or_else(|| panic!("{agent} is not listed"))
}

#[tokio::test]
async fn presence_and_the_silence_it_measures_survive_a_restart() {
    let mut server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .clock("2030-01-01T00:00:00Z"),
    )
    .await;
    let c = server.client();
    c.evaluate("bot-steady").tool("t").send().await.unwrap();
    c.heartbeat(beat("bot-steady", "")).await.unwrap();

    // At once: the heartbeats received since the last background write are stored at
    // shutdown.
    server.restart().await;
    let c = server.client();
    assert_eq!(
        presence_of(&c, "bot-steady").await,
        pb::PresenceStatus::Live as i32
    );

    // The silence that began before the restart is judged after it.
    server.set_time("2030-01-01T00:06:00Z");
    eventually("bot-steady is halted", Duration::from_secs(10), || {
        let c = c.clone();
        async move { halted(&c, "bot-steady").await.then_some(()) }
    })
    .await;
    assert_eq!(
        presence_of(&c, "bot-steady").await,
        pb::PresenceStatus::Unresponsive as i32
    );

    // Resumed by a human, then restarted: the same silence is not halted again.
    c.resume(pb::ResumeRequest {
        target: Some(pb::HaltTarget {
            scope: pb::HaltScope::Agent as i32,
            agent_id: "bot-steady".into(),
            session_id: String::new(),
        }),
        reason: "checked".into(),
    })
    .await
    .unwrap();
    server.restart().await;
    let c = server.client();
    // Several watchdog passes (twice a second) since the start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !halted(&c, "bot-steady").await,
        "halted again after restart"
    );
    assert_eq!(
        presence_of(&c, "bot-steady").await,
        pb::PresenceStatus::Unresponsive as i32
    );
    assert_eq!(watchdog_halts(&c).await.len(), 1);
}

#[tokio::test]
async fn an_overspend_halt_resumed_by_an_operator_is_not_repeated_after_a_restart() {
    let mut server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .clock("2030-01-01T00:00:00Z"),
    )
    .await;
    let c = server.client();
    let ok = c
        .evaluate("bot-spend")
        .tool("t")
        .cost_micro_usd(500_000)
        .send()
        .await
        .unwrap();
    c.record(&ok.decision_id)
        .cost_micro_usd(2_000_000)
        .send()
        .await
        .unwrap();
    eventually("bot-spend is halted", Duration::from_secs(10), || {
        let c = c.clone();
        async move { halted(&c, "bot-spend").await.then_some(()) }
    })
    .await;

    // A human looked and let it go on, still over the cap in this window; a restart
    // must not undo that decision.
    c.resume(pb::ResumeRequest {
        target: Some(pb::HaltTarget {
            scope: pb::HaltScope::Agent as i32,
            agent_id: "bot-spend".into(),
            session_id: String::new(),
        }),
        reason: "checked the invoice".into(),
    })
    .await
    .unwrap();
    server.restart().await;
    let c = server.client();
    // Several watchdog passes (twice a second) since the start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!halted(&c, "bot-spend").await, "halted again after restart");
    assert_eq!(watchdog_halts(&c).await.len(), 1);
}
