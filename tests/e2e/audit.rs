//! The audit log through the API: one entry per Evaluate, filtered queries, live tail.

use std::time::Duration;

use arbiter_client::proto::{AuditEntry, AuditFilter, TailAuditRequest, TrustLevel};
use arbiter_client::ResultStream;
use futures::StreamExt;

use crate::harness::{audit_head, query_all, set_trust, spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
actions:
  - match: {tool: deploy}
    trust: L4
agents:
  - id: "*"
    tools: {allow: [read, deploy]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "1.00"}
"#;

#[tokio::test]
async fn every_evaluate_writes_exactly_one_audit_entry_whatever_the_outcome() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let mut head = audit_head(&client).await;

    let requests = [
        ("allow", client.evaluate("a").tool("read")),
        ("deny", client.evaluate("a").tool("deploy")), // trust
        (
            "deny",
            client.evaluate("a").tool("read").cost_micro_usd(2_000_000),
        ), // budget
        ("deny", client.evaluate("a").tool("write")),  // scope
        ("deny", client.evaluate("a").tool("read").budget("x")), // budget.not_found
        ("allow", client.evaluate("a").tool("read").explain(true)),
        ("deny", client.evaluate("a").tool("deploy").explain(true)),
    ];
    for (outcome, request) in requests {
        let d = request.send().await.unwrap();
        assert_eq!(d.audit_seq, head + 1, "{outcome}: {:?}", d.reasons);
        head += 1;
        assert_eq!(audit_head(&client).await, head, "exactly one entry");
        let entry = query_all(
            &client,
            AuditFilter {
                agent_id: "a".into(),
                ..Default::default()
            },
        )
        .await
        .pop()
        .unwrap();
        assert_eq!(entry.seq, d.audit_seq);
        assert_eq!(
            (entry.kind.as_str(), entry.outcome.as_str()),
            ("evaluate", outcome)
        );
        assert!(entry.canonical.contains(&d.decision_id));
        assert!(entry.canonical.contains(&d.policy_version));
    }
}

#[tokio::test]
async fn query_audit_filters_by_agent_kind_and_outcome() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    for _ in 0..2 {
        assert!(client
            .evaluate("a")
            .tool("read")
            .send()
            .await
            .unwrap()
            .allowed());
    }
    assert!(client
        .evaluate("a")
        .tool("deploy")
        .send()
        .await
        .unwrap()
        .is_denied());
    assert!(client
        .evaluate("b")
        .tool("read")
        .send()
        .await
        .unwrap()
        .allowed());
    set_trust(&client, "a", TrustLevel::L4ActReport, "").await;

    let query = |agent: &str, kinds: &[&str], outcome: &str| {
        query_all(
            &client,
            AuditFilter {
                agent_id: agent.into(),
                kinds: kinds.iter().map(|k| k.to_string()).collect(),
                outcome: outcome.into(),
                ..Default::default()
            },
        )
    };
    let summary = |entries: Vec<arbiter_client::proto::AuditEntry>| {
        entries
            .into_iter()
            .map(|e| format!("{}:{}:{}", e.agent_id, e.kind, e.outcome))
            .collect::<Vec<_>>()
    };

    assert_eq!(
        summary(query("a", &[], "").await),
        [
            "a:evaluate:allow",
            "a:evaluate:allow",
            "a:evaluate:deny",
            "a:trust.set:"
        ]
    );
    assert_eq!(summary(query("b", &[], "").await), ["b:evaluate:allow"]);
    assert_eq!(
        summary(query("", &["evaluate"], "allow").await),
        ["a:evaluate:allow", "a:evaluate:allow", "b:evaluate:allow"]
    );
    assert_eq!(
        summary(query("a", &["evaluate"], "deny").await),
        ["a:evaluate:deny"]
    );
    assert_eq!(
        summary(query("", &["trust.set", "policy.load"], "").await),
        [":policy.load:accepted", "a:trust.set:"]
    );
    assert!(query("c", &[], "").await.is_empty());

    // Entries come in sequence order, and pages join up without gaps or repeats.
    let all = query("", &[], "").await;
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    let page = client
        .query_audit(arbiter_client::proto::QueryAuditRequest {
            filter: None,
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap();
    let rest = client
        .query_audit(arbiter_client::proto::QueryAuditRequest {
            filter: None,
            page_size: 1000,
            page_token: page.next_page_token.clone(),
        })
        .await
        .unwrap();
    let paged: Vec<u64> = page
        .entries
        .iter()
        .chain(&rest.entries)
        .map(|e| e.seq)
        .collect();
    assert_eq!(paged, seqs);
}

#[tokio::test]
async fn tail_audit_streams_the_backlog_then_new_entries_in_order() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let mut expected = Vec::new();
    for _ in 0..3 {
        expected.push(
            client
                .evaluate("a")
                .tool("read")
                .send()
                .await
                .unwrap()
                .audit_seq,
        );
    }

    let mut tail = client
        .tail_audit(TailAuditRequest {
            filter: Some(AuditFilter {
                agent_id: "a".into(),
                ..Default::default()
            }),
            from_seq: expected[1],
        })
        .await
        .unwrap();
    assert_eq!(next(&mut tail).await.seq, expected[1], "starts at from_seq");
    assert_eq!(next(&mut tail).await.seq, expected[2]);

    // New entries: one for another agent (filtered out) between two for "a".
    let live_1 = client.evaluate("a").tool("deploy").send().await.unwrap();
    client.evaluate("b").tool("read").send().await.unwrap();
    let live_2 = client.evaluate("a").tool("read").send().await.unwrap();
    let e = next(&mut tail).await;
    assert_eq!((e.seq, e.outcome.as_str()), (live_1.audit_seq, "deny"));
    let e = next(&mut tail).await;
    assert_eq!((e.seq, e.agent_id.as_str()), (live_2.audit_seq, "a"));
}

async fn next(tail: &mut ResultStream<AuditEntry>) -> AuditEntry {
    tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("TailAudit sends the next entry in time")
        .expect("the stream stays open")
        .expect("a committed entry")
}
