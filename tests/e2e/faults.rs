//! Faults the server must survive without a restart and without losing anything it
//! acknowledged: a full disk under the embedded store (a small tmpfs, so the test needs
//! root to mount it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_client::proto::{AuditFilter, VerifyAuditRequest};
use arbiter_client::{Client, DecisionOutcome};

use crate::harness::{
    arbiter, audit_head, eventually, query_all, serving, skip_on_postgres, spawn_server,
    ServerOptions, TestServer,
};

const POLICY: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: [read]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_calls: 1000000}
"#;

/// Reports a test that cannot run here, on stderr and in `$ARBITER_E2E_SKIP_LOG`;
/// under `CI=true` it fails instead (a missing capability is a failure there).
fn skip_or_fail(test: &str, why: &str) {
    let line = format!("SKIPPED: {test}: {why}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} cannot run under CI=true: {why}"
    );
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("ARBITER_E2E_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// A tmpfs of a few MiB mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts it, or says why it cannot (not root, no mount(8)).
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("arbiter-tmpfs-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (the test needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system: writes `fill-N` files until the kernel says ENOSPC.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0xA5u8; 16 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // The last partial page.
        while let Ok(n) = f.write(&chunk[..512]) {
            if n == 0 {
                break;
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}

/// Fails instead of retrying: each failure is seen.
fn impatient(server: &TestServer) -> Client {
    Client::builder(server.url())
        .retries(0)
        .disable_circuit_breaker()
        .timeout(Duration::from_secs(10))
        .connect_lazy()
        .unwrap()
}

/// What the load saw.
#[derive(Default)]
struct Load {
    /// (audit_seq, decision_id) of every decision a client received.
    acked: Mutex<Vec<(u64, String)>>,
    /// ALLOWs among them.
    allowed: AtomicUsize,
    /// Requests that got no decision, by status code.
    failures: Mutex<BTreeMap<String, usize>>,
}

impl Load {
    fn allowed(&self) -> usize {
        self.allowed.load(Ordering::SeqCst)
    }

    fn failed(&self) -> usize {
        self.failures.lock().unwrap().values().sum()
    }
}

/// Evaluates in a loop until `stop`, each with its own request id.
fn run_load(
    tag: &str,
    server: &TestServer,
    workers: usize,
    load: &Arc<Load>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let client = impatient(server);
            let (load, stop) = (load.clone(), stop.clone());
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let sent = client
                        .evaluate(format!("agent-{w}"))
                        .tool("read")
                        .request_id(format!("{tag}-w{w}-n{n}"))
                        .send()
                        .await;
                    match sent {
                        Ok(d) => {
                            if d.outcome == DecisionOutcome::Allow {
                                load.allowed.fetch_add(1, Ordering::SeqCst);
                            }
                            load.acked
                                .lock()
                                .unwrap()
                                .push((d.audit_seq, d.decision_id));
                        }
                        Err(e) => {
                            *load
                                .failures
                                .lock()
                                .unwrap()
                                .entry(format!("{:?}", e.code()))
                                .or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

/// Every acknowledged decision is at its seq in a gapless log that VerifyAudit and
/// `arbiter audit verify` accept.
async fn assert_log_holds(server: &TestServer, acked: &[(u64, String)]) {
    let client = server.client();
    let v = client
        .verify_audit(VerifyAuditRequest::default())
        .await
        .expect("VerifyAudit");
    assert!(v.ok, "VerifyAudit: {v:?}");
    let out = arbiter(&["audit", "verify", "--addr", &server.url()]).await;
    assert_eq!(out.code(), Some(0), "arbiter audit verify:\n{out}");
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
        .filter(|(seq, id)| !entries.get(seq).is_some_and(|c| c.contains(id.as_str())))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged decisions are missing: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// What the server must never log about its store, whatever the fault.
const NEVER_LOGGED: [&str; 4] = [
    "database is locked",
    "UNIQUE constraint failed",
    "is missing",
    "integrity fault",
];

#[tokio::test]
async fn a_full_disk_fails_closed_and_recovers_without_a_restart() {
    const TEST: &str = "faults::a_full_disk_fails_closed_and_recovers_without_a_restart";
    if skip_on_postgres(TEST, "the full disk is the embedded store's") {
        return;
    }
    let fs = match Tmpfs::mount("32m") {
        Ok(fs) => fs,
        Err(why) => return skip_or_fail(TEST, &why),
    };
    let mut server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .data_dir(fs.path().join("data")),
    )
    .await;
    let pid = server.pid();
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = run_load("disk", &server, 4, &load, &stop);
    eventually("100 allowed decisions", Duration::from_secs(60), || {
        let n = load.allowed();
        async move { (n >= 100).then_some(()) }
    })
    .await;

    let filler = fs.fill();
    let failed_before = load.failed();
    eventually(
        "health NOT_SERVING on the full disk",
        Duration::from_secs(20),
        || async { (!serving(&server).await).then_some(()) },
    )
    .await;
    // While the disk stays full, health stays NOT_SERVING (several rounds of the
    // monitor, with the load still failing).
    for i in 0..12 {
        assert!(
            !serving(&server).await,
            "health reported SERVING on a full disk (sample {i})\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        load.failed() > failed_before,
        "no request failed on the full disk"
    );
    let allowed_full = load.allowed();

    std::fs::remove_file(&filler).expect("free the space");
    eventually(
        "health SERVING once space is free",
        Duration::from_secs(30),
        || async { serving(&server).await.then_some(()) },
    )
    .await;
    eventually(
        "100 more allowed decisions",
        Duration::from_secs(60),
        || {
            let n = load.allowed();
            async move { (n >= allowed_full + 100).then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(server.pid(), pid, "recovered without a restart");
    let failures = load.failures.lock().unwrap().clone();
    assert!(
        failures.keys().all(|c| c == "Unavailable"),
        "a request that got no decision must get UNAVAILABLE: {failures:?}"
    );
    let acked = load.acked.lock().unwrap().clone();
    assert_log_holds(&server, &acked).await;
    let head = audit_head(&server.client()).await;

    // The shutdown message is true: the last checkpoint covers the head the log holds.
    server.stop().await;
    let log = server.log();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("audit writer stopped"))
        .expect("the audit writer's last message");
    assert!(
        last.contains("every committed entry is in the last signed checkpoint")
            && last.contains(&format!("head_seq={head} "))
            && last.ends_with(&format!("checkpoint_size={head}")),
        "{last}"
    );
    for bad in NEVER_LOGGED {
        assert!(
            !log.contains(bad),
            "the server logged {bad:?}\n{}",
            server.log_tail()
        );
    }
    // And the next start accepts the log (its head, tree, checkpoints, kept file).
    server.start().await;
    assert_log_holds(&server, &acked).await;
    eprintln!(
        "full disk: {} decisions acknowledged ({} allowed), failures while full {failures:?}, head {head}",
        acked.len(),
        load.allowed()
    );
}

/// Kill -9 cycles, each under load, each restart on the same data.
const CRASH_CYCLES: usize = 20;
/// Acknowledged decisions per cycle before the kill.
const ACKS_PER_CYCLE: usize = 30;

#[tokio::test]
async fn twenty_kill_9_cycles_under_load_lose_no_acknowledged_decision() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let mut acked: Vec<(u64, String)> = Vec::new();
    for cycle in 0..CRASH_CYCLES {
        let load = Arc::new(Load::default());
        let stop = Arc::new(AtomicBool::new(false));
        let workers = run_load(&format!("c{cycle}"), &server, 8, &load, &stop);
        eventually(
            &format!("cycle {cycle}: {ACKS_PER_CYCLE} acknowledged decisions"),
            Duration::from_secs(30),
            || {
                let n = load.acked.lock().unwrap().len();
                async move { (n >= ACKS_PER_CYCLE).then_some(()) }
            },
        )
        .await;
        // Killed with requests in flight: the workers are still sending.
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.unwrap();
        }
        acked.extend(load.acked.lock().unwrap().iter().cloned());
        server.start().await;
        assert_log_holds_quick(&server, &acked, cycle).await;
    }
    assert_log_holds(&server, &acked).await;
    eprintln!(
        "{CRASH_CYCLES} kill -9 cycles: {} acknowledged decisions, none lost; head {}",
        acked.len(),
        audit_head(&server.client()).await
    );
}

/// After one crash cycle: VerifyAudit accepts the log and every acknowledged decision
/// so far is at its seq (the CLI verifier runs once, at the end).
async fn assert_log_holds_quick(server: &TestServer, acked: &[(u64, String)], cycle: usize) {
    let client = server.client();
    let v = client
        .verify_audit(VerifyAuditRequest::default())
        .await
        .expect("VerifyAudit");
    assert!(v.ok, "cycle {cycle}: VerifyAudit after kill -9: {v:?}");
    let entries: BTreeMap<u64, String> = query_all(&client, AuditFilter::default())
        .await
        .into_iter()
        .map(|e| (e.seq, e.canonical))
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(seq, id)| !entries.get(seq).is_some_and(|c| c.contains(id.as_str())))
        .collect();
    assert!(
        lost.is_empty(),
        "cycle {cycle}: {} of {} acknowledged decisions lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// TTLs for the clock test: a reservation and a pending approval each live an hour.
const CLOCK_POLICY: &str = r#"
version: 1
defaults: {reservation_ttl: 1h, approval_ttl: 1h}
actions:
  - match: {tool: "refund_*"}
    approval: always
agents:
  - id: "*"
    tools: {allow: [read, refund_order]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "100.00"}
"#;

const T0: &str = "2030-06-01T12:00:00Z";

/// Unix ms of `T0` plus `minutes` (negative: before it).
fn at(minutes: i64) -> String {
    (crate::harness::ms(T0) + minutes * 60_000).to_string()
}

/// The server reads wall-clock time (`dev.clock_file` here, the system clock in
/// production) and nothing relies on a monotonic clock: expiries are absolute
/// instants. A step backwards therefore neither expires anything early nor moves an
/// expiry; audit timestamps follow the clock back, while sequence numbers, the chain,
/// the Merkle tree and the signed checkpoints keep growing and verify.
#[tokio::test]
async fn a_clock_stepped_backwards_keeps_ttls_expiry_checkpoints_and_seq_correct() {
    let mut server = spawn_server(ServerOptions::new().policy(CLOCK_POLICY).clock(T0)).await;
    let client = server.client();
    let reserved = client
        .evaluate("a")
        .tool("read")
        .cost_micro_usd(1_000)
        .send()
        .await
        .unwrap();
    assert!(reserved.allowed(), "{:?}", reserved.reasons);
    let pending = client
        .evaluate("a")
        .tool("refund_order")
        .send()
        .await
        .unwrap();
    assert_eq!(pending.outcome, DecisionOutcome::PendingApproval);
    let approval = pending.approval_id.clone().expect("an approval id");
    let seq_before = audit_head(&client).await;

    // Two hours back.
    server.set_time(&at(-120));
    let back = client.evaluate("a").tool("read").send().await.unwrap();
    assert!(back.allowed(), "{:?}", back.reasons);
    assert_eq!(back.audit_seq, seq_before + 1, "seq keeps counting up");
    // The reservation taken at T0 (expiring at T0 + 1h) is still open and settles.
    let settled = client
        .record(&reserved.decision_id)
        .cost_micro_usd(500)
        .send()
        .await
        .unwrap();
    assert!(!settled.reservation_expired, "{settled:?}");
    // A reservation taken now expires an hour from now, by the clock it read.
    let early = client
        .evaluate("a")
        .tool("read")
        .cost_micro_usd(1_000)
        .send()
        .await
        .unwrap();

    // Forward to just before the approval's expiry (T0 + 1h): still pending.
    server.set_time(&at(59));
    let still = client
        .evaluate("a")
        .tool("refund_order")
        .approval_id(&approval)
        .send()
        .await
        .unwrap();
    assert_eq!(
        still.outcome,
        DecisionOutcome::PendingApproval,
        "{:?}",
        still.reasons
    );
    // `early` (taken at T0 - 2h, so expiring at T0 - 1h) has expired.
    let late = client.record(&early.decision_id).send().await.unwrap();
    assert!(late.reservation_expired, "{late:?}");
    // Past T0 + 1h the approval expires, exactly as without the step.
    server.set_time(&at(61));
    let expired = client
        .evaluate("a")
        .tool("refund_order")
        .approval_id(&approval)
        .send()
        .await
        .unwrap();
    assert_eq!(
        expired.reason().map(|r| r.code.as_str()),
        Some("approval.expired"),
        "{:?}",
        expired.reasons
    );

    // Back again, below every timestamp so far, then a restart on that time.
    server.set_time(&at(-240));
    client.evaluate("a").tool("read").send().await.unwrap();
    let entries = query_all(&client, AuditFilter::default()).await;
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gapless, in order"
    );
    let ts: Vec<i64> = entries
        .iter()
        .map(|e| e.time.as_ref().map_or(0, |t| t.seconds * 1000))
        .collect();
    assert!(
        ts.windows(2).any(|w| w[1] < w[0]),
        "the audit timestamps follow the clock back: {ts:?}"
    );
    assert_log_holds(&server, &[]).await;
    let head = audit_head(&client).await;
    server.restart().await;
    let client = server.client();
    let v = client
        .verify_audit(VerifyAuditRequest::default())
        .await
        .unwrap();
    // (The start itself may append entries, e.g. the policy it loaded.)
    assert!(
        v.ok && v.head_seq >= head && v.checkpoint_size == v.head_seq,
        "head before the restart {head}: {v:?}"
    );
    let after = client.evaluate("a").tool("read").send().await.unwrap();
    assert!(
        after.audit_seq > head,
        "seq keeps counting up after a restart"
    );
    assert_log_holds(&server, &[(after.audit_seq, after.decision_id)]).await;
}
