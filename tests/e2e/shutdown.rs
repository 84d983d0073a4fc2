//! Graceful shutdown: SIGTERM turns health NOT_SERVING, stops accepting, drains the
//! RPCs in flight (for at most `server.shutdown_grace_ms`), commits the last audit
//! batch under a signed checkpoint, and exits 0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_client::proto::AuditFilter;
use arbiter_client::Client;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::harness::{
    arbiter, audit_head, eventually, python, query_all, spawn_server, ServerOptions,
};

const POLICY: &str = r#"
version: 1
agents:
  - id: "load-*"
    tools: {allow: ["read"]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "1000.00"}
"#;

/// Fails instead of retrying, so each worker stops at its first unanswered request.
fn impatient(url: String) -> Client {
    Client::builder(url)
        .retries(0)
        .disable_circuit_breaker()
        .timeout(Duration::from_secs(10))
        .connect_lazy()
        .unwrap()
}

/// The next message of a server stream, `None` when it ended or broke.
async fn next<T>(s: &mut tonic::Streaming<T>) -> Option<T> {
    s.message().await.ok().flatten()
}

#[tokio::test]
async fn sigterm_under_load_keeps_every_acknowledged_decision_and_exits_zero() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY).mirror()).await;
    // (audit_seq, decision_id) of every answer a client received.
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let workers: Vec<_> = (0..24)
        .map(|w| {
            // One connection per worker: many requests in flight at once.
            let client = impatient(server.url());
            let acked = acked.clone();
            tokio::spawn(async move {
                // Bounded: the server stops long before this.
                for _ in 0..20_000 {
                    let sent = client
                        .evaluate(format!("load-{w}"))
                        .tool("read")
                        .cost_micro_usd(3)
                        .send()
                        .await;
                    match sent {
                        Ok(d) => {
                            assert!(d.allowed(), "{:?}", d.reasons);
                            acked.lock().unwrap().push((d.audit_seq, d.decision_id));
                        }
                        Err(_) => return,
                    }
                }
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

    server.sigterm();
    let status = server.wait_exit().await;
    for w in workers {
        w.await.expect("a worker ends once the server is gone");
    }
    assert!(
        status.success(),
        "SIGTERM under load must exit 0, got {status}\n{}",
        server.log_tail()
    );
    let acked = acked.lock().unwrap().clone();

    // Straight from the database the server left: the newest signed checkpoint
    // covers the whole log.
    let stdout = if crate::harness::on_postgres() {
        server.psql("SELECT (SELECT MAX(seq) FROM audit_entries) || ' ' || (SELECT MAX(size) FROM checkpoints)")
    } else {
        let db = server.db_path();
        let out = python(&[
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             head = c.execute('SELECT MAX(seq) FROM audit_entries').fetchone()[0]\n\
             size = c.execute('SELECT MAX(size) FROM checkpoints').fetchone()[0]\n\
             print(head, size)",
            db.to_str().unwrap(),
        ])
        .await;
        assert!(out.status.success(), "{out}");
        out.stdout
    };
    let (head, size) = stdout.trim().split_once(' ').expect("two numbers");
    assert_eq!(head, size, "the last checkpoint must cover the log head");
    let head: u64 = head.parse().unwrap();
    assert!(head >= acked.len() as u64);

    // The mirror was flushed: it ends at the same head.
    let mirror = std::fs::read_to_string(server.mirror.as_ref().unwrap()).unwrap();
    assert_eq!(mirror.lines().count() as u64, head, "mirror lines");

    server.start().await;
    let client = server.client();
    let entries: BTreeMap<u64, String> = query_all(&client, AuditFilter::default())
        .await
        .into_iter()
        .map(|e| (e.seq, e.canonical))
        .collect();
    assert_eq!(
        entries.keys().copied().collect::<Vec<_>>(),
        (1..=audit_head(&client).await).collect::<Vec<_>>(),
        "the log is gapless"
    );
    let lost: Vec<_> = acked
        .iter()
        .filter(|(seq, id)| !entries.get(seq).is_some_and(|c| c.contains(id.as_str())))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged decisions are missing after SIGTERM: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let out = arbiter(&["audit", "verify", "--addr", &server.url()]).await;
    assert_eq!(out.code(), Some(0), "{out}");
}

#[tokio::test]
async fn shutdown_reports_not_serving_first_and_cuts_open_streams_after_the_grace_period() {
    let mut server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .env("ARBITER_SERVER__SHUTDOWN_GRACE_MS", "500"),
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    // An open stream keeps its connection busy, so the drain has to wait for it.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next(&mut watch).await.map(|r| r.status),
        Some(ServingStatus::Serving as i32)
    );

    server.sigterm();
    // Watch may repeat SERVING (the health monitor re-sets it after its first database
    // check); the first different status must be NOT_SERVING.
    let mut status = next(&mut watch).await.map(|r| r.status);
    while status == Some(ServingStatus::Serving as i32) {
        status = next(&mut watch).await.map(|r| r.status);
    }
    assert_eq!(
        status,
        Some(ServingStatus::NotServing as i32),
        "health must turn NOT_SERVING as soon as shutdown starts\n{}",
        server.log_tail()
    );
    // The watch stays open; the grace period ends it and the server still exits 0.
    let status = server.wait_exit().await;
    assert!(status.success(), "exit {status}\n{}", server.log_tail());
    assert_eq!(next(&mut watch).await.map(|r| r.status), None);
    assert!(
        server.log().contains("grace period over"),
        "{}",
        server.log_tail()
    );
}
