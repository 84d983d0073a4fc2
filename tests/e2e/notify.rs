//! Outbound webhooks against a real local HTTP receiver: Standard Webhooks signatures
//! (checked here with our own HMAC, not the server's code), approval and halt events,
//! a receiver that fails and comes back (nothing lost, each id delivered once), a
//! receiver that hangs (Evaluate still answers), and the Slack format.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbiter_client::{proto as pb, ActionOutcome, DecisionOutcome};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::harness::{spawn_server, ServerOptions, TestServer};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const POLICY: &str = r#"
version: 1
defaults: {approval_ttl: 1h}
actions:
  - match: {tool: "refund_*"}
    approval: always
agents:
  - id: "bot*"
    tools: {allow: ["*"]}
"#;

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// One request the receiver saw, and what it answered.
#[derive(Debug, Clone)]
struct Hit {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    status: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    mode: Arc<AtomicU8>,
    hanging: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
}

async fn hook(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mode = rx.mode.load(Ordering::SeqCst);
    if mode == HANG {
        rx.hanging.fetch_add(1, Ordering::SeqCst);
        rx.release.notified().await;
        rx.hanging.fetch_sub(1, Ordering::SeqCst);
    }
    let status = if mode == FAIL { 500 } else { 200 };
    rx.hits.lock().unwrap().push(Hit {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body: body.to_vec(),
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let rx = Receiver::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(rx.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (rx, addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits for a 2xx delivery of an event of type `ty` whose data matches `pred`.
    async fn delivered(&self, ty: &str, pred: impl Fn(&Value) -> bool) -> Hit {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(hit) = self
                .hits()
                .into_iter()
                .find(|h| h.status == 200 && h.json()["type"] == ty && pred(&h.json()["data"]))
            {
                return hit;
            }
            assert!(
                Instant::now() < deadline,
                "no {ty} delivered; the receiver saw {:#?}",
                self.hits()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The Standard Webhooks check, written here from the spec: HMAC-SHA256 with the
/// base64-decoded key after `whsec_`, over "{id}.{timestamp}.{body}", compared with
/// each space-separated `v1,<base64>` signature.
fn verifies(hit: &Hit, secret: &str) -> bool {
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", hit.id, hit.timestamp).as_bytes());
    mac.update(&hit.body);
    let expected = B64.encode(mac.finalize().into_bytes());
    hit.signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

fn config(dir: &std::path::Path, addr: SocketAddr, format: &str, timeout_ms: u64) -> String {
    let secret_file = dir.join("hook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let path = dir.join("arbiter.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[notifications]
console_url = "http://console.example/arbiter"
retry_initial_ms = 100
retry_max_delay_ms = 400

[[notifications.endpoints]]
name = "hook"
url = "http://{addr}/hook"
secret_file = "{}"
format = "{format}"
timeout_ms = {timeout_ms}
"#,
            secret_file.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

async fn server_with_hook(
    format: &str,
    timeout_ms: u64,
) -> (TestServer, Receiver, tempfile::TempDir) {
    server_with_policy_and_hook(POLICY, format, timeout_ms).await
}

async fn server_with_policy_and_hook(
    policy: &str,
    format: &str,
    timeout_ms: u64,
) -> (TestServer, Receiver, tempfile::TempDir) {
    let (rx, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), addr, format, timeout_ms);
    let server = spawn_server(
        ServerOptions::new()
            .policy(policy)
            .env("ARBITER_CONFIG", &cfg),
    )
    .await;
    (server, rx, dir)
}

fn target(scope: pb::HaltScope, agent: &str) -> Option<pb::HaltTarget> {
    Some(pb::HaltTarget {
        scope: scope as i32,
        agent_id: agent.into(),
        session_id: String::new(),
    })
}

async fn halt(c: &arbiter_client::Client, agent: &str, reason: &str) {
    c.halt(pb::HaltRequest {
        target: target(pb::HaltScope::Agent, agent),
        mode: pb::HaltMode::HaltAll as i32,
        reason: reason.into(),
    })
    .await
    .unwrap();
}

async fn resume(c: &arbiter_client::Client, agent: &str) {
    c.resume(pb::ResumeRequest {
        target: target(pb::HaltScope::Agent, agent),
        reason: "drill over".into(),
    })
    .await
    .unwrap();
}

fn series(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not exported:\n{body}"))
}

#[tokio::test]
async fn signed_events_survive_a_receiver_outage_and_a_hung_receiver_never_holds_up_evaluate() {
    // A long timeout, so the hung receiver below really holds the worker.
    let (server, rx, _dir) = server_with_hook("standard", 60_000).await;
    let c = server.client();

    // An approval request: the event arrives, signed, with the approval's details.
    let d = c
        .evaluate("bot-1")
        .session("s1")
        .tool("refund_order")
        .send()
        .await
        .unwrap();
    assert_eq!(d.outcome, DecisionOutcome::PendingApproval);
    let approval = d.approval_id.clone().unwrap();
    let requested = rx
        .delivered("approval.requested", |d| {
            d["approval_id"] == approval.as_str()
        })
        .await;
    assert!(verifies(&requested, SECRET), "{requested:?}");
    assert!(!verifies(
        &requested,
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    ));
    let now = chrono::Utc::now().timestamp();
    let ts: i64 = requested.timestamp.parse().unwrap();
    assert!(
        (now - ts).abs() < 60,
        "webhook-timestamp is the attempt's Unix time: {ts}"
    );
    let body = requested.json();
    assert_eq!(body["data"]["tool"], "refund_order");
    assert_eq!(body["data"]["agent_id"], "bot-1");
    assert_eq!(body["data"]["audit_seq"], d.audit_seq);
    assert_eq!(
        body["data"]["console_url"],
        format!("http://console.example/arbiter/approvals/{approval}")
    );
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    // The decision.
    c.approve(pb::ApproveRequest {
        approval_id: approval.clone(),
        grant: true,
        reason: "fine".into(),
    })
    .await
    .unwrap();
    let decided = rx
        .delivered("approval.decided", |d| {
            d["approval_id"] == approval.as_str()
        })
        .await;
    assert!(verifies(&decided, SECRET));
    assert_eq!(decided.json()["data"]["decision"], "granted");

    // Halt and resume.
    halt(&c, "bot-1", "drill").await;
    rx.delivered("halt.engaged", |d| d["target"] == "agent:bot-1")
        .await;
    resume(&c, "bot-1").await;
    rx.delivered("halt.released", |d| d["target"] == "agent:bot-1")
        .await;

    // The receiver fails: events keep being retried, then all arrive once it is back.
    rx.mode.store(FAIL, Ordering::SeqCst);
    for agent in ["bot-2", "bot-3"] {
        halt(&c, agent, "outage drill").await;
        resume(&c, agent).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.hits().iter().filter(|h| h.status == 500).count() < 3 {
        assert!(
            Instant::now() < deadline,
            "no retries seen: {:#?}",
            rx.hits()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rx.mode.store(OK, Ordering::SeqCst);
    for agent in ["bot-2", "bot-3"] {
        let t = format!("agent:{agent}");
        rx.delivered("halt.engaged", |d| d["target"] == t.as_str())
            .await;
        rx.delivered("halt.released", |d| d["target"] == t.as_str())
            .await;
    }

    // The receiver hangs: the worker waits on it, Evaluate does not.
    rx.mode.store(HANG, Ordering::SeqCst);
    halt(&c, "bot-4", "hang drill").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.hanging.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the webhook never reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..5 {
        let d = c
            .evaluate("bot-5")
            .tool(format!("read_{i}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert_eq!(d.outcome, DecisionOutcome::Allow);
    }
    assert_eq!(
        rx.hanging.load(Ordering::SeqCst),
        1,
        "the receiver was still holding the webhook while Evaluate answered"
    );
    rx.mode.store(OK, Ordering::SeqCst);
    rx.release.notify_waiters();
    rx.delivered("halt.engaged", |d| d["target"] == "agent:bot-4")
        .await;

    // Nothing lost, each event delivered exactly once; repeats only after failures,
    // with the same id and body.
    let hits = rx.hits();
    let mut by_id: BTreeMap<&str, Vec<&Hit>> = BTreeMap::new();
    for h in &hits {
        assert!(verifies(h, SECRET), "every attempt is signed: {h:?}");
        by_id.entry(h.id.as_str()).or_default().push(h);
    }
    for (id, attempts) in &by_id {
        let ok = attempts.iter().filter(|h| h.status == 200).count();
        assert_eq!(ok, 1, "{id} delivered {ok} times: {attempts:#?}");
        assert!(
            attempts.iter().all(|h| h.body == attempts[0].body),
            "{id}: one body"
        );
    }
    let types: BTreeSet<String> = by_id
        .values()
        .map(|a| a[0].json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "approval.decided",
            "approval.requested",
            "halt.engaged",
            "halt.released"
        ]
        .map(String::from)
        .into()
    );
    // 1 request + 1 decision + 4 engaged + 3 released.
    assert_eq!(by_id.len(), 9, "{by_id:#?}");

    let (_, metrics) = server.scrape_metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"arbiter_webhook_deliveries_total{endpoint="hook",outcome="delivered"}"#
        ),
        9.0
    );
    assert!(
        series(
            &metrics,
            r#"arbiter_webhook_deliveries_total{endpoint="hook",outcome="failed"}"#
        ) >= 3.0
    );
    assert_eq!(
        series(
            &metrics,
            r#"arbiter_webhook_dead_letters_total{endpoint="hook",reason="retries_exhausted"}"#
        ),
        0.0
    );
    assert_eq!(
        series(&metrics, r#"arbiter_webhook_queue_depth{endpoint="hook"}"#),
        0.0
    );
}

#[tokio::test]
async fn a_restart_resumes_from_the_cursor_so_an_event_queued_at_the_stop_is_not_lost() {
    let (mut server, rx, _dir) = server_with_hook("standard", 1000).await;
    let c = server.client();
    rx.mode.store(FAIL, Ordering::SeqCst);
    halt(&c, "bot-1", "before the stop").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.hits().is_empty() {
        assert!(Instant::now() < deadline, "no attempt before the stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
    let failed_id = rx.hits()[0].id.clone();
    rx.mode.store(OK, Ordering::SeqCst);
    server.start().await;
    let hit = rx
        .delivered("halt.engaged", |d| d["target"] == "agent:bot-1")
        .await;
    assert_eq!(
        hit.id, failed_id,
        "the same event, with the same webhook-id"
    );
}

#[tokio::test]
async fn the_slack_format_is_an_incoming_webhook_message_with_escaped_text_and_a_console_link() {
    let (server, rx, _dir) = server_with_hook("slack", 5000).await;
    let c = server.client();
    let d = c
        .evaluate("bot-1")
        .tool("refund_order")
        .send()
        .await
        .unwrap();
    let approval = d.approval_id.unwrap();
    // The reason is free text a human reads in Slack: it must not ping or link.
    c.approve(pb::ApproveRequest {
        approval_id: approval.clone(),
        grant: false,
        reason: "<!channel> see <https://evil.example|this> & that".into(),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let decided = loop {
        let found = rx.hits().into_iter().find(|h| {
            h.json()["text"]
                .as_str()
                .is_some_and(|t| t.contains("denied"))
        });
        if let Some(h) = found {
            break h;
        }
        assert!(Instant::now() < deadline, "{:#?}", rx.hits());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        verifies(&decided, SECRET),
        "Slack deliveries are signed too"
    );
    let v = decided.json();
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("&lt;!channel&gt; see &lt;https://evil.example|this&gt; &amp; that"),
        "{text}"
    );
    assert!(!text.contains('<'), "{text}");
    assert_eq!(v["blocks"][0]["type"], "section");
    assert_eq!(v["blocks"][0]["text"]["type"], "mrkdwn");
    assert_eq!(v["blocks"][0]["text"]["text"], text);
    assert_eq!(
        v["blocks"][1]["elements"][0]["text"],
        format!(
            "<http://console.example/arbiter/approvals/{approval}|Open in the Arbiter console>"
        )
    );
    let requested = rx
        .hits()
        .into_iter()
        .find(|h| {
            h.json()["text"]
                .as_str()
                .is_some_and(|t| t.contains("Approval requested"))
        })
        .expect("the request was announced first");
    assert!(requested.json()["text"]
        .as_str()
        .unwrap()
        .contains("tool `refund_order`"));
}

/// `budget.threshold`: a Record that carries spend past a share of a cap (the default
/// shares 0.8 and 1.0) announces that share once per window; spend below a share, and
/// further spend past a share already announced, announce nothing.
#[tokio::test]
async fn a_budget_crossing_a_share_of_its_cap_is_announced_once() {
    const BUDGET: &str = r#"
version: 1
agents:
  - id: "bot*"
    tools: {allow: ["*"]}
budgets:
  - {name: daily, scope: agent, period: day, max_usd: "1.00"}
"#;
    let (server, rx, _dir) = server_with_policy_and_hook(BUDGET, "standard", 5000).await;
    let c = server.client();
    let spend = |usd: u64| {
        let c = c.clone();
        async move {
            let d = c
                .evaluate("bot-1")
                .tool("search")
                .cost_micro_usd(usd)
                .send()
                .await
                .unwrap();
            assert_eq!(d.outcome, DecisionOutcome::Allow, "{d:?}");
            c.record(&d.decision_id)
                .outcome(ActionOutcome::Success)
                .cost_micro_usd(usd)
                .send()
                .await
                .unwrap();
        }
    };
    spend(500_000).await; // 50 %: nothing
    spend(350_000).await; // 85 %: the 0.8 share
    let hit = rx
        .delivered("budget.threshold", |d| d["share"] == 0.8)
        .await;
    assert!(verifies(&hit, SECRET));
    let data = &hit.json()["data"];
    assert_eq!(data["budget"], "daily");
    assert_eq!(data["dimension"], "micro_usd");
    assert_eq!(
        (data["spent"].as_u64(), data["cap"].as_u64()),
        (Some(850_000), Some(1_000_000))
    );
    spend(50_000).await; // 90 %: 0.8 again, not announced twice
    spend(100_000).await; // 100 %: the 1.0 share
    rx.delivered("budget.threshold", |d| d["share"] == 1.0)
        .await;
    // A halt after it: once it is delivered, everything before it was dispatched.
    halt(&c, "bot-1", "fence").await;
    rx.delivered("halt.engaged", |_| true).await;
    let crossings: Vec<f64> = rx
        .hits()
        .iter()
        .filter(|h| h.status == 200 && h.json()["type"] == "budget.threshold")
        .map(|h| h.json()["data"]["share"].as_f64().unwrap())
        .collect();
    assert_eq!(crossings, vec![0.8, 1.0], "one event per share crossed");
}

#[tokio::test]
async fn with_two_replicas_one_delivers_each_event_and_the_other_takes_over_when_it_stops() {
    use crate::harness::{
        create_database, eventually, postgres_admin_url, skip_unless_postgres, with_database,
    };
    if skip_unless_postgres(
        "notify::with_two_replicas_one_delivers_each_event_and_the_other_takes_over_when_it_stops",
    ) {
        return;
    }
    let (rx, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), addr, "standard", 1000);
    let url = with_database(&postgres_admin_url(), &create_database());
    let keys = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let opts = ServerOptions::new()
            .policy(POLICY)
            .database_url(&url)
            .data_dir(keys.path())
            .env("ARBITER_CONFIG", &cfg);
        servers.push(spawn_server(opts).await);
    }
    let holds = |s: &TestServer| s.log().contains("holds the notifier lease");
    let leader = eventually(
        "one replica holds the lease",
        Duration::from_secs(10),
        || {
            let found = servers.iter().position(holds);
            async move { found }
        },
    )
    .await;
    // An event committed through each replica: each reaches the receiver once.
    for (i, s) in servers.iter().enumerate() {
        halt(&s.client(), &format!("bot-r{i}"), "drill").await;
    }
    for i in 0..2 {
        let target = format!("agent:bot-r{i}");
        rx.delivered("halt.engaged", |d| d["target"] == target.as_str())
            .await;
    }
    // A replica delivering too would have sent its copies by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids: Vec<String> = rx.hits().into_iter().map(|h| h.id).collect();
    assert_eq!(
        ids.len(),
        2,
        "each event once, not once per replica: {ids:?}"
    );
    assert!(
        !holds(&servers[1 - leader]),
        "both replicas claim the lease"
    );

    // The holder stops: the other takes the lease over and resumes from its cursor.
    servers[leader].stop().await;
    let other = &servers[1 - leader];
    halt(&other.client(), "bot-after", "after the hand-over").await;
    rx.delivered("halt.engaged", |d| d["target"] == "agent:bot-after")
        .await;
    assert!(holds(other), "{}", other.log());
    let hits = rx.hits();
    let unique: BTreeSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(
        (hits.len(), unique.len()),
        (3, 3),
        "nothing lost or repeated across the hand-over: {hits:#?}"
    );
}
