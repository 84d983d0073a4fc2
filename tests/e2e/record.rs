//! Record: settling reservations with the actual cost, idempotently.

use arbiter_client::proto::AuditFilter;
use arbiter_client::ActionOutcome;
use tonic::Code;

use crate::harness::{amount, audit_head, query_all, spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: ["*"]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "10.00"}
"#;

#[tokio::test]
async fn record_settles_the_reservation_with_the_actual_cost() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let d = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(500_000)
        .send()
        .await
        .unwrap();
    assert!(d.allowed());
    let a = amount(&client, "a", "", "cap", "micro_usd").await;
    assert_eq!((a.spent, a.reserved), (0, 500_000));

    let r = client
        .record(&d.decision_id)
        .outcome(ActionOutcome::Success)
        .cost_micro_usd(300_000)
        .send()
        .await
        .unwrap();
    assert_eq!(r.actual.unwrap().micro_usd, 300_000);
    assert_eq!(r.reserved.unwrap().micro_usd, 500_000);
    assert!(
        !r.overspend && !r.duplicate && !r.reservation_expired,
        "{r:?}"
    );

    let a = amount(&client, "a", "", "cap", "micro_usd").await;
    assert_eq!((a.spent, a.reserved, a.remaining), (300_000, 0, 9_700_000));
    let calls = query_all(
        &client,
        AuditFilter {
            kinds: vec!["record".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].seq, r.audit_seq);
    assert_eq!(calls[0].outcome, "success");
}

#[tokio::test]
async fn recording_a_decision_twice_returns_the_first_answer_and_writes_one_entry() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let d = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(100)
        .send()
        .await
        .unwrap();
    let head = audit_head(&client).await;

    // Each send carries a fresh request_id: idempotency is per decision, not per request.
    let first = client
        .record(&d.decision_id)
        .cost_micro_usd(80)
        .send()
        .await
        .unwrap();
    let second = client
        .record(&d.decision_id)
        .cost_micro_usd(80)
        .send()
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.audit_seq, first.audit_seq);
    assert_eq!(second.actual, first.actual);
    assert_eq!(
        audit_head(&client).await,
        head + 1,
        "exactly one new audit entry"
    );
    assert_eq!(
        amount(&client, "a", "", "cap", "micro_usd").await.spent,
        80,
        "charged once"
    );
}

#[tokio::test]
async fn an_actual_cost_above_the_reservation_is_charged_in_full_and_flagged() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let d = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(100_000)
        .send()
        .await
        .unwrap();
    let r = client
        .record(&d.decision_id)
        .cost_micro_usd(250_000)
        .send()
        .await
        .unwrap();
    assert!(r.overspend, "{r:?}");
    assert_eq!(r.actual.unwrap().micro_usd, 250_000);

    let a = amount(&client, "a", "", "cap", "micro_usd").await;
    assert_eq!((a.spent, a.reserved), (250_000, 0));
    let entry = query_all(
        &client,
        AuditFilter {
            kinds: vec!["record".into()],
            ..Default::default()
        },
    )
    .await
    .pop()
    .unwrap();
    assert!(
        entry.canonical.contains("\"overspend\":true"),
        "{}",
        entry.canonical
    );
}

#[tokio::test]
async fn a_record_after_the_reservation_lapsed_still_charges_the_spend() {
    let server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .clock("2030-01-15T12:00:00Z"),
    )
    .await;
    let client = server.client();
    let d = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(400_000)
        .send()
        .await
        .unwrap();
    server.set_time("2030-01-15T12:05:00Z"); // the default reservation_ttl is 5m
    assert_eq!(
        amount(&client, "a", "", "cap", "micro_usd").await.reserved,
        0
    );

    let r = client
        .record(&d.decision_id)
        .cost_micro_usd(350_000)
        .send()
        .await
        .unwrap();
    assert!(r.reservation_expired, "{r:?}");
    assert!(!r.overspend, "{r:?}");
    let a = amount(&client, "a", "", "cap", "micro_usd").await;
    assert_eq!((a.spent, a.reserved), (350_000, 0));
}

#[tokio::test]
async fn recording_an_unknown_decision_is_not_found() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let head = audit_head(&client).await;
    let err = client
        .record("dec_does_not_exist")
        .cost_micro_usd(1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert_eq!(audit_head(&client).await, head);

    // A denied decision is not awaiting Record either.
    let denied = client
        .evaluate("a")
        .tool("t")
        .budget("nope")
        .send()
        .await
        .unwrap();
    assert!(denied.is_denied());
    let err = client.record(&denied.decision_id).send().await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
}

/// Issue 14, defect 7: Records racing for one decision all get the first Record's
/// result (never NOT_FOUND or ABORTED while it commits), whatever each reports, and the
/// spend is counted once; after the commit, and after a restart, retries answer it too.
#[tokio::test]
async fn concurrent_records_for_one_decision_all_answer_the_first_result() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let mut decisions = Vec::new();
    for i in 0..6 {
        let d = client
            .evaluate(format!("racer-{i}"))
            .tool("t")
            .cost_micro_usd(1_000)
            .send()
            .await
            .unwrap();
        assert!(d.allowed());
        decisions.push(d.decision_id);
    }
    let head = audit_head(&client).await;
    for (i, id) in decisions.iter().enumerate() {
        // Sixteen Records at once, each reporting something different: only the first
        // to commit counts, and every one answers what it recorded.
        let sends = (0..16u64).map(|k| {
            let c = client.clone();
            let id = id.clone();
            async move {
                let mut b = c.record(&id).cost_micro_usd(100 + k);
                if k % 2 == 1 {
                    b = b.outcome(ActionOutcome::Failure);
                }
                b.send().await
            }
        });
        let results: Vec<_> = futures::future::join_all(sends).await;
        let results: Vec<_> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("decision {i}: {e:?}")))
            .collect();
        assert_eq!(
            results.iter().filter(|r| !r.duplicate).count(),
            1,
            "decision {i}"
        );
        let first = results.iter().find(|r| !r.duplicate).unwrap();
        for r in &results {
            assert_eq!(
                (r.audit_seq, &r.actual),
                (first.audit_seq, &first.actual),
                "decision {i}"
            );
        }
        let spent = amount(&client, &format!("racer-{i}"), "", "cap", "micro_usd")
            .await
            .spent;
        assert_eq!(
            spent,
            first.actual.as_ref().unwrap().micro_usd,
            "decision {i}: charged once"
        );
    }
    assert_eq!(
        audit_head(&client).await,
        head + decisions.len() as u64,
        "one entry each"
    );
    // After a restart the stored replies answer, still without a new entry.
    server.restart().await;
    let client = server.client();
    let head = audit_head(&client).await;
    for id in &decisions {
        let r = client.record(id).cost_micro_usd(1).send().await.unwrap();
        assert!(r.duplicate);
    }
    assert_eq!(audit_head(&client).await, head);
}
