//! Server streams (issue 14, defects 8 and 9): an open stream stays bound to the
//! principal that opened it and ends, with UNAUTHENTICATED, once that principal is
//! revoked, here or on another replica; TailAudit follows the one shared log, whichever
//! replica committed an entry, in sequence order and without gaps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arbiter_client::{proto as pb, Client, DecisionOutcome, Error};
use futures::StreamExt;
use tonic::Code;

use crate::harness::{
    audit_head, create_database, create_principal, eventually, keyed, postgres_admin_url,
    skip_unless_postgres, spawn_server, with_database, ServerOptions, TestServer,
};

const POLICY: &str = r#"
version: 1
defaults: {approval_ttl: 1h}
actions:
  - match: {tool: "refund_*"}
    approval: always
agents:
  - id: "*"
    tools: {allow: ["*"]}
"#;

type Stream<T> = arbiter_client::ResultStream<T>;

/// `n` servers on one fresh database of the suite's cluster, sharing one key ring.
pub(crate) async fn replicas(n: usize, policy: &str) -> (Vec<TestServer>, tempfile::TempDir) {
    let url = with_database(&postgres_admin_url(), &create_database());
    let keys = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for _ in 0..n {
        // One at a time: the first writes the keys the others read.
        let opts = ServerOptions::new()
            .policy(policy)
            .database_url(&url)
            .data_dir(keys.path());
        servers.push(spawn_server(opts).await);
    }
    (servers, keys)
}

/// Waits until `key` authenticates on every server (a principal created on one replica
/// reaches the others through the control refresh).
pub(crate) async fn accepted_everywhere(servers: &[TestServer], key: &str) {
    for s in servers {
        let c = keyed(s, key);
        eventually(
            "the key works on every replica",
            Duration::from_secs(5),
            || {
                let c = c.clone();
                async move { c.ping().await.ok() }
            },
        )
        .await;
    }
}

/// Reads `stream` until it fails, which it must within `deadline`: what it delivered,
/// the error, and how long it took.
async fn until_it_ends<T: std::fmt::Debug>(
    stream: &mut Stream<T>,
    deadline: Duration,
) -> (Vec<T>, Error, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(item))) => got.push(item),
            Ok(Some(Err(e))) => return (got, e, started.elapsed()),
            Ok(None) => panic!("the stream ended without a status after {got:?}"),
            Err(_) => panic!("the stream was still open after {deadline:?}: {got:?}"),
        }
    }
}

async fn tail(c: &Client, from_seq: u64) -> Stream<pb::AuditEntry> {
    c.tail_audit(pb::TailAuditRequest {
        filter: None,
        from_seq,
    })
    .await
    .expect("TailAudit opens")
}

async fn watch(c: &Client, id: &str) -> Stream<pb::Approval> {
    let mut w = c
        .watch_approval(pb::WatchApprovalRequest {
            approval_id: id.into(),
        })
        .await
        .expect("WatchApproval opens");
    let first = w.next().await.unwrap().unwrap();
    assert_eq!(first.state, pb::ApprovalState::Pending as i32);
    w
}

async fn pending(bot: &Client, agent: &str) -> String {
    let d = bot
        .evaluate(agent)
        .tool("refund_order")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.outcome,
        DecisionOutcome::PendingApproval,
        "{:?}",
        d.reasons
    );
    d.approval_id.unwrap()
}

async fn revoke(admin: &Client, name: &str) {
    admin
        .revoke_principal(pb::RevokePrincipalRequest { name: name.into() })
        .await
        .expect("RevokePrincipal");
}

fn grant(id: &str) -> pb::ApproveRequest {
    pb::ApproveRequest {
        approval_id: id.into(),
        grant: true,
        reason: "after the revocation".into(),
    }
}

/// The principals of the stream tests, created through `bootstrap` (development mode).
struct Cast {
    admin: String,
    alice: String,
    bob: String,
    audrey: String,
    bot: String,
}

async fn cast(bootstrap: &Client, server: &TestServer) -> Cast {
    let admin = create_principal(bootstrap, "root", &[pb::Role::Admin], &[]).await;
    let a = keyed(server, &admin);
    Cast {
        alice: create_principal(&a, "alice", &[pb::Role::Operator], &[]).await,
        bob: create_principal(&a, "bob", &[pb::Role::Operator], &[]).await,
        audrey: create_principal(&a, "audrey", &[pb::Role::Auditor], &[]).await,
        bot: create_principal(&a, "bot-runtime", &[pb::Role::Agent], &["bot-*"]).await,
        admin,
    }
}

#[tokio::test]
async fn a_revoked_principal_s_open_streams_end_unauthenticated_and_deliver_nothing_after() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let keys = cast(&server.client(), &server).await;
    let (admin, bob, bot) = (
        keyed(&server, &keys.admin),
        keyed(&server, &keys.bob),
        keyed(&server, &keys.bot),
    );
    let id = pending(&bot, "bot-1").await;
    let mut watching = watch(&keyed(&server, &keys.alice), &id).await;
    let mut tailing = tail(&keyed(&server, &keys.audrey), 0).await;
    // The tail is live before the revocation.
    let d = bot.evaluate("bot-1").tool("read").send().await.unwrap();
    let first = tailing.next().await.unwrap().unwrap();
    assert_eq!(first.seq, d.audit_seq);

    revoke(&admin, "audrey").await;
    revoke(&admin, "alice").await;
    let revoked_at = audit_head(&admin).await;
    // What happens after the revocations never reaches the revoked principals.
    bob.approve(grant(&id)).await.unwrap();
    for _ in 0..5 {
        bot.evaluate("bot-1").tool("read").send().await.unwrap();
    }
    let (entries, end, _) = until_it_ends(&mut tailing, Duration::from_secs(5)).await;
    assert_eq!(end.code(), Code::Unauthenticated, "{end}");
    assert!(end.to_string().contains("revoked"), "{end}");
    assert!(
        entries.iter().all(|e| e.seq <= revoked_at),
        "delivered after the revocation: {:?}",
        entries.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    let (approvals, end, _) = until_it_ends(&mut watching, Duration::from_secs(5)).await;
    assert_eq!(end.code(), Code::Unauthenticated, "{end}");
    assert!(
        approvals.is_empty(),
        "the grant reached alice: {approvals:?}"
    );
    assert!(tailing.next().await.is_none() && watching.next().await.is_none());

    // Streams of principals that keep their rights go on.
    let mut still = watch(&keyed(&server, &keys.bob), &pending(&bot, "bot-2").await).await;
    let mut admin_tail = tail(&admin, 0).await;
    revoke(&admin, "bot-runtime").await;
    let e = admin_tail.next().await.unwrap().unwrap();
    assert_eq!(e.kind, "principal.revoke");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), still.next())
            .await
            .is_err(),
        "bob's watch is still open"
    );
}

#[tokio::test]
async fn a_development_mode_tail_ends_when_the_first_principal_is_created() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let dev = server.client();
    let mut tailing = tail(&dev, 0).await;
    create_principal(&dev, "root", &[pb::Role::Admin], &[]).await;
    let (entries, end, _) = until_it_ends(&mut tailing, Duration::from_secs(5)).await;
    assert_eq!(end.code(), Code::Unauthenticated, "{end}");
    assert!(entries.len() <= 1, "{entries:?}");
}

/// Sends `n` decisions from `workers` concurrent callers; their audit seqs.
async fn decisions(c: &Client, prefix: &str, n: usize, workers: usize) -> Vec<u64> {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let c = c.clone();
        let agent = format!("{prefix}-{w}");
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for _ in 0..n / workers {
                let d = c.evaluate(&agent).tool("read").send().await.unwrap();
                seqs.push(d.audit_seq);
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs
}

/// Reads `count` entries and checks they are consecutive from `from`.
async fn consecutive(stream: &mut Stream<pb::AuditEntry>, from: u64, count: usize) {
    for i in 0..count as u64 {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the tail keeps delivering")
            .expect("the tail is open")
            .expect("no error");
        assert_eq!(e.seq, from + i, "the tail skipped or reordered");
    }
}

#[tokio::test]
async fn a_tail_that_is_not_read_for_a_while_loses_nothing() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    let start = audit_head(&c).await + 1;
    let mut tailing = tail(&c, 0).await;
    // Thousands of entries while nobody reads: the tail waits on its reader (its buffers
    // and the connection's fill up) and then delivers every one, nothing skipped.
    let seqs = decisions(&c, "burst", 4400, 16).await;
    assert_eq!(seqs.len(), 4400);
    let head = audit_head(&c).await;
    consecutive(&mut tailing, start, (head - start + 1) as usize).await;
}

#[tokio::test]
async fn a_tail_on_one_replica_sees_what_every_replica_commits_in_order_without_gaps() {
    if skip_unless_postgres(
        "streams::a_tail_on_one_replica_sees_what_every_replica_commits_in_order_without_gaps",
    ) {
        return;
    }
    let (servers, _keys) = replicas(3, POLICY).await;
    let clients: Vec<Client> = servers.iter().map(TestServer::client).collect();
    let start = audit_head(&clients[1]).await + 1;
    let mut tailing = tail(&clients[1], 0).await;
    // Ten on A and ten on C, at the same time; B commits nothing itself.
    let (on_a, on_c) = tokio::join!(
        decisions(&clients[0], "on-a", 10, 2),
        decisions(&clients[2], "on-c", 10, 2)
    );
    let acked = Instant::now();
    let head = on_a.iter().chain(&on_c).copied().max().unwrap();
    let mut delivered = BTreeMap::new();
    let mut last = start - 1;
    while last < head {
        let e = tokio::time::timeout(Duration::from_secs(5), tailing.next())
            .await
            .expect("entries from other replicas arrive")
            .unwrap()
            .unwrap();
        assert_eq!(e.seq, last + 1, "in order, no gaps");
        last = e.seq;
        delivered.insert(e.seq, acked.elapsed());
    }
    for seq in on_a.iter().chain(&on_c) {
        assert!(delivered.contains_key(seq), "entry {seq} never arrived");
    }
    eprintln!(
        "TailAudit on B: the last of 20 entries committed on A and C arrived {:?} after the last acknowledgement",
        delivered.values().max().unwrap()
    );
    assert!(
        delivered.values().all(|d| *d <= crate::replicas::BOUND),
        "{delivered:?}"
    );
}

#[tokio::test]
async fn a_revocation_on_one_replica_ends_the_principal_s_streams_on_every_replica() {
    if skip_unless_postgres(
        "streams::a_revocation_on_one_replica_ends_the_principal_s_streams_on_every_replica",
    ) {
        return;
    }
    let (servers, _keys) = replicas(3, POLICY).await;
    let keys = cast(&servers[0].client(), &servers[0]).await;
    for k in [&keys.admin, &keys.alice, &keys.bob, &keys.audrey, &keys.bot] {
        accepted_everywhere(&servers, k).await;
    }
    let admin = keyed(&servers[0], &keys.admin);
    let id = pending(&keyed(&servers[0], &keys.bot), "bot-1").await;
    let mut tails = Vec::new();
    let mut watches = Vec::new();
    for s in &servers[1..] {
        tails.push(tail(&keyed(s, &keys.audrey), 0).await);
        let alice = keyed(s, &keys.alice);
        let visible = eventually(
            "the approval on every replica",
            Duration::from_secs(5),
            || {
                let (alice, id) = (alice.clone(), id.clone());
                async move {
                    alice
                        .get_approval(pb::GetApprovalRequest { approval_id: id })
                        .await
                        .ok()
                }
            },
        )
        .await;
        assert!(visible.approval.is_some());
        watches.push(watch(&alice, &id).await);
    }
    revoke(&admin, "audrey").await;
    revoke(&admin, "alice").await;
    let revoked = Instant::now();
    // Granted on A after both revocations: never delivered to alice on B or C.
    keyed(&servers[0], &keys.bob)
        .approve(grant(&id))
        .await
        .unwrap();
    let mut ended = Vec::new();
    for t in &mut tails {
        let (_, end, _) = until_it_ends(t, Duration::from_secs(5)).await;
        assert_eq!(end.code(), Code::Unauthenticated, "{end}");
        ended.push(revoked.elapsed());
    }
    for w in &mut watches {
        let (approvals, end, _) = until_it_ends(w, Duration::from_secs(5)).await;
        assert_eq!(end.code(), Code::Unauthenticated, "{end}");
        assert!(
            approvals.is_empty(),
            "the grant reached alice: {approvals:?}"
        );
        ended.push(revoked.elapsed());
    }
    eprintln!(
        "streams of principals revoked on A ended on B and C within {ended:?} of the revocation"
    );
    assert!(
        ended.iter().all(|d| *d <= crate::replicas::BOUND),
        "{ended:?}"
    );
}
