//! The pipeline as a whole: fixed stage order, the first failure decides and nothing
//! is reserved for a denial; `explain` reports every stage.

use arbiter_client::proto::AuditFilter;

use crate::harness::{amount, query_all, spawn_server, stages, ServerOptions};

const POLICY: &str = r#"
version: 1
defaults:
  trust_level: L1
actions:
  - match: {tool: wire_money}
    trust: L4
agents:
  - id: "*"
    tools: {allow: [wire_money, read_invoice]}
budgets:
  - {name: daily, scope: agent, period: lifetime, max_usd: "10.00"}
"#;

const ALL_STAGES: [&str; 6] = ["halt", "trust", "budget", "consent", "scope", "approval"];

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(s, c)| (s.to_string(), c.to_string()))
        .collect()
}

#[tokio::test]
async fn a_request_failing_trust_stops_at_trust_and_reserves_nothing() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();

    let d = client
        .evaluate("a")
        .tool("wire_money")
        .cost_micro_usd(5_000_000)
        .data("bank_account", Some("payout"))
        .send()
        .await
        .unwrap();
    assert!(d.is_denied());
    assert_eq!(
        stages(&d),
        pairs(&[("halt", "ok"), ("trust", "trust.insufficient")]),
        "later stages do not run"
    );
    assert_eq!(d.reservation_id, None);
    assert_eq!(d.reserved().map_or(0, |c| c.micro_usd), 0);

    let a = amount(&client, "a", "", "daily", "micro_usd").await;
    assert_eq!((a.spent, a.reserved, a.remaining), (0, 0, 10_000_000));

    let entries = query_all(
        &client,
        AuditFilter {
            agent_id: "a".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].seq, d.audit_seq);
    assert_eq!(entries[0].outcome, "deny");
    assert!(
        entries[0].canonical.contains("\"reservation\":null"),
        "{}",
        entries[0].canonical
    );
}

#[tokio::test]
async fn explain_reports_every_stage_in_order_and_the_first_failure_still_decides() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();

    // Fails trust and consent; budget and scope would pass.
    let d = client
        .evaluate("a")
        .tool("wire_money")
        .cost_micro_usd(5_000_000)
        .data("bank_account", Some("payout"))
        .explain(true)
        .send()
        .await
        .unwrap();
    assert!(d.is_denied());
    let names: Vec<&str> = d.reasons.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(names, ALL_STAGES, "{:?}", d.reasons);
    assert_eq!(
        stages(&d),
        pairs(&[
            ("halt", "ok"),
            ("trust", "trust.insufficient"),
            ("budget", "ok"),
            ("consent", "consent.missing"),
            ("scope", "ok"),
            ("approval", "ok"),
        ])
    );
    assert_eq!(
        d.reason().unwrap().stage,
        "trust",
        "the first failure decides"
    );
    assert_eq!(
        d.reservation_id, None,
        "a denial reserves nothing, even with explain"
    );
    let a = amount(&client, "a", "", "daily", "micro_usd").await;
    assert_eq!(a.reserved, 0);

    // An allowed request with explain lists every stage as passed and reserves.
    let d = client
        .evaluate("a")
        .tool("read_invoice")
        .cost_micro_usd(1_000)
        .explain(true)
        .send()
        .await
        .unwrap();
    assert!(d.allowed(), "{:?}", d.reasons);
    let names: Vec<&str> = d.reasons.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(names, ALL_STAGES);
    assert!(
        d.reasons.iter().all(|r| r.passed && r.code == "ok"),
        "{:?}",
        d.reasons
    );
    assert!(d.reservation_id.is_some());
    assert_eq!(
        amount(&client, "a", "", "daily", "micro_usd")
            .await
            .reserved,
        1_000
    );

    // Without explain, an allowed request also reports every stage it ran.
    let d = client
        .evaluate("a")
        .tool("read_invoice")
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = d.reasons.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(names, ALL_STAGES);
}
