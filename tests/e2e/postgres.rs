//! PostgreSQL only: what the embedded backend cannot show. An outage of the database
//! (stopped with `pg_ctl -m immediate` mid-commit under load) fails closed and heals
//! without a restart. (On SQLite these tests report a skip.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_client::proto::AuditFilter;
use arbiter_client::{Client, DecisionOutcome};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::harness::{
    arbiter, audit_head, eventually, query_all, skip_unless_postgres, spawn_server, PgCluster,
    ServerOptions, TestServer,
};

const POLICY: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: [read]}
"#;

fn impatient(server: &TestServer) -> Client {
    Client::builder(server.url())
        .retries(0)
        .disable_circuit_breaker()
        .timeout(Duration::from_secs(5))
        .connect_lazy()
        .unwrap()
}

async fn health(server: &TestServer) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

#[derive(Debug, Clone)]
struct Acked {
    decision_id: String,
    audit_seq: u64,
}

/// Every Evaluate reserves twice: on the agent's own counter and on one counter all
/// replicas share. Neither cap is ever reached; they keep the database's budget
/// admission (and its reserved counters) on the path of every decision.
const RESERVING: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: [read]}
budgets:
  - {name: per-agent, scope: agent, period: lifetime, max_calls: 1000000}
  - {name: fleet, scope: global, period: lifetime, max_calls: 1000000000}
"#;

/// Runs one SQL statement as the superuser of the cluster at `url` (a test's own
/// [`PgCluster`], which `crate::harness::psql` does not reach).
fn psql_at(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What the load on one replica saw.
#[derive(Default)]
struct ReplicaLoad {
    /// Decisions answered (any outcome).
    answered: AtomicUsize,
    /// ALLOWs answered for requests sent after the database came back.
    allowed_after: AtomicUsize,
    /// Requests sent while the database was down that got no decision.
    refused_while_down: AtomicUsize,
    /// Requests sent and answered ALLOW while the database was down (must stay empty).
    allowed_while_down: Mutex<Vec<String>>,
}

#[tokio::test]
async fn three_replicas_fail_closed_through_an_outage_and_recover() {
    if skip_unless_postgres("postgres::three_replicas_fail_closed_through_an_outage_and_recover") {
        return;
    }
    const REPLICAS: usize = 3;
    const WORKERS: usize = 6;
    let cluster = PgCluster::start();
    let url = cluster.create_database("arbiter");
    let (servers, keys) = replicas_on(&url, REPLICAS, RESERVING).await;
    let pids: Vec<u32> = servers.iter().map(TestServer::pid).collect();

    // `down` is set once the database is stopped and cleared just before it starts
    // again, `recovered` once every replica reports SERVING again.
    let stop = Arc::new(AtomicBool::new(false));
    let down = Arc::new(AtomicBool::new(false));
    let recovered = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let loads: Arc<Vec<ReplicaLoad>> =
        Arc::new((0..REPLICAS).map(|_| ReplicaLoad::default()).collect());
    let mut workers = Vec::new();
    for (r, server) in servers.iter().enumerate() {
        for w in 0..WORKERS {
            let client = impatient(server);
            let (stop, down, recovered) = (stop.clone(), down.clone(), recovered.clone());
            let (acked, loads) = (acked.clone(), loads.clone());
            workers.push(tokio::spawn(async move {
                let load = &loads[r];
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let sent_while_down = down.load(Ordering::SeqCst);
                    let sent_after = recovered.load(Ordering::SeqCst);
                    let answer = client
                        .evaluate(format!("agent-{r}-{w}"))
                        .tool("read")
                        .request_id(format!("r{r}-w{w}-n{n}"))
                        .send()
                        .await;
                    let d = match answer {
                        Ok(d) => d,
                        Err(_) => {
                            if sent_while_down {
                                load.refused_while_down.fetch_add(1, Ordering::SeqCst);
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let allowed = d.outcome == DecisionOutcome::Allow;
                    // Sent and answered while the database was down. (A request that
                    // waits out the outage may be allowed once it is back: its entry is
                    // then in the log, checked below.)
                    if allowed && sent_while_down && down.load(Ordering::SeqCst) {
                        load.allowed_while_down
                            .lock()
                            .unwrap()
                            .push(d.decision_id.clone());
                    }
                    assert!(
                        !allowed || d.reservation_id.is_some(),
                        "an ALLOW without a reservation: {d:?}"
                    );
                    load.answered.fetch_add(1, Ordering::SeqCst);
                    if allowed && sent_after {
                        load.allowed_after.fetch_add(1, Ordering::SeqCst);
                    }
                    acked.lock().unwrap().push(Acked {
                        decision_id: d.decision_id.clone(),
                        audit_seq: d.audit_seq,
                    });
                    // Every other allowed decision is recorded, so settling (which takes
                    // amounts off the reserved counters) runs through the outage too; the
                    // rest stay open and keep their reservations.
                    if allowed && n % 2 == 0 {
                        if let Ok(rec) = client
                            .record(&d.decision_id)
                            .request_id(format!("r{r}-w{w}-n{n}-record"))
                            .send()
                            .await
                        {
                            acked.lock().unwrap().push(Acked {
                                decision_id: d.decision_id,
                                audit_seq: rec.audit_seq,
                            });
                        }
                    }
                }
            }));
        }
    }

    eventually(
        "30 decisions on every replica before the outage",
        Duration::from_secs(60),
        || {
            let ok = loads
                .iter()
                .all(|l| l.answered.load(Ordering::SeqCst) >= 30);
            async move { ok.then_some(()) }
        },
    )
    .await;

    // `pg_ctl -m immediate` with the load running: backends die mid-commit, nothing is
    // checkpointed, and the restart below runs crash recovery. A commit cut this way
    // either landed or not; its caller got no answer either way.
    cluster.crash();
    down.store(true, Ordering::SeqCst);
    for (r, server) in servers.iter().enumerate() {
        eventually(
            &format!("replica {r}: health NOT_SERVING"),
            Duration::from_secs(10),
            || async {
                (health(server).await != Some(ServingStatus::Serving as i32)).then_some(())
            },
        )
        .await;
    }
    eventually(
        "requests refused on every replica during the outage",
        Duration::from_secs(20),
        || {
            let ok = loads
                .iter()
                .all(|l| l.refused_while_down.load(Ordering::SeqCst) >= WORKERS);
            async move { ok.then_some(()) }
        },
    )
    .await;
    for (r, server) in servers.iter().enumerate() {
        let probe = impatient(server)
            .evaluate("probe")
            .tool("read")
            .send()
            .await;
        assert!(
            probe
                .as_ref()
                .map_or(true, |d| d.outcome != DecisionOutcome::Allow),
            "replica {r}: an Evaluate during the outage was allowed: {probe:?}"
        );
    }

    down.store(false, Ordering::SeqCst);
    cluster.resume();
    for (r, server) in servers.iter().enumerate() {
        eventually(
            &format!("replica {r}: health SERVING again"),
            Duration::from_secs(20),
            || async {
                (health(server).await == Some(ServingStatus::Serving as i32)).then_some(())
            },
        )
        .await;
    }
    recovered.store(true, Ordering::SeqCst);
    eventually(
        "50 allowed decisions on every replica after the outage",
        Duration::from_secs(30),
        || {
            let ok = loads
                .iter()
                .all(|l| l.allowed_after.load(Ordering::SeqCst) >= 50);
            async move { ok.then_some(()) }
        },
    )
    .await;

    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    // Cross-replica control changes work again (the LISTEN connection came back, or
    // the once-a-second re-check covers for it): a halt on each replica in turn stops
    // the agent on the other two within a second. Measured without the load, which on
    // a small machine makes a single Evaluate take a few hundred milliseconds and would
    // be counted as propagation delay.
    let clients: Vec<Client> = servers.iter().map(TestServer::client).collect();
    let mut delays = Vec::new();
    for (a, origin) in clients.iter().enumerate() {
        use arbiter_client::proto as pb;
        let agent = format!("halted-after-outage-{a}");
        until(origin, &agent, true).await;
        origin
            .halt(pb::HaltRequest {
                target: halt_target(&agent),
                mode: pb::HaltMode::HaltAll as i32,
                reason: "after the outage".into(),
            })
            .await
            .unwrap();
        for (b, other) in clients.iter().enumerate() {
            if b != a {
                let took = until(other, &agent, false).await;
                assert!(
                    took <= Duration::from_secs(1),
                    "a halt on replica {a} reached replica {b} after {took:?}"
                );
                delays.push(took);
            }
        }
    }

    let now: Vec<u32> = servers.iter().map(TestServer::pid).collect();
    assert_eq!(now, pids, "every replica recovered without a restart");
    for (r, load) in loads.iter().enumerate() {
        let allowed = load.allowed_while_down.lock().unwrap();
        assert!(
            allowed.is_empty(),
            "replica {r}: {} requests sent while the database was down were allowed: {allowed:?}",
            allowed.len()
        );
    }

    let acked = acked.lock().unwrap().clone();
    assert_log_holds_and_verifies(&servers, &keys, &acked).await;

    // The reserved amount of every budget counter is exactly what its open reservations
    // hold, whatever was cut by the outage. (An open reservation past its expiry still
    // counts until the next admission step expires it, under the same lock, so the sum
    // is over `settled = 0`.)
    let mismatches = psql_at(
        &url,
        "WITH held AS ( \
           SELECT k->>'budget' AS budget, k->>'scope_key' AS scope_key, \
                  (k->>'window_start_ms')::BIGINT AS window_start_ms, \
                  SUM(r.micro_usd) AS micro_usd, SUM(r.tokens) AS tokens, SUM(r.calls) AS calls \
           FROM reservations r, jsonb_array_elements(r.keys_json::jsonb) AS k \
           WHERE r.settled = 0 GROUP BY 1, 2, 3) \
         SELECT budget, scope_key, window_start_ms, \
                c.reserved_micro_usd, c.reserved_tokens, c.reserved_calls, \
                h.micro_usd, h.tokens, h.calls \
         FROM budget_counters c FULL JOIN held h USING (budget, scope_key, window_start_ms) \
         WHERE c.reserved_micro_usd IS DISTINCT FROM COALESCE(h.micro_usd, 0) \
            OR c.reserved_tokens IS DISTINCT FROM COALESCE(h.tokens, 0) \
            OR c.reserved_calls IS DISTINCT FROM COALESCE(h.calls, 0)",
    );
    assert!(
        mismatches.is_empty(),
        "reserved counters disagree with their open reservations \
         (budget|scope|window|reserved usd|tokens|calls|held usd|tokens|calls):\n{mismatches}"
    );
    // And the check was not vacuous: reservations were both held and settled.
    let (open, settled) = psql_at(
        &url,
        "SELECT count(*) FILTER (WHERE settled = 0) || ' ' || count(*) FILTER (WHERE settled = 1) \
         FROM reservations",
    )
    .split_once(' ')
    .map(|(o, s)| (o.parse::<u64>().unwrap(), s.parse::<u64>().unwrap()))
    .unwrap();
    assert!(open > 0 && settled > 0, "open {open}, settled {settled}");
    eprintln!(
        "three replicas through an outage: {} decisions and records acknowledged; \
         {open} reservations open, {settled} settled; halts after it reached the \
         other replicas in {delays:?}",
        acked.len()
    );
}

/// Every acknowledged entry (`acked`) is in the one log at its seq; the log is gapless
/// and passes every verifier: `audit verify --addr` on each replica, and an export
/// checked by `audit verify --export` and by scripts/verify_audit.py.
async fn assert_log_holds_and_verifies(
    servers: &[TestServer],
    keys: &tempfile::TempDir,
    acked: &[Acked],
) {
    let client = servers[1 % servers.len()].client();
    let entries: BTreeMap<u64, String> = query_all(&client, AuditFilter::default())
        .await
        .into_iter()
        .map(|e| (e.seq, e.canonical))
        .collect();
    let head = audit_head(&client).await;
    assert_eq!(
        entries.keys().copied().collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>(),
        "one gapless log"
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
        "{} acknowledged entries missing: {lost:?}",
        lost.len()
    );
    for server in servers {
        let out = arbiter(&["audit", "verify", "--addr", &server.url()]).await;
        assert_eq!(out.code(), Some(0), "arbiter audit verify:\n{out}");
    }
    let last = servers.last().unwrap();
    let export = last.scratch("export.jsonl");
    let export_s = export.display().to_string();
    let out = arbiter(&["audit", "export", "--out", &export_s, "--addr", &last.url()]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let hmac = keys
        .path()
        .join("keys")
        .join("hmac.json")
        .display()
        .to_string();
    let out = arbiter(&["audit", "verify", "--export", &export_s, "--keys", &hmac]).await;
    assert_eq!(out.code(), Some(0), "offline verify:\n{out}");
    let script = crate::harness::repo_root()
        .join("scripts")
        .join("verify_audit.py");
    let out =
        crate::harness::python(&[&script.display().to_string(), &export_s, "--keys", &hmac]).await;
    assert_eq!(out.code(), Some(0), "verify_audit.py:\n{out}");
}

/// The GRANT block of docs/postgres.md, for role `role`.
fn documented_grants(role: &str) -> String {
    let doc = std::fs::read_to_string(crate::harness::repo_root().join("docs/postgres.md"))
        .expect("docs/postgres.md");
    let block = doc
        .split("<!-- grants:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- grants:end -->").next())
        .expect("docs/postgres.md has a grants block");
    block
        .lines()
        .filter(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("arbiter_app", role)
}

#[tokio::test]
async fn the_server_runs_as_the_documented_least_privilege_role_and_cannot_rewrite_the_log() {
    if skip_unless_postgres(
        "postgres::the_server_runs_as_the_documented_least_privilege_role_and_cannot_rewrite_the_log",
    ) {
        return;
    }
    use crate::harness::{postgres_admin_url, psql, psql_try, with_database};
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let (owner, app, db) = (
        format!("arb_owner_{tag}"),
        format!("arb_app_{tag}"),
        format!("arb_roles_{tag}"),
    );
    psql("postgres", &format!("CREATE ROLE {owner} LOGIN"));
    psql("postgres", &format!("CREATE ROLE {app} LOGIN"));
    psql("postgres", &format!("CREATE DATABASE {db} OWNER {owner}"));
    let base = with_database(&postgres_admin_url(), &db);
    let as_role = |role: &str| base.replacen("postgres@", &format!("{role}@"), 1);

    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let out = arbiter(&[
        "migrate",
        "--data-dir",
        &data_dir,
        "--database",
        &as_role(&owner),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "arbiter migrate as the owner:\n{out}");
    let grants = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &as_role(&owner),
            "-c",
        ])
        .arg(documented_grants(&app))
        .output()
        .unwrap();
    assert!(
        grants.status.success(),
        "{}",
        String::from_utf8_lossy(&grants.stderr)
    );

    // The server as the application role: decisions, admin changes, halts, the audit API.
    let server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .database_url(as_role(&app)),
    )
    .await;
    let c = server.client();
    for i in 0..5 {
        let d = c
            .evaluate(format!("agent-{i}"))
            .tool("read")
            .send()
            .await
            .unwrap();
        assert_eq!(d.outcome, DecisionOutcome::Allow, "{:?}", d.reasons);
    }
    crate::harness::set_trust(
        &c,
        "agent-1",
        arbiter_client::proto::TrustLevel::L2Suggest,
        "",
    )
    .await;
    crate::harness::grant_consent(&c, "agent-1", "email", "", None).await;
    let url = server.url();
    let out = arbiter(&[
        "halt", "--agent", "agent-2", "--reason", "e2e", "--addr", &url,
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{out}");
    let out = arbiter(&[
        "resume", "--agent", "agent-2", "--reason", "e2e", "--addr", &url,
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{out}");
    let out = arbiter(&["audit", "verify", "--addr", &server.url()]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    // Heartbeats are stored outside the audit batch, with the same role.
    c.heartbeat(arbiter_client::proto::HeartbeatRequest {
        agent_id: "agent-3".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    eventually("the heartbeat is stored", Duration::from_secs(5), || {
        let n = psql_try(
            &db,
            "SELECT count(*) FROM presence WHERE agent_id = 'agent-3'",
        );
        async move { (n.ok()? == "1").then_some(()) }
    })
    .await;

    // The role cannot change or remove history, nor switch the triggers off.
    let app_psql = |sql: &str| {
        let out = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &as_role(&app),
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for sql in [
        "UPDATE audit_entries SET outcome = 'allow' WHERE seq = 2",
        "DELETE FROM audit_entries WHERE seq = 2",
        "TRUNCATE audit_entries",
        "DELETE FROM merkle_nodes",
        "UPDATE checkpoints SET note = ''",
        "ALTER TABLE audit_entries DISABLE TRIGGER USER",
        "DROP TRIGGER audit_entries_append_only ON audit_entries",
    ] {
        let (ok, err) = app_psql(sql);
        assert!(!ok, "the application role may run {sql:?}");
        assert!(
            err.contains("permission denied") || err.contains("must be owner"),
            "{sql:?}: {err}"
        );
    }
    // Even the owner meets the triggers.
    let err = psql_try(&db, "DELETE FROM audit_entries WHERE seq = 1").unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    drop(server);
    let _ = psql_try("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    let _ = psql_try("postgres", &format!("DROP ROLE {app}"));
    let _ = psql_try("postgres", &format!("DROP ROLE {owner}"));
}

#[tokio::test]
async fn errors_never_repeat_the_database_url() {
    if skip_unless_postgres("postgres::errors_never_repeat_the_database_url") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    for url in [
        "postgres://arbiter:S3cretPassw0rd@127.0.0.1:1/arbiter",
        "postgres://arbiter:S3cretPassw0rd@127.0.0.1:1/arbiter?sslmode=nonsense",
    ] {
        let out = arbiter(&["migrate", "--data-dir", &data_dir, "--database", url]).await;
        assert_ne!(out.code(), Some(0), "{out}");
        assert!(
            !out.text().contains("S3cretPassw0rd"),
            "the password leaked:\n{out}"
        );
        assert!(out.text().contains("PostgreSQL"), "{out}");
    }
}

/// Three servers on one fresh database of the suite's cluster, sharing one key ring.
async fn replicas(n: usize) -> (Vec<TestServer>, tempfile::TempDir) {
    replicas_with(n, POLICY).await
}

async fn replicas_with(n: usize, policy: &str) -> (Vec<TestServer>, tempfile::TempDir) {
    use crate::harness::{create_database, postgres_admin_url, with_database};
    replicas_on(
        &with_database(&postgres_admin_url(), &create_database()),
        n,
        policy,
    )
    .await
}

/// `n` servers on the database at `url` (a test's own cluster, or the suite's),
/// sharing one key ring.
async fn replicas_on(url: &str, n: usize, policy: &str) -> (Vec<TestServer>, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for _ in 0..n {
        // One at a time: the first writes the keys the others read.
        servers.push(
            spawn_server(
                ServerOptions::new()
                    .policy(policy)
                    .database_url(url)
                    .data_dir(keys.path()),
            )
            .await,
        );
    }
    (servers, keys)
}

#[tokio::test]
async fn three_replicas_write_one_gapless_chain_that_every_verifier_accepts() {
    if skip_unless_postgres(
        "postgres::three_replicas_write_one_gapless_chain_that_every_verifier_accepts",
    ) {
        return;
    }
    let (servers, keys) = replicas(3).await;
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut workers = Vec::new();
    for (r, server) in servers.iter().enumerate() {
        for w in 0..8 {
            let (client, acked) = (impatient(server), acked.clone());
            workers.push(tokio::spawn(async move {
                for n in 0..25 {
                    let d = client
                        .evaluate(format!("agent-{r}-{w}"))
                        .tool("read")
                        .request_id(format!("r{r}-w{w}-n{n}"))
                        .send()
                        .await
                        .expect("every replica answers");
                    assert_eq!(d.outcome, DecisionOutcome::Allow, "{:?}", d.reasons);
                    acked.lock().unwrap().push(Acked {
                        decision_id: d.decision_id,
                        audit_seq: d.audit_seq,
                    });
                }
            }));
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 3 * 8 * 25);
    assert_log_holds_and_verifies(&servers, &keys, &acked).await;
}

fn halt_target(agent: &str) -> Option<arbiter_client::proto::HaltTarget> {
    Some(arbiter_client::proto::HaltTarget {
        scope: arbiter_client::proto::HaltScope::Agent as i32,
        agent_id: agent.into(),
        session_id: String::new(),
    })
}

/// Polls `client` until `agent`'s evaluations are (`allowed`) or are not allowed.
async fn until(client: &Client, agent: &str, allowed: bool) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let d = client.evaluate(agent).tool("read").send().await.unwrap();
        if (d.outcome == DecisionOutcome::Allow) == allowed {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{agent}: still allowed={} after 10 s",
            !allowed
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn halts_trust_and_consent_reach_every_replica_within_a_second() {
    if skip_unless_postgres("postgres::halts_trust_and_consent_reach_every_replica_within_a_second")
    {
        return;
    }
    use arbiter_client::proto as pb;
    let (servers, _keys) = replicas(3).await;
    let clients: Vec<Client> = servers.iter().map(|s| s.client()).collect();
    let mut delays = Vec::new();
    for trial in 0..20 {
        let agent = format!("bot-{trial}");
        let a = &clients[trial % 3];
        until(a, &agent, true).await;
        a.halt(pb::HaltRequest {
            target: halt_target(&agent),
            mode: pb::HaltMode::HaltAll as i32,
            reason: "propagation drill".into(),
        })
        .await
        .unwrap();
        for (i, other) in clients.iter().enumerate() {
            if i != trial % 3 {
                delays.push(until(other, &agent, false).await);
            }
        }
        a.resume(pb::ResumeRequest {
            target: halt_target(&agent),
            reason: "drill over".into(),
        })
        .await
        .unwrap();
        for (i, other) in clients.iter().enumerate() {
            if i != trial % 3 {
                delays.push(until(other, &agent, true).await);
            }
        }
    }
    delays.sort();
    let p = |q: f64| delays[((delays.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    eprintln!(
        "propagation over {} observations (halt and resume, 2 other replicas, 20 trials): p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        p(0.50),
        p(0.99),
        delays.last().unwrap()
    );
    assert!(p(0.99) <= Duration::from_secs(1), "p99 {:?} > 1 s", p(0.99));

    // Trust and consent set on one replica are listed by the others.
    set_and_see_trust(&clients).await;
}

async fn set_and_see_trust(clients: &[Client]) {
    use arbiter_client::proto as pb;
    crate::harness::set_trust(&clients[0], "trusted-bot", pb::TrustLevel::L2Suggest, "").await;
    crate::harness::grant_consent(&clients[1], "trusted-bot", "email", "", None).await;
    for c in clients {
        eventually(
            "trust and consent on every replica",
            Duration::from_secs(1),
            || async {
                let trust = c
                    .list_trust(pb::ListTrustRequest {
                        agent_id: "trusted-bot".into(),
                    })
                    .await
                    .ok()?;
                let consent = c
                    .list_consents(pb::ListConsentsRequest {
                        agent_id: "trusted-bot".into(),
                    })
                    .await
                    .ok()?;
                (!trust.assignments.is_empty() && !consent.grants.is_empty()).then_some(())
            },
        )
        .await;
    }
}

/// A bundle that differs per trial: `tool-{n}` is allowed only from trial `n` on.
fn trial_policy(n: usize) -> String {
    format!(
        "version: 1\nname: trial-{n}\nagents:\n  - id: \"*\"\n    tools: {{allow: [read, \"tool-{n}\"]}}\n"
    )
}

/// Polls until `client` allows `tool` for `agent`; how long that took.
async fn until_tool_allowed(client: &Client, agent: &str, tool: &str) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let d = client.evaluate(agent).tool(tool).send().await.unwrap();
        if d.outcome == DecisionOutcome::Allow {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{tool} still denied after 10 s: {:?}",
            d.reasons
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn served_version(client: &Client) -> String {
    client
        .get_policy(arbiter_client::proto::GetPolicyRequest {})
        .await
        .unwrap()
        .current
        .unwrap()
        .version
}

async fn policy_loads(client: &Client) -> usize {
    query_all(
        client,
        AuditFilter {
            kinds: vec!["policy.load".into()],
            ..Default::default()
        },
    )
    .await
    .len()
}

#[tokio::test]
async fn a_policy_change_on_one_replica_reaches_every_replica_within_a_second() {
    if skip_unless_postgres(
        "postgres::a_policy_change_on_one_replica_reaches_every_replica_within_a_second",
    ) {
        return;
    }
    let (servers, keys) = replicas_with(3, &trial_policy(0)).await;
    let clients: Vec<Client> = servers.iter().map(|s| s.client()).collect();
    // Each trial edits one replica's file only; the others never see a file change.
    let mut delays = Vec::new();
    for n in 1..=15 {
        let writer = n % 3;
        let tool = format!("tool-{n}");
        servers[writer].write_policy(&trial_policy(n));
        until_tool_allowed(&clients[writer], "any-bot", &tool).await;
        for (i, other) in clients.iter().enumerate() {
            if i != writer {
                delays.push(until_tool_allowed(other, "any-bot", &tool).await);
            }
        }
        let version = served_version(&clients[writer]).await;
        for c in &clients {
            assert_eq!(served_version(c).await, version, "trial {n}: one version");
        }
    }
    delays.sort();
    let p = |q: f64| delays[((delays.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    eprintln!(
        "policy propagation over {} observations (15 file changes, 2 other replicas each): p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        p(0.50),
        p(0.99),
        delays.last().unwrap()
    );
    assert!(p(0.99) <= Duration::from_secs(1), "p99 {:?} > 1 s", p(0.99));

    // An invalid bundle on one replica is rejected there and published nowhere.
    let last = served_version(&clients[0]).await;
    servers[0].write_policy("version: 2\nagents: nonsense\n");
    eventually(
        "the rejection is logged",
        Duration::from_secs(10),
        || async {
            let rejected = query_all(
                &clients[1],
                AuditFilter {
                    kinds: vec!["policy.rejected".into()],
                    ..Default::default()
                },
            )
            .await;
            (!rejected.is_empty()).then_some(())
        },
    )
    .await;
    // Longer than the 1 s re-check, so a wrongly adopted bundle would show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for c in &clients {
        assert_eq!(
            served_version(c).await,
            last,
            "the last valid bundle serves"
        );
        until_tool_allowed(c, "any-bot", "tool-15").await;
    }

    // A replica started without a file serves the published bundle and publishes
    // nothing itself (a re-publication could undo a newer one).
    let loads = policy_loads(&clients[0]).await;
    let bare = spawn_server(
        ServerOptions::new()
            .database_url(servers[0].database_url().unwrap())
            .data_dir(keys.path()),
    )
    .await;
    let bare_client = bare.client();
    assert_eq!(served_version(&bare_client).await, last);
    until_tool_allowed(&bare_client, "any-bot", "tool-15").await;
    assert_eq!(
        policy_loads(&clients[0]).await,
        loads,
        "no policy.load entry"
    );
    // And it follows the next change like the others.
    servers[2].write_policy(&trial_policy(16));
    until_tool_allowed(&bare_client, "any-bot", "tool-16").await;
}

const WATCHED_BUDGET: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: [read]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "10.00"}
watchdog:
  halt_over_budget: true
"#;

#[tokio::test]
async fn spend_recorded_on_one_replica_is_seen_by_every_replica_within_a_second() {
    if skip_unless_postgres(
        "postgres::spend_recorded_on_one_replica_is_seen_by_every_replica_within_a_second",
    ) {
        return;
    }
    let (mut servers, _keys) = replicas_with(3, WATCHED_BUDGET).await;
    let clients: Vec<Client> = servers.iter().map(impatient).collect();
    let d = clients[0]
        .evaluate("spender")
        .tool("read")
        .cost_micro_usd(1_000_000)
        .send()
        .await
        .unwrap();
    assert_eq!(d.outcome, DecisionOutcome::Allow, "{:?}", d.reasons);
    clients[0]
        .record(&d.decision_id)
        .cost_micro_usd(7_000_000)
        .send()
        .await
        .unwrap();
    // GetBudgets on the other replicas shows the spend recorded on the first.
    for c in &clients[1..] {
        eventually(
            "the spend on every replica",
            Duration::from_secs(1),
            || async {
                let a = crate::harness::amount(c, "spender", "", "cap", "micro_usd").await;
                (a.spent == 7_000_000 && a.remaining == 3_000_000).then_some(())
            },
        )
        .await;
    }
    // Their own budget check knows it: a request that no longer fits is denied by the
    // check itself, not only later by the database's admission step.
    let d = clients[2]
        .evaluate("spender")
        .tool("read")
        .cost_micro_usd(4_000_000)
        .send()
        .await
        .unwrap();
    let reason = d.reason().expect("a deciding reason");
    assert_eq!(reason.code, "budget.exceeded", "{:?}", d.reasons);
    assert!(
        !reason.message.contains("another replica"),
        "denied only by the admission step: {}",
        reason.message
    );

    // Spend over the cap, split over two replicas, none over it alone: the watchdog
    // lease holder sees the total and halts the agent once.
    for c in &clients[1..3] {
        let d = c
            .evaluate("splitter")
            .tool("read")
            .cost_micro_usd(1_000_000)
            .send()
            .await
            .unwrap();
        assert_eq!(d.outcome, DecisionOutcome::Allow, "{:?}", d.reasons);
        c.record(&d.decision_id)
            .cost_micro_usd(6_000_000)
            .send()
            .await
            .unwrap();
    }
    let halts = || async {
        query_all(
            &servers[0].client(),
            AuditFilter {
                agent_id: "splitter".into(),
                kinds: vec!["halt.engage".into()],
                ..Default::default()
            },
        )
        .await
        .len()
    };
    eventually(
        "the watchdog halts the splitter",
        Duration::from_secs(5),
        || async { (halts().await > 0).then_some(()) },
    )
    .await;
    // Several watchdog passes later, still one halt.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(halts().await, 1, "one halt, from one replica");

    // An operator resumes it, still over the cap; every replica restarts, so the lease
    // changes hands and no memory survives: the condition is not halted again.
    clients[1]
        .resume(arbiter_client::proto::ResumeRequest {
            target: halt_target("splitter"),
            reason: "checked".into(),
        })
        .await
        .unwrap();
    for server in servers.iter_mut() {
        server.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let after = query_all(
        &servers[2].client(),
        AuditFilter {
            agent_id: "splitter".into(),
            kinds: vec!["halt.engage".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(after.len(), 1, "not halted again after the hand-over");
}

const APPROVALS: &str = r#"
version: 1
actions:
  - match: {tool: "refund_*"}
    approval: always
agents:
  - id: "*"
    tools: {allow: ["*"]}
"#;

/// Asks for an approval on `clients[0]`; returns its id once every replica knows it.
async fn pending_everywhere(clients: &[Client], agent: &str) -> String {
    use arbiter_client::proto as pb;
    let d = clients[0]
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
    let id = d.approval_id.expect("an approval id");
    for c in clients {
        eventually(
            "the approval on every replica",
            Duration::from_secs(2),
            || async {
                c.get_approval(pb::GetApprovalRequest {
                    approval_id: id.clone(),
                })
                .await
                .ok()
                .map(|_| ())
            },
        )
        .await;
    }
    id
}

#[tokio::test]
async fn an_approval_raced_across_replicas_has_one_winner_and_is_consumed_once() {
    if skip_unless_postgres(
        "postgres::an_approval_raced_across_replicas_has_one_winner_and_is_consumed_once",
    ) {
        return;
    }
    use arbiter_client::proto as pb;
    use futures::StreamExt;
    let (servers, _keys) = replicas_with(3, APPROVALS).await;
    let clients: Vec<Client> = servers.iter().map(impatient).collect();
    for trial in 0..6 {
        // Grant on two replicas and deny on the third, all at once: one decision wins.
        let id = pending_everywhere(&clients, &format!("racer-{trial}")).await;
        let mut watch = clients[2]
            .watch_approval(pb::WatchApprovalRequest {
                approval_id: id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(
            watch.next().await.unwrap().unwrap().state,
            pb::ApprovalState::Pending as i32
        );
        let start = Arc::new(tokio::sync::Barrier::new(3));
        let tasks: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (c, id, start) = (c.clone(), id.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    c.approve(pb::ApproveRequest {
                        approval_id: id,
                        grant: i != 1,
                        reason: format!("replica {i}"),
                    })
                    .await
                    .ok()
                    .and_then(|r| r.approval)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            winners.extend(t.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "trial {trial}: one winner: {winners:?}");
        let decided = query_all(
            &clients[0],
            AuditFilter {
                kinds: vec!["approval.grant".into(), "approval.deny".into()],
                agent_id: format!("racer-{trial}"),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(decided.len(), 1, "trial {trial}: one decision in the log");
        // A watcher on another replica hears the outcome.
        let seen = loop {
            let a = tokio::time::timeout(Duration::from_secs(3), watch.next())
                .await
                .expect("the watcher hears the decision")
                .unwrap()
                .unwrap();
            if a.state != pb::ApprovalState::Pending as i32 {
                break a;
            }
        };
        assert_eq!(seen.state, winners[0].state, "trial {trial}");
    }

    for trial in 0..6 {
        // A granted approval presented on every replica at once is consumed once.
        let agent = format!("spender-{trial}");
        let id = pending_everywhere(&clients, &agent).await;
        clients[trial % 3]
            .approve(pb::ApproveRequest {
                approval_id: id.clone(),
                grant: true,
                reason: "go".into(),
            })
            .await
            .unwrap();
        for c in &clients {
            eventually(
                "granted on every replica",
                Duration::from_secs(2),
                || async {
                    let a = c
                        .get_approval(pb::GetApprovalRequest {
                            approval_id: id.clone(),
                        })
                        .await
                        .ok()?
                        .approval?;
                    (a.state == pb::ApprovalState::Granted as i32).then_some(())
                },
            )
            .await;
        }
        let start = Arc::new(tokio::sync::Barrier::new(3));
        let tasks: Vec<_> = clients
            .iter()
            .map(|c| {
                let (c, id, agent, start) = (c.clone(), id.clone(), agent.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    c.evaluate(agent)
                        .tool("refund_order")
                        .approval_id(id)
                        .send()
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut allowed = 0;
        for t in tasks {
            let d = t.await.unwrap();
            if d.outcome == DecisionOutcome::Allow {
                allowed += 1;
            } else {
                let code = d.reason().map(|r| r.code.clone()).unwrap_or_default();
                assert!(
                    code.starts_with("approval."),
                    "trial {trial}: {:?}",
                    d.reasons
                );
            }
        }
        assert_eq!(allowed, 1, "trial {trial}: consumed exactly once");
        // Every attempt is a logged decision: the pending one, one allow, two denials.
        let entries = query_all(
            &clients[0],
            AuditFilter {
                kinds: vec!["evaluate".into()],
                agent_id: agent.clone(),
                ..Default::default()
            },
        )
        .await;
        let outcomes: Vec<&str> = entries.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(
            (
                outcomes.iter().filter(|o| **o == "allow").count(),
                outcomes.iter().filter(|o| **o == "deny").count()
            ),
            (1, 2),
            "trial {trial}: {outcomes:?}"
        );
    }
}

const LOOPING: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: [search]}
    loop_guard: {max_calls: 5, window: 60s}
watchdog:
  halt_looping: true
"#;

#[tokio::test]
async fn the_loop_guard_counts_calls_served_by_every_replica() {
    if skip_unless_postgres("postgres::the_loop_guard_counts_calls_served_by_every_replica") {
        return;
    }
    const MAX: usize = 5;
    let (servers, _keys) = replicas_with(3, LOOPING).await;
    let clients: Vec<Client> = servers.iter().map(impatient).collect();
    for trial in 0..4 {
        // 3 replicas × 4 concurrent calls of one tool in one session: without a shared
        // count each replica would allow 4 (12 in all).
        let agent = format!("looper-{trial}");
        // The watchdog may halt the looper before the last calls land.
        let allowed = burst(
            &clients,
            4,
            &agent,
            "s1",
            "search",
            &["loop.detected", "halt."],
        )
        .await;
        assert_eq!(allowed, MAX, "trial {trial}: exactly max_calls allowed");
        let denied = query_all(
            &servers[0].client(),
            AuditFilter {
                agent_id: agent.clone(),
                outcome: "deny".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            denied.len(),
            12 - MAX,
            "trial {trial}: every denial is logged"
        );
        // A later call on any replica is still counted against the full window.
        let d = clients[trial % 3]
            .evaluate(&agent)
            .session("s1")
            .tool("search")
            .send()
            .await
            .unwrap();
        assert_ne!(d.outcome, DecisionOutcome::Allow, "trial {trial}");
    }
    // The trips halt each looping agent once, from whichever replica saw one.
    eventually("every looper halted", Duration::from_secs(5), || async {
        let halts = query_all(
            &servers[0].client(),
            AuditFilter {
                kinds: vec!["halt.engage".into()],
                ..Default::default()
            },
        )
        .await;
        (halts.len() >= 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let halts = query_all(
        &servers[1].client(),
        AuditFilter {
            kinds: vec!["halt.engage".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(halts.len(), 4, "one halt per looping agent");
}

#[tokio::test]
async fn one_watchdog_lease_at_a_time() {
    if skip_unless_postgres("postgres::one_watchdog_lease_at_a_time") {
        return;
    }
    let (servers, _keys) = replicas(3).await;
    // Each replica asks for both leases (watchdog, approval expiry) twice a second; each
    // is held by exactly one session: two granted advisory locks, not one per replica.
    let db = servers[0].database_url().unwrap();
    let db = db.rsplit('/').next().unwrap().to_owned();
    eventually("one lease holder", Duration::from_secs(5), || {
        let n = crate::harness::psql(
            &db,
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
        );
        async move { (n == "2").then_some(()) }
    })
    .await;
}

const WATCHED: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: [read]}
watchdog:
  unresponsive_after: 2s
  halt_silent_after: 4s
"#;

/// The granted session-level advisory lock of a singleton job, as (pid of its backend):
/// the key is FNV-1a of the job's name (store/postgres.rs `job_key`), which pg_locks
/// shows split into classid (high half) and objid (low half).
fn lease_pid(db: &str, job: &str) -> Option<String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in job.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let pid = crate::harness::psql(
        db,
        &format!(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND classid = {} AND objid = {} AND database = \
             (SELECT oid FROM pg_database WHERE datname = current_database())",
            h >> 32,
            h & 0xffff_ffff
        ),
    );
    (!pid.is_empty()).then_some(pid)
}

async fn presence_on(client: &Client, agent: &str) -> (i32, bool) {
    client
        .list_agents(arbiter_client::proto::ListAgentsRequest {})
        .await
        .unwrap()
        .agents
        .into_iter()
        .find(|a| a.agent_id == agent)
        .map(|a| (a.presence, a.halted))
        .unwrap_or_else(|| panic!("{agent} is not listed"))
}

async fn silence_halts(client: &Client, agent: &str) -> usize {
    query_all(
        client,
        AuditFilter {
            agent_id: agent.into(),
            kinds: vec!["halt.engage".into()],
            ..Default::default()
        },
    )
    .await
    .iter()
    .filter(|e| e.canonical.contains("\"principal\":\"watchdog\""))
    .count()
}

#[tokio::test]
async fn heartbeats_on_any_replica_keep_an_agent_alive_for_the_watchdog() {
    if skip_unless_postgres(
        "postgres::heartbeats_on_any_replica_keep_an_agent_alive_for_the_watchdog",
    ) {
        return;
    }
    use crate::harness::{create_database, postgres_admin_url, with_database};
    use arbiter_client::proto as pb;
    const LIVE: i32 = pb::PresenceStatus::Live as i32;
    const UNRESPONSIVE: i32 = pb::PresenceStatus::Unresponsive as i32;
    let beat = |agent: &str| pb::HeartbeatRequest {
        agent_id: agent.into(),
        ..Default::default()
    };

    // Replica 0 starts alone and takes the watchdog lease before the others exist, so
    // the lease holder is known: the one replica that judges silence.
    let db = create_database();
    let url = with_database(&postgres_admin_url(), &db);
    let keys = tempfile::tempdir().unwrap();
    let options = ServerOptions::new()
        .policy(WATCHED)
        .database_url(url)
        .data_dir(keys.path());
    let mut servers = vec![spawn_server(options.clone()).await];
    let holder = eventually(
        "replica 0 holds the watchdog lease",
        Duration::from_secs(10),
        || {
            let pid = lease_pid(&db, "watchdog");
            async move { pid }
        },
    )
    .await;
    for _ in 0..2 {
        servers.push(spawn_server(options.clone()).await);
    }
    let clients: Vec<Client> = servers.iter().map(|s| s.client()).collect();

    // Every replica lists the agent (it evaluated there); the lease holder hears one
    // heartbeat, then never again.
    let agent = "wanderer";
    for c in &clients {
        c.evaluate(agent).tool("read").send().await.unwrap();
    }
    clients[0].heartbeat(beat(agent)).await.unwrap();

    // Heartbeats reach replica 1 only, then replica 2 only, each for longer than
    // halt_silent_after: the lease holder must judge from the newest heartbeat any
    // replica received, and ListAgents everywhere shows the agent live.
    for (to, others) in [(1, [0, 2]), (2, [0, 1])] {
        let phase = std::time::Instant::now();
        while phase.elapsed() < Duration::from_secs(5) {
            let r = clients[to].heartbeat(beat(agent)).await.unwrap();
            assert!(
                !r.halted,
                "halted while heartbeating to replica {to}: {:?}",
                r.halt
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for i in others {
            assert_eq!(
                presence_on(&clients[i], agent).await,
                (LIVE, false),
                "replica {i} while heartbeats go to replica {to}"
            );
        }
    }
    assert_eq!(silence_halts(&clients[1], agent).await, 0);

    // Silence: the lease holder halts the agent, once, and every replica knows.
    eventually(
        "the silent agent is halted",
        Duration::from_secs(10),
        || async { (presence_on(&clients[1], agent).await.1).then_some(()) },
    )
    .await;
    // Several more watchdog passes on every replica (twice a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for c in &clients {
        assert_eq!(presence_on(c, agent).await, (UNRESPONSIVE, true));
    }
    assert_eq!(silence_halts(&clients[1], agent).await, 1, "one halt entry");

    // An operator resumes it and the lease holder dies: the replica that takes the
    // lease over does not halt it again for the same silence.
    clients[1]
        .resume(pb::ResumeRequest {
            target: halt_target(agent),
            reason: "checked by a human".into(),
        })
        .await
        .unwrap();
    servers[0].kill9();
    eventually(
        "another replica takes the lease",
        Duration::from_secs(10),
        || {
            let pid = lease_pid(&db, "watchdog").filter(|p| *p != holder);
            async move { pid }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(presence_on(&clients[2], agent).await, (UNRESPONSIVE, false));
    assert_eq!(
        silence_halts(&clients[1], agent).await,
        1,
        "still one halt entry"
    );

    // A new silence (after a new heartbeat) is a new condition.
    clients[2].heartbeat(beat(agent)).await.unwrap();
    eventually(
        "a new silence is halted",
        Duration::from_secs(15),
        || async { (presence_on(&clients[1], agent).await.1).then_some(()) },
    )
    .await;
    assert_eq!(silence_halts(&clients[1], agent).await, 2);
}

/// `per_client` Evaluates of `tool` by `agent` (in `session`, unless empty) on every
/// client, released at once. Each must be allowed or denied with a code from `codes`
/// (one ending in "." is a prefix); returns how many were allowed.
async fn burst(
    clients: &[Client],
    per_client: usize,
    agent: &str,
    session: &str,
    tool: &str,
    codes: &'static [&'static str],
) -> usize {
    let start = Arc::new(tokio::sync::Barrier::new(clients.len() * per_client));
    let mut tasks = Vec::new();
    for c in clients {
        for _ in 0..per_client {
            let (c, start) = (c.clone(), start.clone());
            let (agent, session, tool) = (agent.to_owned(), session.to_owned(), tool.to_owned());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let mut e = c.evaluate(agent).tool(tool);
                if !session.is_empty() {
                    e = e.session(session);
                }
                let d = e.send().await.unwrap();
                let expected = d.reason().is_some_and(|r| {
                    codes.iter().any(|code| {
                        r.code == *code || (code.ends_with('.') && r.code.starts_with(code))
                    })
                });
                assert!(
                    d.outcome == DecisionOutcome::Allow || expected,
                    "{:?}",
                    d.reasons
                );
                d.outcome == DecisionOutcome::Allow
            }));
        }
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    allowed
}

const CAPPED: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: [read]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_calls: 20}
"#;

#[tokio::test]
async fn three_replicas_never_overshoot_a_budget_under_a_race() {
    if skip_unless_postgres("postgres::three_replicas_never_overshoot_a_budget_under_a_race") {
        return;
    }
    const CAP: usize = 20;
    let (servers, _keys) = replicas_with(3, CAPPED).await;
    let clients: Vec<Client> = servers.iter().map(impatient).collect();
    for trial in 0..8 {
        // 3 replicas × 32 concurrent clients, one Evaluate each, on one agent's counter.
        let agent = format!("racer-{trial}");
        // A request that lost the race to another replica is a logged DENY
        // (budget.exceeded), never an error.
        let allowed = burst(&clients, 32, &agent, "", "read", &["budget.exceeded"]).await;
        assert_eq!(allowed, CAP, "trial {trial}: exactly the cap is allowed");
        // And the log agrees: CAP allowed decisions for this agent.
        let entries = query_all(
            &servers[0].client(),
            AuditFilter {
                agent_id: agent.clone(),
                outcome: "allow".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            entries.len(),
            CAP,
            "trial {trial}: allowed entries in the log"
        );
        let denied = query_all(
            &servers[0].client(),
            AuditFilter {
                agent_id: agent.clone(),
                outcome: "deny".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            denied.len(),
            96 - CAP,
            "trial {trial}: every refused request is a logged denial"
        );
    }
}

const PRICED: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: [read]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "10.00"}
"#;

#[tokio::test]
async fn a_decision_made_on_one_replica_is_recorded_on_another_exactly_once() {
    if skip_unless_postgres(
        "postgres::a_decision_made_on_one_replica_is_recorded_on_another_exactly_once",
    ) {
        return;
    }
    let (servers, _keys) = replicas_with(2, PRICED).await;
    let (a, b) = (servers[0].client(), impatient(&servers[1]));
    let d = a
        .evaluate("payer")
        .tool("read")
        .cost_micro_usd(400_000)
        .send()
        .await
        .unwrap();
    assert_eq!(d.outcome, DecisionOutcome::Allow, "{:?}", d.reasons);
    let first = b
        .record(&d.decision_id)
        .cost_micro_usd(300_000)
        .send()
        .await
        .expect("Record on the other replica");
    // A second Record, on the replica that made the decision, settles nothing twice:
    // it is refused (ABORTED) and a retry answers the stored reply.
    let again = impatient(&servers[0])
        .record(&d.decision_id)
        .cost_micro_usd(300_000)
        .send()
        .await;
    if let Err(e) = &again {
        assert_eq!(e.code(), tonic::Code::Aborted, "{e}");
        let retry = a
            .record(&d.decision_id)
            .cost_micro_usd(300_000)
            .send()
            .await
            .expect("a retry answers the stored reply");
        assert_eq!(retry.audit_seq, first.audit_seq);
    }
    let db = servers[0].database_url().unwrap();
    let db = db.rsplit('/').next().unwrap().to_owned();
    let spent = crate::harness::psql(
        &db,
        "SELECT spent_micro_usd FROM budget_counters WHERE scope_key = 'payer'",
    );
    assert_eq!(spent, "300000", "settled exactly once");
}

/// Issue 14, defect 10: a control refresh never replaces a newer change with an older
/// snapshot. While two replicas stream trust changes (every one a NOTIFY and a refresh
/// on the third), the third must show its own changes at once, in order, every time:
/// a principal it just created authenticates, one it just revoked is refused, a halt
/// it just engaged denies, one it just lifted allows, a level it just set is read back.
#[tokio::test]
async fn a_replica_never_replaces_its_own_newer_control_change_with_an_older_snapshot() {
    if skip_unless_postgres(
        "postgres::a_replica_never_replaces_its_own_newer_control_change_with_an_older_snapshot",
    ) {
        return;
    }
    use crate::harness::{create_principal, keyed};
    use arbiter_client::proto as pb;
    let (servers, _keys) = replicas(3).await;
    let root = create_principal(&servers[0].client(), "root", &[pb::Role::Admin], &[]).await;
    let admins: Vec<Client> = servers.iter().map(|s| keyed(s, &root)).collect();
    for a in &admins {
        eventually(
            "the admin on every replica",
            Duration::from_secs(2),
            || async { a.list_halts(pb::ListHaltsRequest {}).await.ok() },
        )
        .await;
    }
    let runtime = create_principal(&admins[0], "runtime", &[pb::Role::Agent], &["*"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut churn = Vec::new();
    for (i, a) in admins.iter().enumerate().skip(1) {
        let (a, stop) = (a.clone(), stop.clone());
        churn.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let level = if n.is_multiple_of(2) {
                    pb::TrustLevel::L1Monitor
                } else {
                    pb::TrustLevel::L2Suggest
                };
                crate::harness::set_trust(&a, &format!("churn-{i}"), level, "").await;
                n += 1;
            }
        }));
    }
    let target = &servers[0];
    let admin = &admins[0];
    let agent = keyed(target, &runtime);
    eventually(
        "the runtime key on the target",
        Duration::from_secs(2),
        || async { agent.ping().await.ok() },
    )
    .await;
    for trial in 0..60 {
        let name = format!("p-{trial}");
        let key = create_principal(admin, &name, &[pb::Role::Operator], &[]).await;
        let fresh = keyed(target, &key);
        fresh
            .list_halts(pb::ListHaltsRequest {})
            .await
            .unwrap_or_else(|e| {
                panic!("trial {trial}: a principal just created is refused: {e:?}")
            });
        admin
            .revoke_principal(pb::RevokePrincipalRequest { name: name.clone() })
            .await
            .unwrap();
        let err = fresh.list_halts(pb::ListHaltsRequest {}).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::Unauthenticated,
            "trial {trial}: revoked key"
        );

        let bot = format!("bot-{trial}");
        admin
            .halt(pb::HaltRequest {
                target: halt_target(&bot),
                mode: pb::HaltMode::Emergency as i32,
                reason: "order drill".into(),
            })
            .await
            .unwrap();
        let d = agent.evaluate(&bot).tool("read").send().await.unwrap();
        assert!(
            d.is_denied(),
            "trial {trial}: a halt just engaged: {:?}",
            d.reasons
        );
        admin
            .resume(pb::ResumeRequest {
                target: halt_target(&bot),
                reason: "over".into(),
            })
            .await
            .unwrap();
        let d = agent.evaluate(&bot).tool("read").send().await.unwrap();
        assert!(
            d.allowed(),
            "trial {trial}: a halt just lifted: {:?}",
            d.reasons
        );

        let level = if trial % 2 == 0 {
            pb::TrustLevel::L3ActApprove
        } else {
            pb::TrustLevel::L4ActReport
        };
        crate::harness::set_trust(admin, &bot, level, "").await;
        let got = admin
            .get_trust(pb::GetTrustRequest {
                agent_id: bot.clone(),
                scope: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(
            got.effective_level, level as i32,
            "trial {trial}: a level just set"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in churn {
        c.await.unwrap();
    }
}

/// Issue 14, defect 11: the loser of an approval race across replicas gets the code a
/// loser gets on one server, FAILED_PRECONDITION, and from that answer on its replica
/// shows the winner's decision: the agent presenting the approval there gets the final
/// answer (ALLOW for a grant, DENY `approval.denied` for a denial), never
/// PENDING_APPROVAL.
#[tokio::test]
async fn the_loser_of_an_approval_race_across_replicas_gets_failed_precondition_and_sees_the_winner(
) {
    if skip_unless_postgres(
        "postgres::the_loser_of_an_approval_race_across_replicas_gets_failed_precondition_and_sees_the_winner",
    ) {
        return;
    }
    use arbiter_client::proto as pb;
    let (servers, _keys) = replicas_with(3, APPROVALS).await;
    let clients: Vec<Client> = servers.iter().map(impatient).collect();
    let mut losers = 0;
    for trial in 0..12 {
        let agent = format!("race-{trial}");
        let id = pending_everywhere(&clients, &agent).await;
        let start = Arc::new(tokio::sync::Barrier::new(3));
        // Grants and denials in every arrangement over the trials.
        let grants = [trial % 2 == 0, trial % 3 != 0, trial % 4 == 1];
        let tasks: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (c, id, start, grant) = (c.clone(), id.clone(), start.clone(), grants[i]);
                tokio::spawn(async move {
                    start.wait().await;
                    let r = c
                        .approve(pb::ApproveRequest {
                            approval_id: id.clone(),
                            grant,
                            reason: format!("replica {i}"),
                        })
                        .await;
                    // What the loser's own replica shows right after its answer.
                    let shown = c
                        .get_approval(pb::GetApprovalRequest { approval_id: id })
                        .await
                        .unwrap()
                        .approval
                        .unwrap()
                        .state;
                    (i, r.map(|r| r.approval.unwrap().state), shown)
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let won: Vec<i32> = results
            .iter()
            .filter_map(|(_, r, _)| r.as_ref().ok().copied())
            .collect();
        assert_eq!(won.len(), 1, "trial {trial}: one winner: {results:?}");
        let winner = won[0];
        for (i, r, shown) in &results {
            if let Err(e) = r {
                losers += 1;
                assert_eq!(
                    e.code(),
                    tonic::Code::FailedPrecondition,
                    "trial {trial} replica {i}: {e:?}"
                );
                assert_eq!(
                    *shown, winner,
                    "trial {trial} replica {i}: shows the winner at once"
                );
                // The agent presents the approval where the race was lost.
                let d = clients[*i]
                    .evaluate(&agent)
                    .tool("refund_order")
                    .approval_id(&id)
                    .send()
                    .await
                    .unwrap();
                assert_ne!(
                    d.outcome,
                    DecisionOutcome::PendingApproval,
                    "trial {trial}: {:?}",
                    d.reasons
                );
                if winner == pb::ApprovalState::Denied as i32 {
                    assert_eq!(d.reason().unwrap().code, "approval.denied", "trial {trial}");
                }
                break;
            }
        }
    }
    assert!(losers > 0);
}
