//! The Prometheus endpoint: decisions by outcome and deciding stage, the audit
//! writer's batches, and the state gauges read at scrape time.

use std::time::Duration;

use arbiter_client::proto as pb;

use crate::harness::{spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
agents:
  - id: "bot*"
    tools: {allow: ["read_*"]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "100.00"}
"#;

/// The value of the series `name{labels}` (labels exactly as rendered), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn decisions_batches_and_state_gauges_are_exported_in_prometheus_text_format() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    for _ in 0..3 {
        let d = c
            .evaluate("bot-1")
            .tool("read_file")
            .cost_micro_usd(10)
            .send()
            .await
            .unwrap();
        assert!(d.allowed(), "{d:?}");
    }
    let d = c
        .evaluate("bot-1")
        .tool("delete_file")
        .send()
        .await
        .unwrap();
    assert!(!d.allowed());
    assert_eq!(d.reason().unwrap().stage, "scope");
    c.halt(pb::HaltRequest {
        target: Some(pb::HaltTarget {
            scope: pb::HaltScope::Agent as i32,
            agent_id: "bot-2".into(),
            session_id: String::new(),
        }),
        mode: pb::HaltMode::HaltAll as i32,
        reason: "drill".into(),
    })
    .await
    .unwrap();
    let d = c.evaluate("bot-2").tool("read_file").send().await.unwrap();
    assert_eq!(d.reason().unwrap().stage, "halt");

    let bad = c.evaluate("").tool("read_file").send().await;
    assert!(bad.is_err(), "an empty agent id is invalid: {bad:?}");

    let (content_type, body) = server.scrape_metrics().await;
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let get = |series: &str| {
        sample(&body, series).unwrap_or_else(|| panic!("no series {series} in\n{body}"))
    };
    assert_eq!(
        get(r#"arbiter_decisions_total{outcome="allow",stage="none"}"#),
        3.0
    );
    assert_eq!(
        get(r#"arbiter_decisions_total{outcome="deny",stage="scope"}"#),
        1.0
    );
    assert_eq!(
        get(r#"arbiter_decisions_total{outcome="deny",stage="halt"}"#),
        1.0
    );
    assert_eq!(
        get(r#"arbiter_decisions_total{outcome="deny",stage="budget"}"#),
        0.0
    );
    assert_eq!(
        get(r#"arbiter_decision_duration_seconds_count{outcome="allow",stage="none"}"#),
        3.0
    );
    assert_eq!(
        get(r#"arbiter_decision_duration_seconds_bucket{outcome="allow",stage="none",le="+Inf"}"#),
        3.0
    );
    // Every decision, the halt and the policy load went through the audit writer.
    assert!(get("arbiter_audit_batch_entries_sum") >= 7.0, "{body}");
    assert!(get("arbiter_audit_commit_duration_seconds_count") >= 1.0);
    assert_eq!(get("arbiter_audit_commit_failures_total"), 0.0);
    assert!(get("arbiter_audit_head_seq") >= 7.0);
    assert_eq!(get("arbiter_halts_active"), 1.0);
    // The three allowed reads hold budget until they are recorded.
    assert_eq!(get("arbiter_reservations_open"), 3.0);
    assert_eq!(get("arbiter_approvals_pending"), 0.0);
    assert!(get("arbiter_db_pool_max_connections") >= 1.0);
    assert!(sample(&body, r#"arbiter_db_pool_connections{state="idle"}"#).is_some());
    assert_eq!(
        get(r#"arbiter_policy_reloads_total{result="accepted"}"#),
        0.0
    );
    // Per RPC, by method and gRPC status code.
    assert_eq!(
        get(
            r#"arbiter_grpc_requests_total{code="OK",method="arbiter.v1.DecisionService/Evaluate"}"#
        ),
        5.0
    );
    assert_eq!(
        get(
            r#"arbiter_grpc_requests_total{code="INVALID_ARGUMENT",method="arbiter.v1.DecisionService/Evaluate"}"#
        ),
        1.0
    );
    assert_eq!(
        get(r#"arbiter_grpc_requests_total{code="OK",method="arbiter.v1.ControlService/Halt"}"#),
        1.0
    );
    assert!(
        get(r#"arbiter_grpc_requests_total{code="OK",method="grpc.health.v1.Health/Check"}"#)
            >= 1.0
    );
    assert_eq!(
        get(
            r#"arbiter_grpc_request_duration_seconds_count{method="arbiter.v1.DecisionService/Evaluate"}"#
        ),
        6.0
    );
    // Agent ids never become labels: the number of series stays bounded.
    assert!(!body.contains("bot-1"), "{body}");
}

#[tokio::test]
async fn policy_reloads_are_counted_as_accepted_or_rejected() {
    let server = spawn_server(ServerOptions::new().policy(POLICY).fast_reload()).await;
    server.write_policy("version: 1\nagents: [{id: bot, tools: {allow: 7}}]\n");
    let reloads = |result: &'static str| {
        let server = &server;
        async move {
            let (_, body) = server.scrape_metrics().await;
            sample(
                &body,
                &format!(r#"arbiter_policy_reloads_total{{result="{result}"}}"#),
            )
            .unwrap_or(0.0)
        }
    };
    crate::harness::eventually("a rejected reload", Duration::from_secs(20), || async {
        (reloads("rejected").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(reloads("accepted").await, 0.0);
    server.write_policy(&POLICY.replace("read_*", "read_*\", \"list_*"));
    crate::harness::eventually("an accepted reload", Duration::from_secs(20), || async {
        (reloads("accepted").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(reloads("rejected").await, 1.0);
}
