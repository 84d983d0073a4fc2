//! Safe retries: a repeated Evaluate `request_id` replays the original answer.

use tonic::Code;

use crate::harness::{amount, audit_head, spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: ["*"]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "10.00"}
"#;

#[tokio::test]
async fn a_repeated_request_id_replays_the_decision_without_reserving_or_auditing_again() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let send = || {
        client
            .evaluate("a")
            .session("s")
            .tool("t")
            .cost_micro_usd(1_000)
            .request_id("retry-1")
            .send()
    };

    let first = send().await.unwrap();
    assert!(first.allowed());
    assert!(!first.replayed);
    let head = audit_head(&client).await;
    assert_eq!(head, first.audit_seq);

    let again = send().await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.decision_id, first.decision_id);
    assert_eq!(again.audit_seq, first.audit_seq);
    assert_eq!(again.reservation_id, first.reservation_id);
    assert_eq!(again.outcome, first.outcome);
    assert_eq!(audit_head(&client).await, head, "no second audit entry");
    let a = amount(&client, "a", "", "cap", "micro_usd").await;
    assert_eq!(a.reserved, 1_000, "no second reservation");

    // A replayed denial is replayed as a denial too.
    let deny = || {
        client
            .evaluate("a")
            .tool("t")
            .budget("missing")
            .request_id("retry-2")
            .send()
    };
    let first = deny().await.unwrap();
    let again = deny().await.unwrap();
    assert!(first.is_denied() && again.is_denied() && again.replayed);
    assert_eq!(again.decision_id, first.decision_id);
    assert_eq!(again.reasons, first.reasons);
}

#[tokio::test]
async fn a_request_id_reused_for_a_different_action_is_invalid_argument() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    client
        .evaluate("a")
        .tool("read")
        .request_id("reused")
        .send()
        .await
        .unwrap();
    let head = audit_head(&client).await;

    let err = client
        .evaluate("a")
        .tool("write")
        .request_id("reused")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(err.field(), Some("request_id"), "{err}");
    assert_eq!(audit_head(&client).await, head);

    let err = client
        .evaluate("b")
        .tool("read")
        .request_id("reused")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.field(),
        Some("request_id"),
        "another agent cannot replay it: {err}"
    );
}

#[tokio::test]
async fn a_retry_that_overtakes_its_original_gets_the_same_answer_and_one_audit_entry() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let start = audit_head(&client).await;
    for round in 0..20 {
        let rid = format!("race-{round}");
        let send = || {
            client
                .evaluate("a")
                .session("s")
                .tool("t")
                .cost_micro_usd(1)
                .request_id(rid.clone())
                .send()
        };
        let (x, y) = tokio::join!(send(), send());
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.decision_id, y.decision_id, "round {round}");
        assert_eq!(x.audit_seq, y.audit_seq, "round {round}");
        assert!(
            x.replayed != y.replayed,
            "exactly one of the two is the replay"
        );
    }
    assert_eq!(
        audit_head(&client).await,
        start + 20,
        "one entry per request id"
    );
    let a = amount(&client, "a", "", "cap", "micro_usd").await;
    assert_eq!(a.reserved, 20, "one reservation per request id");
}
