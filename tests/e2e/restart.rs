//! Durability: state and the audit chain survive a graceful restart, and every
//! decision a client saw acknowledged survives `kill -9`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_client::proto::{AuditFilter, ListConsentsRequest, ListTrustRequest, TrustLevel};
use arbiter_client::{ActionOutcome, Client};

use crate::harness::{
    amount, arbiter, audit_head, budgets, code, eventually, grant_consent, query_all, set_trust,
    spawn_server, ServerOptions, TestServer,
};

const POLICY: &str = r#"
version: 1
defaults:
  reservation_ttl: 1h
  consent: deny
actions:
  - match: {tool: deploy}
    trust: L4
  - match: {tool: email}
    trust: L2
agents:
  - id: "*"
    tools: {allow: [deploy, email, read]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "10.00"}
  - {name: daily, scope: global, period: day, max_usd: "1000000.00"}
"#;

const T0: &str = "2030-01-15T12:00:00Z";

async fn verify_with_cli(server: &TestServer) {
    let out = arbiter(&["audit", "verify", "--addr", &server.url()]).await;
    assert_eq!(out.code(), Some(0), "arbiter audit verify:\n{out}");
    assert!(out.stdout.starts_with("OK:"), "{out}");
}

#[tokio::test]
async fn trust_consent_spend_and_open_reservations_survive_a_restart() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY).clock(T0)).await;
    let client = server.client();
    set_trust(&client, "a", TrustLevel::L4ActReport, "").await;
    set_trust(&client, "a", TrustLevel::L1Monitor, "email").await;
    grant_consent(&client, "a", "user_email", "", None).await;
    let settled = client
        .evaluate("a")
        .tool("read")
        .cost_micro_usd(300_000)
        .send()
        .await
        .unwrap();
    let first_record = client
        .record(&settled.decision_id)
        .cost_micro_usd(250_000)
        .send()
        .await
        .unwrap();
    let open = client
        .evaluate("a")
        .tool("read")
        .cost_micro_usd(400_000)
        .request_id("before-restart")
        .send()
        .await
        .unwrap();
    assert!(open.allowed());

    let budgets_before = budgets(&client, "a", "").await;
    let trust_before = client
        .list_trust(ListTrustRequest::default())
        .await
        .unwrap();
    let consents_before = client
        .list_consents(ListConsentsRequest::default())
        .await
        .unwrap();
    let head_before = audit_head(&client).await;
    assert_eq!(
        amount(&client, "a", "", "cap", "micro_usd").await.reserved,
        400_000
    );

    server.restart().await;
    let client = server.client();

    assert_eq!(budgets(&client, "a", "").await, budgets_before);
    assert_eq!(
        client
            .list_trust(ListTrustRequest::default())
            .await
            .unwrap(),
        trust_before
    );
    assert_eq!(
        client
            .list_consents(ListConsentsRequest::default())
            .await
            .unwrap(),
        consents_before
    );
    assert!(audit_head(&client).await > head_before, "the log continues");
    verify_with_cli(&server).await;

    // The state is live, not just listed.
    let d = client.evaluate("a").tool("deploy").send().await.unwrap();
    assert!(d.allowed(), "trust L4 survived: {:?}", d.reasons);
    let d = client
        .evaluate("a")
        .tool("email")
        .data("user_email", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(code(&d), "trust.insufficient", "the scoped L1 survived");
    set_trust(&client, "a", TrustLevel::L4ActReport, "email").await;
    let d = client
        .evaluate("a")
        .tool("email")
        .data("user_email", Some("x"))
        .send()
        .await
        .unwrap();
    assert!(d.allowed(), "consent survived: {:?}", d.reasons);

    // A retry of a request answered before the restart is still a replay.
    let replay = client
        .evaluate("a")
        .tool("read")
        .cost_micro_usd(400_000)
        .request_id("before-restart")
        .send()
        .await
        .unwrap();
    assert!(replay.replayed);
    // The answer is rebuilt from the decision's audit entry (no copy is stored), so
    // every field must come back as first sent.
    let mut first = open.raw.clone();
    first.replayed = true;
    assert_eq!(replay.raw, first);

    // The reservation taken before the restart can still be settled.
    let r = client
        .record(&open.decision_id)
        .outcome(ActionOutcome::Success)
        .cost_micro_usd(100_000)
        .send()
        .await
        .unwrap();
    assert_eq!(r.reserved.unwrap().micro_usd, 400_000);
    assert!(!r.reservation_expired);
    let a = amount(&client, "a", "", "cap", "micro_usd").await;
    assert_eq!((a.spent, a.reserved), (350_000, 0));
    // Recording the pre-restart decision that was already recorded is a duplicate.
    let again = client.record(&settled.decision_id).send().await.unwrap();
    assert!(again.duplicate);
    let mut first = first_record;
    first.duplicate = true;
    assert_eq!(again, first, "the Record's answer rebuilt from its entry");
}

/// A client that gives up at once: during the burst, a dead server must show as an error.
fn impatient(server: &TestServer) -> Client {
    Client::builder(server.url())
        .retries(0)
        .disable_circuit_breaker()
        .timeout(Duration::from_secs(5))
        .connect_lazy()
        .unwrap()
}

/// One burst request: worker `w`'s `n`-th Evaluate, identified by its request id.
fn burst_request(client: &Client, w: usize, n: usize) -> arbiter_client::EvaluateBuilder {
    client
        .evaluate(format!("burst-{w}"))
        .tool("read")
        .cost_micro_usd(BURST_COST)
        .request_id(format!("burst-{w}-{n}"))
}

const BURST_COST: u64 = 7;

/// A burst request the client saw answered.
#[derive(Debug, Clone)]
struct Acked {
    worker: usize,
    n: usize,
    decision_id: String,
    audit_seq: u64,
}

#[tokio::test]
async fn every_acknowledged_decision_survives_kill_9_during_a_burst() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY).clock(T0)).await;
    let client = impatient(&server);
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();

    let workers: Vec<_> = (0..16)
        .map(|w| {
            let client = client.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    match burst_request(&client, w, n).send().await {
                        Ok(d) => {
                            assert!(d.allowed(), "{:?}", d.reasons);
                            acked.lock().unwrap().push(Acked {
                                worker: w,
                                n,
                                decision_id: d.decision_id,
                                audit_seq: d.audit_seq,
                            });
                        }
                        // The request that was in flight when the server died.
                        Err(_) => return (w, n),
                    }
                }
                unreachable!()
            })
        })
        .collect();

    eventually(
        "300 acknowledged decisions",
        Duration::from_secs(60),
        || {
            let n = acked.lock().unwrap().len();
            async move { (n >= 300).then_some(()) }
        },
    )
    .await;
    server.kill9();
    let mut unanswered = Vec::new();
    for w in workers {
        unanswered.push(w.await.expect("worker ends when the server is gone"));
    }
    let acked = acked.lock().unwrap().clone();

    server.start().await;
    let client = server.client();
    let entries: BTreeMap<u64, String> = query_all(&client, AuditFilter::default())
        .await
        .into_iter()
        .map(|e| (e.seq, e.canonical))
        .collect();
    let head = audit_head(&client).await;
    assert_eq!(
        entries.keys().copied().collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>(),
        "the log is gapless"
    );
    let lost: Vec<_> = acked
        .iter()
        .filter(|a| {
            !entries
                .get(&a.audit_seq)
                .is_some_and(|c| c.contains(a.decision_id.as_str()))
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged decisions are missing or changed after kill -9: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    verify_with_cli(&server).await;

    // A client retrying after the crash gets the original answer for what was
    // acknowledged, and exactly one decision for what was in flight.
    for a in acked.iter().rev().take(16) {
        let replay = burst_request(&client, a.worker, a.n).send().await.unwrap();
        assert!(replay.replayed, "{a:?}");
        assert_eq!(
            (&replay.decision_id, replay.audit_seq),
            (&a.decision_id, a.audit_seq)
        );
    }
    assert_eq!(audit_head(&client).await, head, "replays write nothing");
    for (w, n) in &unanswered {
        let retry = burst_request(&client, *w, *n).send().await.unwrap();
        assert!(retry.allowed(), "burst-{w}-{n}: {:?}", retry.reasons);
    }
    let entries = query_all(&client, AuditFilter::default()).await;
    for (w, n) in &unanswered {
        let needle = format!("\"request_id\":\"burst-{w}-{n}\"");
        let count = entries
            .iter()
            .filter(|e| e.canonical.contains(&needle))
            .count();
        assert_eq!(count, 1, "burst-{w}-{n} was decided {count} times");
    }

    // Reservations were committed with their entries: the reserved total is exactly
    // what the logged allows reserved, acknowledged or not.
    let allows = entries
        .iter()
        .filter(|e| e.kind == "evaluate" && e.outcome == "allow")
        .count() as i64;
    assert_eq!(
        allows,
        (acked.len() + unanswered.len()) as i64,
        "one allow per request"
    );
    let daily = amount(&client, "burst-0", "", "daily", "micro_usd").await;
    assert_eq!(daily.reserved, allows * BURST_COST as i64);
}
