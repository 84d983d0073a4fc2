//! One behaviour contract for both `Store` backends, run in process (the pattern of
//! Cerbos's and Atuin's store suites): every case below is written once, as a function
//! over a [`Backend`], and `conformance!` instantiates it twice, as `sqlite::NAME` (a
//! file in a fresh temporary directory, always) and `postgres::NAME` (a fresh database
//! of its own on the cluster at `$ARBITER_E2E_DATABASE_URL`, dropped afterwards, so
//! cases never see each other). `both::same_script_same_state` runs one script on both
//! and compares everything they return.
//!
//! The cases assert literal expected values, the same on both backends, wherever the
//! contract says they agree. Where a backend legitimately lacks a capability (the shared
//! store's sequencer, leases, delivery cursors and control refresh exist only on
//! PostgreSQL; the embedded store's single server decides those in memory) the case
//! asserts each backend's own documented behaviour and says so.
//!
//! The PostgreSQL databases are created with an ICU `en-US` collation when the cluster
//! has ICU (a linguistic order, as most production databases have), so an `ORDER BY`
//! that leaned on the database's collation would sort differently from SQLite here.
//!
//! Without `$ARBITER_E2E_DATABASE_URL` the `postgres::` cases do not run: each says so
//! on stderr and in `$ARBITER_E2E_SKIP_LOG` when that is set (scripts/test.sh runs them
//! in its PostgreSQL step); with neither, under `CI=true` they fail instead.
//!
//!   cargo test -p arbiter-server --test store_conformance --locked
//!   URL=$(scripts/pg-cluster.sh start /tmp/pg) ARBITER_E2E_DATABASE_URL=$URL \
//!     cargo test -p arbiter-server --test store_conformance --locked

use arbiter_server::audit::canonical::canonical_entry;
use arbiter_server::audit::chain::KeyStatus;
use arbiter_server::audit::merkle::{leaf_hash, Frontier};
use arbiter_server::audit::refusal::Refusal;
use arbiter_server::audit::verify::Verifier;
use arbiter_server::audit::{EntryDraft, HmacKey, KeyRing, SealedEntry, GENESIS};
use arbiter_server::domain::{Role, TlsIdentity, TrustLevel};
use arbiter_server::state::{
    Amounts, Approval, ApprovalState, CandidateState, ConsentGrant, CounterKey, Halt, HaltMode,
    HaltTarget, OpenDecision, PinnedDefinition, PresenceStatus, Reservation, ToolPin,
    TrustAssignment,
};
use arbiter_server::store::admission::{Admission, Verdict};
use arbiter_server::store::{
    AuditQuery, BudgetGuard, CheckpointRow, CommitUnit, PgStore, PresenceRow, PrincipalRow,
    SqliteStore, StateImage, StateOp, Store, StoreError, TreeUpdate,
};
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------
// Backends

/// The PostgreSQL step of scripts/test.sh sets this (and `ARBITER_E2E_DATABASE=postgres`)
/// to the admin URL of its throwaway cluster; the e2e harness reads the same variables.
const PG_URL_VAR: &str = "ARBITER_E2E_DATABASE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// Where one case's store lives; every `open` is a new handle on the same data.
struct Backend {
    kind: Kind,
    dir: Option<tempfile::TempDir>,
    url: Option<String>,
}

impl Backend {
    fn is_pg(&self) -> bool {
        self.kind == Kind::Postgres
    }

    /// Opens the store and applies the migrations, as the server does at start.
    async fn open(&self) -> Arc<dyn Store> {
        match self.kind {
            Kind::Sqlite => {
                let path = self
                    .dir
                    .as_ref()
                    .expect("a directory")
                    .path()
                    .join("arbiter.db");
                let s = SqliteStore::open(&path, false).await.expect("open SQLite");
                s.migrate().await.expect("migrate SQLite");
                Arc::new(s)
            }
            Kind::Postgres => Arc::new(self.open_pg().await),
        }
    }

    async fn open_pg(&self) -> PgStore {
        let s = PgStore::open(self.url.as_deref().expect("a database URL"))
            .await
            .expect("open PostgreSQL");
        s.migrate().await.expect("migrate PostgreSQL");
        s
    }

    /// A clean stop and a new start on the same data.
    async fn reopen(&self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        store.close().await.expect("close");
        drop(store);
        self.open().await
    }
}

/// The cluster's admin URL, or `None` (reported) when the PostgreSQL half cannot run.
#[allow(clippy::disallowed_macros)] // The suite's own fixed text, nothing an agent chose.
fn pg_admin_url(case: &str) -> Option<String> {
    if let Ok(url) = std::env::var(PG_URL_VAR) {
        if !url.is_empty() {
            return Some(url);
        }
    }
    assert!(
        std::env::var("ARBITER_E2E_DATABASE").as_deref() != Ok("postgres"),
        "ARBITER_E2E_DATABASE=postgres needs {PG_URL_VAR} (scripts/pg-cluster.sh start)"
    );
    let line = format!(
        "SKIPPED on sqlite: store_conformance {case}: needs PostgreSQL ({PG_URL_VAR}, scripts/pg-cluster.sh start)"
    );
    match std::env::var_os("ARBITER_E2E_SKIP_LOG") {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open $ARBITER_E2E_SKIP_LOG");
            writeln!(f, "{line}").expect("write $ARBITER_E2E_SKIP_LOG");
        }
        None => assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{case} cannot run under CI=true: {PG_URL_VAR} is unset and no \
             ARBITER_E2E_SKIP_LOG records the skip"
        ),
    }
    eprintln!("{line}");
    None
}

fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!("arbiter_conf_{}_{n}_{nanos}", std::process::id())
}

fn with_database(admin: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin).expect("a postgres:// URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A fresh database on the cluster (ICU `en-US` collation when the cluster has ICU).
async fn create_database(admin: &str) -> (String, String) {
    let name = unique_name();
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("connect to the PostgreSQL cluster");
    let icu = sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    )))
    .execute(&mut conn)
    .await;
    if icu.is_err() {
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
    }
    let _ = conn.close().await;
    (with_database(admin, &name), name)
}

async fn drop_database(admin: &str, name: &str) {
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("connect to the PostgreSQL cluster");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .expect("DROP DATABASE");
    let _ = conn.close().await;
}

/// Runs one case on one backend; a PostgreSQL database is dropped whatever the outcome.
async fn run<F, Fut>(kind: Kind, case: &'static str, body: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (backend, cleanup) = match kind {
        Kind::Sqlite => (
            Backend {
                kind,
                dir: Some(tempfile::tempdir().expect("a temporary directory")),
                url: None,
            },
            None,
        ),
        Kind::Postgres => {
            let Some(admin) = pg_admin_url(&format!("postgres::{case}")) else {
                return;
            };
            let (url, name) = create_database(&admin).await;
            (
                Backend {
                    kind,
                    dir: None,
                    url: Some(url),
                },
                Some((admin, name)),
            )
        }
    };
    let outcome = tokio::spawn(body(backend)).await;
    if let Some((admin, name)) = cleanup {
        drop_database(&admin, &name).await;
    }
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("{case} did not finish: {e}");
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::run(crate::Kind::Sqlite, stringify!($case), crate::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::run(crate::Kind::Postgres, stringify!($case), crate::$case).await;
                }
            )*
        }
    };
}

conformance!(
    migrate_twice_on_an_empty_store,
    audit_batch_reads_back_byte_for_byte,
    chain_continues_across_reopen,
    stale_sequence_numbers_are_refused,
    audit_query_filters_and_order,
    failed_batch_leaves_log_and_state_as_they_were,
    admission_refusals_write_nothing,
    admission_counts_earlier_submissions_of_the_batch,
    budget_reservations_and_settlement,
    open_decisions,
    consent_trust_and_operators,
    halts_and_watchdog_marks,
    approvals_and_tool_pins,
    principals_and_api_keys,
    policy_loads_and_the_published_bundle,
    presence_moves_only_forward,
    sightings_of_one_agent_within_one_batch,
    replayed_request_id,
    tree_nodes_and_checkpoints,
    delivery_cursors,
    leases,
    shared_store_capabilities,
);

// ---------------------------------------------------------------------------------
// The audit log, sealed for real (HMAC chain, Merkle nodes, checkpoint rows)

fn test_key() -> HmacKey {
    let secret: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    HmacKey::new(&secret, KeyStatus::Active).expect("a strong test key")
}

/// The writer's side of the chain: what the batcher keeps in memory.
#[derive(Clone)]
struct Log {
    key: HmacKey,
    seq: u64,
    prev: [u8; 32],
    frontier: Frontier,
}

impl Log {
    fn new() -> Self {
        Self {
            key: test_key(),
            seq: 0,
            prev: *GENESIS,
            frontier: Frontier::default(),
        }
    }

    /// Picks the chain up from what the store holds, as a server does at start.
    async fn resume(store: &dyn Store) -> Self {
        let (seq, prev) = match store.audit_head().await.expect("audit head") {
            Some((seq, mac)) => (seq, decode32(&mac)),
            None => (0, *GENESIS),
        };
        let size = store.tree_size().await.expect("tree size");
        assert_eq!(size, seq, "one stored leaf per entry");
        let mut wanted = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                wanted.push((level, start >> level));
                start += 1u64 << level;
            }
        }
        let nodes = store.nodes(&wanted).await.expect("frontier nodes");
        let frontier = Frontier::at(size, &mut |l, i| nodes.get(&(l, i)).copied())
            .expect("every frontier node is stored");
        Self {
            key: test_key(),
            seq,
            prev,
            frontier,
        }
    }

    /// Seals `items` after the head, without moving it: the batch and the log it leads to.
    fn seal(&self, items: Vec<(EntryDraft, Vec<StateOp>)>) -> (Self, Vec<CommitUnit>, TreeUpdate) {
        let mut next = self.clone();
        let mut units = Vec::new();
        let mut nodes = Vec::new();
        for (draft, ops) in items {
            next.seq += 1;
            let body = draft.body.canonical().expect("a canonical body");
            let canonical = canonical_entry(&draft, body, next.seq, &next.key.id);
            let mac = next.key.mac(&next.prev, canonical.as_bytes());
            next.prev = mac;
            nodes.extend(next.frontier.push(leaf_hash(canonical.as_bytes())));
            units.push(CommitUnit {
                entry: SealedEntry {
                    seq: next.seq,
                    ts_ms: draft.ts_ms,
                    kind: draft.kind,
                    agent_id: draft.agent_id,
                    session_id: draft.session_id,
                    outcome: draft.outcome,
                    key_id: next.key.id.clone(),
                    canonical,
                    mac: hex::encode(mac),
                },
                ops,
            });
        }
        let checkpoint = units.last().map(|u| {
            let root = hex::encode(next.frontier.root());
            CheckpointRow {
                size: next.frontier.size,
                note: format!("conformance\n{}\n{root}\n", next.frontier.size),
                root_hex: root,
                ts_ms: u.entry.ts_ms,
            }
        });
        (next, units, TreeUpdate { nodes, checkpoint })
    }

    /// Seals and commits one batch; the head moves only when the commit succeeds.
    async fn commit(
        &mut self,
        store: &dyn Store,
        items: Vec<(EntryDraft, Vec<StateOp>)>,
    ) -> Result<Vec<SealedEntry>, StoreError> {
        let (next, units, tree) = self.seal(items);
        store.commit(&units, &tree).await?;
        *self = next;
        Ok(units.into_iter().map(|u| u.entry).collect())
    }

    /// Commits one batch of units carrying only these ops, one entry each.
    async fn ops(&mut self, store: &dyn Store, ops: Vec<Vec<StateOp>>) -> Vec<SealedEntry> {
        let ts = 1_000 + self.seq as i64;
        let items = ops
            .into_iter()
            .map(|ops| (draft(ts, "admin", "a1", "", "ok"), ops))
            .collect();
        self.commit(store, items).await.expect("commit")
    }
}

fn decode32(h: &str) -> [u8; 32] {
    <[u8; 32]>::try_from(hex::decode(h).expect("hex")).expect("32 bytes")
}

fn draft(ts_ms: i64, kind: &str, agent: &str, session: &str, outcome: &str) -> EntryDraft {
    EntryDraft {
        ts_ms,
        kind: kind.into(),
        agent_id: agent.into(),
        session_id: session.into(),
        outcome: outcome.into(),
        body: json!({ "note": format!("{kind} by {agent}") }).into(),
    }
}

fn plain(ds: Vec<EntryDraft>) -> Vec<(EntryDraft, Vec<StateOp>)> {
    ds.into_iter().map(|d| (d, Vec::new())).collect()
}

async fn all_entries(store: &dyn Store) -> Vec<SealedEntry> {
    store
        .audit_range(1, u64::MAX >> 1, u32::MAX)
        .await
        .expect("audit range")
}

fn verify_chain(entries: &[SealedEntry]) {
    let keys = KeyRing::new(vec![test_key()]).expect("a key ring");
    let mut v = Verifier::new(&keys, 1, *GENESIS);
    v.feed_all(entries).expect("the stored chain verifies");
    assert_eq!(v.checked, entries.len() as u64);
}

// ---------------------------------------------------------------------------------
// Comparable views of what a store returns

/// Sorted debug forms: `load` returns rows in no particular order (memory rebuilds maps
/// from them), so only the set is part of the contract.
fn sorted<T: Debug>(items: &[T]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    v.sort();
    v
}

#[derive(Debug, PartialEq, Eq, Default)]
struct Image {
    trust: Vec<String>,
    consent: Vec<String>,
    counters: Vec<String>,
    reservations: Vec<String>,
    open_decisions: Vec<String>,
    agents: Vec<String>,
    sessions: Vec<String>,
    replies: Vec<String>,
    halts: Vec<String>,
    approvals: Vec<String>,
    operators: Vec<String>,
    tool_pins: Vec<String>,
    watchdog_marks: Vec<String>,
    presence: Vec<String>,
}

fn image(img: &StateImage) -> Image {
    Image {
        trust: sorted(&img.trust),
        consent: sorted(&img.consent),
        counters: sorted(&img.counters),
        reservations: sorted(&img.reservations),
        open_decisions: sorted(&img.open_decisions),
        agents: sorted(&img.agents),
        sessions: sorted(&img.sessions),
        replies: sorted(&img.replies),
        halts: sorted(&img.halts),
        approvals: sorted(&img.approvals),
        operators: sorted(&img.operators),
        tool_pins: sorted(&img.tool_pins),
        watchdog_marks: sorted(&img.watchdog_marks),
        presence: sorted(&img.presence),
    }
}

/// Everything before time 0 counts as unexpired: the whole stored state.
async fn load_all(store: &dyn Store) -> Image {
    image(&store.load(0, i64::MIN).await.expect("load"))
}

/// Everything a store returns through the trait, to show a refused write left no trace.
#[derive(Debug, PartialEq)]
struct Snapshot {
    head: Option<(u64, String)>,
    count: u64,
    tree_size: u64,
    checkpoint: Option<CheckpointRow>,
    entries: Vec<SealedEntry>,
    image: Image,
    principals: Vec<PrincipalRow>,
    policy_loads: Vec<String>,
    published: Option<String>,
    /// PostgreSQL: the control snapshot and its head.
    control: Option<Control>,
}

/// A control snapshot: its head, its image, its principals and published policy.
type Control = (u64, Image, Option<Vec<PrincipalRow>>, Option<String>);

async fn snapshot(store: &dyn Store) -> Snapshot {
    let control = match store.replicated() {
        Some(pg) => {
            let (seq, img) = pg.load_control(0).await.expect("load control");
            Some((seq, image(&img), img.principals, img.published_policy))
        }
        None => None,
    };
    Snapshot {
        head: store.audit_head().await.expect("head"),
        count: store.audit_count().await.expect("count"),
        tree_size: store.tree_size().await.expect("tree size"),
        checkpoint: store.checkpoint(None).await.expect("checkpoint"),
        entries: all_entries(store).await,
        image: load_all(store).await,
        principals: store.principals().await.expect("principals"),
        policy_loads: sorted(&store.policy_loads(1_000).await.expect("policy loads")),
        published: store
            .published_policy()
            .await
            .expect("published policy")
            .map(|p| format!("{p:?}")),
        control,
    }
}

// ---------------------------------------------------------------------------------
// Fixtures

fn key(budget: &str, scope: &str, window: i64) -> CounterKey {
    CounterKey {
        budget: budget.into(),
        scope_key: scope.into(),
        window_start_ms: window,
    }
}

fn amounts(micro_usd: u64, tokens: u64, calls: u64) -> Amounts {
    Amounts {
        micro_usd,
        tokens,
        calls,
    }
}

fn reservation(id: &str, keys: &[CounterKey], a: Amounts, expires_ms: i64) -> Reservation {
    Reservation {
        id: id.into(),
        decision_id: format!("d-{id}"),
        agent_id: "a1".into(),
        keys: keys.to_vec(),
        amounts: a,
        created_ms: 1_000,
        expires_ms,
    }
}

fn approval(id: &str, state: ApprovalState) -> Approval {
    Approval {
        id: id.into(),
        agent_id: "a1".into(),
        session_id: "s1".into(),
        action_digest: "sha256:abc".into(),
        action_summary: "send_email to «ops» \"quoted\"".into(),
        policy_version: "v1".into(),
        reason: "needs a human".into(),
        state,
        requested_ms: 1_000,
        expires_ms: 100_000,
        decided_by: if state == ApprovalState::Pending {
            String::new()
        } else {
            "alice".into()
        },
        decision_reason: String::new(),
        decided_ms: (state != ApprovalState::Pending).then_some(2_000),
        reservation: None,
        decision_id: format!("d-{id}"),
        action_json: r#"{"tool":"send_email"}"#.into(),
    }
}

fn halt(target: HaltTarget, mode: HaltMode, reason: &str, at: i64) -> Halt {
    Halt {
        target,
        mode,
        reason: reason.into(),
        engaged_by: "ops".into(),
        engaged_ms: at,
    }
}

fn pinned(digest: &str, by: &str) -> PinnedDefinition {
    PinnedDefinition {
        digest: digest.into(),
        definition: format!(r#"{{"name":"{digest}"}}"#),
        by: by.into(),
        at_ms: 1_000,
    }
}

fn touch(agent: &str, first: i64, last: i64, allowed: Option<i64>) -> StateOp {
    StateOp::TouchAgent {
        agent_id: agent.into(),
        first_seen_ms: first,
        last_seen_ms: last,
        last_allowed_ms: allowed,
    }
}

fn presence(agent: &str, status: PresenceStatus, at: i64) -> PresenceRow {
    PresenceRow {
        agent_id: agent.into(),
        status,
        last_heartbeat_ms: at,
        silence_halted_ms: None,
    }
}

fn principal(name: &str, key_hash: Option<&str>, tls: Option<&str>) -> PrincipalRow {
    PrincipalRow {
        name: name.into(),
        roles: vec![Role::Operator, Role::Agent],
        agents: vec!["a1".into(), "team-*".into()],
        key_hash: key_hash.map(Into::into),
        key_prefix: key_hash.map(|h| format!("ak_{}", h.chars().take(4).collect::<String>())),
        tls_identity: tls.map(|t| t.parse::<TlsIdentity>().expect("an identity")),
        created_by: "bootstrap".into(),
        created_ms: 1_000,
        revoked_ms: None,
    }
}

fn remember(key: &str, created_ms: i64) -> StateOp {
    StateOp::Remember {
        kind: "evaluate",
        key: key.into(),
        agent_id: "a1".into(),
        fingerprint: format!("fp-{key}"),
        created_ms,
    }
}

fn loop_tick(ts_ms: i64, window_ms: i64, max_calls: u32) -> StateOp {
    StateOp::LoopTick {
        agent_id: "a1".into(),
        session_id: "s1".into(),
        tool: "search".into(),
        ts_ms,
        window_ms,
        max_calls,
    }
}

fn conflict<T: Debug>(r: Result<T, StoreError>) {
    match r {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected StoreError::Conflict, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// The cases

/// Opening and migrating an empty store twice (and again after a restart) succeeds and
/// leaves it empty.
async fn migrate_twice_on_an_empty_store(b: Backend) {
    let store = b.open().await;
    match b.kind {
        Kind::Sqlite => {
            let path = b.dir.as_ref().unwrap().path().join("arbiter.db");
            let again = SqliteStore::open(&path, false).await.unwrap();
            again
                .migrate()
                .await
                .expect("a second migration is a no-op");
            again.migrate().await.expect("and a third");
        }
        Kind::Postgres => {
            let again = b.open_pg().await;
            again
                .migrate()
                .await
                .expect("a second migration is a no-op");
        }
    }
    let store = b.reopen(store).await;
    assert_eq!(store.audit_head().await.unwrap(), None);
    assert_eq!(store.audit_count().await.unwrap(), 0);
    assert_eq!(store.tree_size().await.unwrap(), 0);
    assert_eq!(store.checkpoint(None).await.unwrap(), None);
    assert_eq!(store.node(0, 0).await.unwrap(), None);
    assert!(all_entries(store.as_ref()).await.is_empty());
    let q = AuditQuery::default();
    assert!(store.query_audit(&q, 0, 100).await.unwrap().is_empty());
    assert!(store.policy_loads(10).await.unwrap().is_empty());
    assert!(store.published_policy().await.unwrap().is_none());
    assert!(store.principals().await.unwrap().is_empty());
    assert!(store.find_reply("evaluate", "r1").await.unwrap().is_none());
    assert_eq!(load_all(store.as_ref()).await, Image::default());
    store.ping().await.unwrap();
    store.probe_write().await.unwrap();
    store.maintain().await.unwrap();
    // The migrated schema takes a write.
    Log::new()
        .commit(
            store.as_ref(),
            plain(vec![draft(1, "evaluate", "a1", "s1", "allow")]),
        )
        .await
        .expect("a first commit");
    assert_eq!(store.audit_count().await.unwrap(), 1);
}

/// A batch reads back in order with exactly the bytes written, however it is read.
async fn audit_batch_reads_back_byte_for_byte(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let mut tricky = draft(1_000, "evaluate", "a1", "s1", "allow");
    tricky.body = json!({
        "text": "tab\there, newline\nthere, quote \" backslash \\ nul \u{0} bell \u{7}",
        "unicode": "Grüße, 日本語, emoji 🦀, combining e\u{301}, rtl \u{202e}abc",
        "big": 9_007_199_254_740_991u64,
    })
    .into();
    let mut large = draft(1_001, "record", "a2", "s2", "deny");
    large.body = json!({ "blob": "x".repeat(200_000) }).into();
    let written = log
        .commit(
            store.as_ref(),
            plain(vec![
                tricky,
                large,
                draft(1_002, "halt", "", "", "ok"),
                draft(1_002, "evaluate", "agent-ß", "", "require_approval"),
                draft(1_003, "evaluate", "a1", "s1", "allow"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(written.len(), 5);
    assert_eq!(all_entries(store.as_ref()).await, written);
    assert_eq!(store.audit_page(1, 5, 100).await.unwrap(), written);
    assert_eq!(store.audit_range(2, 4, 100).await.unwrap(), written[1..4]);
    assert_eq!(store.audit_page(2, 4, 100).await.unwrap(), written[1..4]);
    assert_eq!(store.audit_range(2, 5, 2).await.unwrap(), written[1..3]);
    assert_eq!(store.audit_range(6, 9, 100).await.unwrap(), vec![]);
    assert_eq!(
        store.audit_head().await.unwrap(),
        Some((5, written[4].mac.clone()))
    );
    assert_eq!(store.audit_count().await.unwrap(), 5);
    let q = AuditQuery::default();
    assert_eq!(store.query_audit(&q, 0, 100).await.unwrap(), written);
    verify_chain(&all_entries(store.as_ref()).await);
    // And after a restart.
    let store = b.reopen(store).await;
    assert_eq!(store.audit_page(1, 5, 100).await.unwrap(), written);
}

/// Sequence numbers, MACs and the tree continue across restarts.
async fn chain_continues_across_reopen(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let mut written = log
        .commit(
            store.as_ref(),
            plain(vec![
                draft(1_000, "evaluate", "a1", "s1", "allow"),
                draft(1_001, "evaluate", "a1", "s1", "deny"),
            ]),
        )
        .await
        .unwrap();
    written.extend(
        log.commit(
            store.as_ref(),
            plain(vec![draft(1_002, "record", "a1", "s1", "ok")]),
        )
        .await
        .unwrap(),
    );
    let store = b.reopen(store).await;
    assert_eq!(
        store.audit_head().await.unwrap(),
        Some((3, written[2].mac.clone()))
    );
    let mut resumed = Log::resume(store.as_ref()).await;
    assert_eq!(resumed.seq, 3);
    assert_eq!(resumed.frontier, log.frontier);
    written.extend(
        resumed
            .commit(
                store.as_ref(),
                plain(vec![
                    draft(2_000, "evaluate", "a2", "s9", "allow"),
                    draft(2_001, "evaluate", "a2", "s9", "allow"),
                ]),
            )
            .await
            .unwrap(),
    );
    let store = b.reopen(store).await;
    let stored = all_entries(store.as_ref()).await;
    assert_eq!(stored, written);
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    verify_chain(&stored);
    assert_eq!(store.tree_size().await.unwrap(), 5);
    let newest = store.checkpoint(None).await.unwrap().expect("a checkpoint");
    assert_eq!(newest.size, 5);
    assert_eq!(newest.root_hex, hex::encode(resumed.frontier.root()));
    let root = arbiter_server::audit::integrity::stored_root(store.as_ref(), 5)
        .await
        .unwrap()
        .expect("every node of the tree is stored");
    assert_eq!(hex::encode(root), newest.root_hex);
    let at3 = store.checkpoint(Some(3)).await.unwrap().expect("size 3");
    assert_eq!(at3.root_hex, hex::encode(log.frontier.root()));
    assert_eq!(store.checkpoint(Some(4)).await.unwrap(), None);
}

/// A batch sealed after a stale head (a sequence number already used) is refused whole.
async fn stale_sequence_numbers_are_refused(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    log.commit(
        store.as_ref(),
        plain(vec![draft(1, "evaluate", "a1", "s1", "allow")]),
    )
    .await
    .unwrap();
    let stale = log.clone();
    log.commit(
        store.as_ref(),
        plain(vec![draft(2, "evaluate", "a1", "s1", "allow")]),
    )
    .await
    .unwrap();
    let before = snapshot(store.as_ref()).await;
    let mut again = stale.clone();
    conflict(
        again
            .commit(
                store.as_ref(),
                vec![
                    (
                        draft(3, "evaluate", "a9", "s9", "allow"),
                        vec![touch("a9", 3, 3, Some(3))],
                    ),
                    (draft(3, "evaluate", "a9", "s9", "allow"), vec![]),
                ],
            )
            .await,
    );
    assert_eq!(snapshot(store.as_ref()).await, before);
}

/// `AuditQuery`: each filter alone and together, `after_seq`, `limit`, `newest_first`.
async fn audit_query_filters_and_order(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let mut drafts = Vec::new();
    for i in 0..12i64 {
        let agent = if i % 3 == 0 { "a2" } else { "a1" };
        let session = if i < 6 { "s1" } else { "s2" };
        let kind = ["evaluate", "record", "halt"][(i % 3) as usize];
        let outcome = if i % 2 == 0 { "allow" } else { "deny" };
        drafts.push(draft(10_000 + i * 100, kind, agent, session, outcome));
    }
    let all = log.commit(store.as_ref(), plain(drafts)).await.unwrap();
    let seqs = |v: Vec<SealedEntry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    let query = |q: AuditQuery, after: u64, limit: u32| {
        let store = store.clone();
        async move { seqs(store.query_audit(&q, after, limit).await.unwrap()) }
    };
    // The same filter applied in memory (AuditQuery::matches), a second implementation.
    let oracle = |q: &AuditQuery, after: u64, limit: usize| {
        let hits: Vec<u64> = all
            .iter()
            .filter(|e| e.seq > after && q.matches(e))
            .map(|e| e.seq)
            .collect();
        if q.newest_first {
            hits.into_iter().rev().take(limit).collect::<Vec<_>>()
        } else {
            hits.into_iter().take(limit).collect()
        }
    };
    let agent = AuditQuery {
        agent_id: Some("a2".into()),
        ..Default::default()
    };
    assert_eq!(query(agent.clone(), 0, 100).await, vec![1, 4, 7, 10]);
    let kinds = AuditQuery {
        kinds: vec!["record".into(), "halt".into()],
        ..Default::default()
    };
    assert_eq!(
        query(kinds.clone(), 0, 100).await,
        vec![2, 3, 5, 6, 8, 9, 11, 12]
    );
    let session = AuditQuery {
        session_id: Some("s2".into()),
        ..Default::default()
    };
    assert_eq!(
        query(session.clone(), 0, 100).await,
        vec![7, 8, 9, 10, 11, 12]
    );
    let outcome = AuditQuery {
        outcome: Some("deny".into()),
        ..Default::default()
    };
    assert_eq!(
        query(outcome.clone(), 0, 100).await,
        vec![2, 4, 6, 8, 10, 12]
    );
    // since is inclusive, until exclusive.
    let window = AuditQuery {
        since_ms: Some(10_300),
        until_ms: Some(10_700),
        ..Default::default()
    };
    assert_eq!(query(window.clone(), 0, 100).await, vec![4, 5, 6, 7]);
    let combined = AuditQuery {
        agent_id: Some("a1".into()),
        kinds: vec!["record".into()],
        session_id: Some("s2".into()),
        since_ms: Some(10_000),
        until_ms: Some(20_000),
        outcome: Some("allow".into()),
        newest_first: false,
    };
    assert_eq!(query(combined.clone(), 0, 100).await, vec![11]);
    let newest = AuditQuery {
        agent_id: Some("a1".into()),
        newest_first: true,
        ..Default::default()
    };
    assert_eq!(query(newest.clone(), 0, 3).await, vec![12, 11, 9]);
    assert_eq!(query(newest.clone(), 8, 100).await, vec![12, 11, 9]);
    let oldest = AuditQuery {
        newest_first: false,
        ..newest.clone()
    };
    assert_eq!(query(oldest.clone(), 0, 3).await, vec![2, 3, 5]);
    assert_eq!(query(oldest.clone(), 5, 2).await, vec![6, 8]);
    let none = AuditQuery {
        agent_id: Some("nobody".into()),
        ..Default::default()
    };
    assert_eq!(query(none.clone(), 0, 100).await, Vec::<u64>::new());
    assert_eq!(
        query(AuditQuery::default(), 12, 100).await,
        Vec::<u64>::new()
    );
    assert_eq!(query(AuditQuery::default(), 0, 0).await, Vec::<u64>::new());
    for q in [
        agent, kinds, session, outcome, window, combined, newest, oldest, none,
    ] {
        for (after, limit) in [(0, 100), (0, 2), (3, 3), (7, 1), (11, 5)] {
            assert_eq!(
                query(q.clone(), after, limit).await,
                oracle(&q, after, limit as usize),
                "{q:?} after {after} limit {limit}"
            );
        }
    }
    // Whole entries, not only their positions.
    let q = AuditQuery {
        agent_id: Some("a2".into()),
        newest_first: true,
        ..Default::default()
    };
    assert_eq!(
        store.query_audit(&q, 0, 2).await.unwrap(),
        vec![all[9].clone(), all[6].clone()]
    );
}

/// A batch the store refuses (a constraint fails in its last unit) is rolled back
/// whole: the entries and every state change before the failing one are gone too.
async fn failed_batch_leaves_log_and_state_as_they_were(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let k = key("daily", "agent:a1", 0);
    log.commit(
        store.as_ref(),
        vec![(
            draft(1_000, "evaluate", "a1", "s1", "allow"),
            vec![
                touch("a1", 1_000, 1_000, Some(1_000)),
                remember("req-1", 1_000),
                StateOp::Reserve(reservation(
                    "r1",
                    std::slice::from_ref(&k),
                    amounts(5, 5, 1),
                    90_000,
                )),
                StateOp::Reserve(reservation(
                    "r2",
                    std::slice::from_ref(&k),
                    amounts(1, 0, 0),
                    90_000,
                )),
                StateOp::AddSpend {
                    keys: vec![k.clone()],
                    amounts: amounts(1, 1, 1),
                },
            ],
        )],
    )
    .await
    .unwrap();
    let before = snapshot(store.as_ref()).await;
    for failing in [
        remember("req-1", 2_000),
        // An open reservation's id (the first unit settles r1; the embedded store keeps
        // only open reservations, so only an open id is a conflict on every backend).
        StateOp::Reserve(reservation(
            "r2",
            std::slice::from_ref(&k),
            amounts(1, 1, 1),
            90_000,
        )),
        StateOp::CreatePrincipal(principal("dup", Some("h1"), None)),
    ] {
        let mut attempt = log.clone();
        let result = attempt
            .commit(
                store.as_ref(),
                vec![
                    (
                        draft(2_000, "evaluate", "a1", "s2", "allow"),
                        vec![
                            touch("a1", 1_000, 2_000, Some(2_000)),
                            touch("a2", 2_000, 2_000, None),
                            StateOp::StartSession {
                                agent_id: "a1".into(),
                                session_id: "s2".into(),
                                started_ms: 2_000,
                            },
                            StateOp::AddSpend {
                                keys: vec![k.clone()],
                                amounts: amounts(7, 7, 7),
                            },
                            StateOp::SettleReservation { id: "r1".into() },
                            StateOp::SetTrust(TrustAssignment {
                                agent_id: "a1".into(),
                                scope: String::new(),
                                level: TrustLevel::L5Autonomous,
                                assigned_by: "ops".into(),
                                assigned_ms: 2_000,
                            }),
                            StateOp::EngageHalt(halt(
                                HaltTarget::Global,
                                HaltMode::Emergency,
                                "x",
                                2_000,
                            )),
                            StateOp::CreatePrincipal(principal("dup", Some("h1"), None)),
                        ],
                    ),
                    (draft(2_001, "evaluate", "a1", "s2", "allow"), vec![failing]),
                ],
            )
            .await;
        conflict(result);
        assert_eq!(snapshot(store.as_ref()).await, before);
        store.probe_write().await.expect("the store still writes");
    }
    // The same positions commit once the batch is sound.
    let next = log
        .commit(
            store.as_ref(),
            plain(vec![draft(3_000, "evaluate", "a1", "s1", "allow")]),
        )
        .await
        .unwrap();
    assert_eq!(next[0].seq, 2);
    verify_chain(&all_entries(store.as_ref()).await);
}

/// What a batch that made `ops` would look like to a sequenced commit: every refusal the
/// shared store's admission rules give, each leaving the log and state untouched.
async fn admission_refusals_write_nothing(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let cap = key("cap", "agent:a1", 0);
    let setup = vec![
        vec![
            StateOp::AddSpend {
                keys: vec![cap.clone()],
                amounts: amounts(0, 0, 8),
            },
            StateOp::Reserve(reservation(
                "open",
                std::slice::from_ref(&cap),
                amounts(0, 0, 1),
                900_000,
            )),
            // Expired at 5_000: a sequenced batch releases it, inside its transaction.
            StateOp::Reserve(reservation(
                "stale",
                std::slice::from_ref(&cap),
                amounts(0, 0, 1),
                2_000,
            )),
            StateOp::PutApproval(approval("ap1", ApprovalState::Pending)),
            StateOp::OpenDecision(OpenDecision {
                decision_id: "d1".into(),
                agent_id: "a1".into(),
                session_id: "s1".into(),
                model: None,
                reservation: None,
                created_ms: 1_000,
            }),
            StateOp::EngageHalt(halt(
                HaltTarget::Agent("a1".into()),
                HaltMode::HaltAll,
                "stop",
                1_000,
            )),
            StateOp::WatchdogMark {
                condition: "budget:cap/a1".into(),
                marked_ms: 1_000,
            },
            StateOp::PutToolPin(ToolPin {
                server: "srv".into(),
                tool: "search".into(),
                trusted: Some(pinned("sha256:1", "first-use:a1")),
                candidate: None,
            }),
            loop_tick(1_000, 1_000, 10),
        ],
        vec![loop_tick(1_100, 1_000, 10)],
    ];
    if !b.is_pg() {
        // The embedded store has one server, which decides all of this exactly in
        // memory before a batch reaches the store; it has no sequencer, and the ops the
        // sequencer reads (LoopTick, ExpectHalt, ExpectToolPin) write nothing there.
        assert!(store.replicated().is_none());
        log.ops(store.as_ref(), setup).await;
        let before = snapshot(store.as_ref()).await;
        log.ops(
            store.as_ref(),
            vec![vec![
                loop_tick(1_200, 1_000, 1),
                StateOp::ExpectHalt {
                    target: HaltTarget::Global,
                    current: None,
                },
                StateOp::ExpectToolPin {
                    server: "srv".into(),
                    tool: "search".into(),
                    current: None,
                },
            ]],
        )
        .await;
        let after = snapshot(store.as_ref()).await;
        assert_eq!(after.image, before.image);
        assert_eq!(after.count, before.count + 1);
        return;
    }
    log.ops(store.as_ref(), setup).await;
    log.ops(
        store.as_ref(),
        vec![
            vec![StateOp::PutApproval(approval(
                "ap1",
                ApprovalState::Granted,
            ))],
            vec![StateOp::CloseDecision {
                decision_id: "d1".into(),
            }],
        ],
    )
    .await;
    let before = snapshot(store.as_ref()).await;
    assert_eq!(
        before.image.reservations.len(),
        2,
        "load(0) still lists the stale one"
    );
    let guard = |calls: u64| BudgetGuard {
        keys: vec![(cap.clone(), [None, None, Some(10)])],
        amounts: amounts(0, 0, calls),
        now_ms: 5_000,
    };
    let cases: Vec<(Vec<StateOp>, Option<BudgetGuard>, Refusal)> = vec![
        // Settled 8 + held 1 (the stale one released) + 2 > 10.
        (vec![], Some(guard(2)), Refusal::BudgetExceeded),
        (
            vec![loop_tick(1_500, 1_000, 2)],
            None,
            Refusal::LoopDetected {
                tool: "search".into(),
                count: 2,
                window_ms: 1_000,
                max_calls: 2,
            },
        ),
        (
            vec![StateOp::PutApproval(approval("ap1", ApprovalState::Denied))],
            None,
            Refusal::ApprovalConflict {
                id: "ap1".into(),
                was: Some(ApprovalState::Granted),
            },
        ),
        (
            vec![StateOp::PutApproval(approval(
                "ap9",
                ApprovalState::Granted,
            ))],
            None,
            Refusal::ApprovalConflict {
                id: "ap9".into(),
                was: None,
            },
        ),
        (
            vec![StateOp::CloseDecision {
                decision_id: "d1".into(),
            }],
            None,
            Refusal::DecisionRecorded {
                decision_id: "d1".into(),
            },
        ),
        (
            vec![StateOp::WatchdogMark {
                condition: "budget:cap/a1".into(),
                marked_ms: 9_000,
            }],
            None,
            Refusal::WatchdogDone {
                condition: "budget:cap/a1".into(),
            },
        ),
        (
            vec![
                StateOp::ExpectHalt {
                    target: HaltTarget::Agent("a1".into()),
                    current: None,
                },
                StateOp::LiftHalt {
                    target: HaltTarget::Agent("a1".into()),
                },
            ],
            None,
            Refusal::HaltChanged {
                target: "agent a1".into(),
            },
        ),
        (
            vec![StateOp::ExpectToolPin {
                server: "srv".into(),
                tool: "search".into(),
                current: None,
            }],
            None,
            Refusal::ToolPinChanged {
                server: "srv".into(),
                tool: "search".into(),
            },
        ),
    ];
    for (ops, guard, want) in cases {
        let pg = store.replicated().expect("a sequencer");
        let mut batch = pg.begin_sequenced().await.unwrap();
        let mut admission = Admission::default();
        match admission.admit(batch.as_mut(), &ops, guard.as_ref()).await {
            Err(Verdict::Refused(got)) => assert_eq!(got, want),
            Err(Verdict::Unavailable(e)) => panic!("{want:?}: store unavailable: {e}"),
            Ok(()) => panic!("admitted what should be refused: {want:?}"),
        }
        // Every submission refused: the batcher seals nothing and drops the batch.
        drop(batch);
        assert_eq!(snapshot(store.as_ref()).await, before, "after {want:?}");
    }
    // Exactly at the cap fits, and the ones that match the stored state are admitted.
    let pg = store.replicated().expect("a sequencer");
    let mut batch = pg.begin_sequenced().await.unwrap();
    let mut admission = Admission::default();
    for (ops, guard) in [
        (vec![], Some(guard(1))),
        (vec![loop_tick(1_500, 1_000, 3)], None),
        (
            vec![StateOp::ExpectHalt {
                target: HaltTarget::Agent("a1".into()),
                current: Some(halt(
                    HaltTarget::Agent("a1".into()),
                    HaltMode::HaltAll,
                    "stop",
                    1_000,
                )),
            }],
            None,
        ),
        (
            vec![StateOp::PutApproval(approval(
                "ap1",
                ApprovalState::Consumed,
            ))],
            None,
        ),
    ] {
        assert!(
            admission
                .admit(batch.as_mut(), &ops, guard.as_ref())
                .await
                .is_ok(),
            "{ops:?} {guard:?}"
        );
    }
    drop(batch);
    assert_eq!(snapshot(store.as_ref()).await, before);
}

/// Within one sequenced batch the admission rules count the submissions kept before:
/// kept ones commit, refused ones leave nothing.
async fn admission_counts_earlier_submissions_of_the_batch(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let cap = key("cap", "agent:a1", 0);
    log.ops(
        store.as_ref(),
        vec![vec![
            StateOp::AddSpend {
                keys: vec![cap.clone()],
                amounts: amounts(0, 0, 8),
            },
            loop_tick(1_000, 1_000, 10),
            loop_tick(1_100, 1_000, 10),
        ]],
    )
    .await;
    let Some(pg) = store.replicated() else {
        // One server: the in-memory state already counts the calls before them.
        assert!(!b.is_pg(), "PostgreSQL has a sequencer");
        return;
    };
    let mut batch = pg.begin_sequenced().await.unwrap();
    let guard = |calls: u64| BudgetGuard {
        keys: vec![(cap.clone(), [None, None, Some(10)])],
        amounts: amounts(0, 0, calls),
        now_ms: 5_000,
    };
    let submissions: Vec<(Vec<StateOp>, Option<BudgetGuard>, Option<Refusal>)> = vec![
        (
            vec![StateOp::Reserve(reservation(
                "r1",
                std::slice::from_ref(&cap),
                amounts(0, 0, 2),
                900_000,
            ))],
            Some(guard(2)),
            None,
        ),
        (
            vec![StateOp::Reserve(reservation(
                "r2",
                std::slice::from_ref(&cap),
                amounts(0, 0, 1),
                900_000,
            ))],
            Some(guard(1)),
            Some(Refusal::BudgetExceeded),
        ),
        (
            vec![StateOp::PutApproval(approval(
                "ap2",
                ApprovalState::Pending,
            ))],
            None,
            None,
        ),
        (
            vec![StateOp::PutApproval(approval(
                "ap2",
                ApprovalState::Pending,
            ))],
            None,
            Some(Refusal::ApprovalConflict {
                id: "ap2".into(),
                was: Some(ApprovalState::Pending),
            }),
        ),
        (vec![loop_tick(1_500, 1_000, 3)], None, None),
        (
            vec![loop_tick(1_600, 1_000, 3)],
            None,
            Some(Refusal::LoopDetected {
                tool: "search".into(),
                count: 3,
                window_ms: 1_000,
                max_calls: 3,
            }),
        ),
        (
            vec![StateOp::WatchdogMark {
                condition: "loop:a1".into(),
                marked_ms: 1,
            }],
            None,
            None,
        ),
        (
            vec![StateOp::WatchdogMark {
                condition: "loop:a1".into(),
                marked_ms: 2,
            }],
            None,
            Some(Refusal::WatchdogDone {
                condition: "loop:a1".into(),
            }),
        ),
    ];
    let mut admission = Admission::default();
    let mut kept = Vec::new();
    for (ops, guard, want) in submissions {
        let got = admission.admit(batch.as_mut(), &ops, guard.as_ref()).await;
        match (got, want) {
            (Ok(()), None) => kept.push((draft(2_000, "evaluate", "a1", "s1", "allow"), ops)),
            (Err(Verdict::Refused(got)), Some(want)) => assert_eq!(got, want),
            (Err(Verdict::Unavailable(e)), _) => panic!("unavailable: {e}"),
            (Ok(()), Some(want)) => panic!("admitted, expected {want:?}"),
            (Err(Verdict::Refused(got)), None) => panic!("refused {got:?}, expected a pass"),
        }
    }
    let head = batch.head().await.unwrap().map(|(s, _)| s);
    assert_eq!(head, Some(1));
    let (next, units, tree) = log.seal(kept);
    batch.commit(&units, &tree).await.unwrap();
    log = next;
    assert_eq!(store.audit_count().await.unwrap(), 5);
    let img = load_all(store.as_ref()).await;
    assert_eq!(
        img.reservations,
        sorted(&[reservation(
            "r1",
            std::slice::from_ref(&cap),
            amounts(0, 0, 2),
            900_000
        )])
    );
    assert_eq!(
        img.approvals,
        sorted(&[approval("ap2", ApprovalState::Pending)])
    );
    assert_eq!(img.watchdog_marks, sorted(&["loop:a1".to_owned()]));
    // What was kept now counts for the next batch: 3 ticks, 8 + 2 calls.
    let pg = store.replicated().expect("a sequencer");
    let mut batch = pg.begin_sequenced().await.unwrap();
    assert_eq!(batch.loop_calls("a1", "s1", "search", 0).await.unwrap(), 3);
    assert!(!fits(batch.as_mut(), &guard(1)).await);
    assert!(fits(batch.as_mut(), &guard(0)).await);
    drop(batch);
    pg.prune_loop_ticks(1_200).await.unwrap();
    let mut batch = pg.begin_sequenced().await.unwrap();
    assert_eq!(batch.loop_calls("a1", "s1", "search", 0).await.unwrap(), 1);
    drop(batch);
    assert_eq!(log.seq, 5);
}

/// Whether `guard` fits what the database holds, read through the batch alone.
async fn fits(batch: &mut dyn arbiter_server::store::SequencedBatch, guard: &BudgetGuard) -> bool {
    let keys: Vec<CounterKey> = guard.keys.iter().map(|(k, _)| k.clone()).collect();
    let stored = batch.budget_usage(&keys, guard.now_ms).await.unwrap();
    arbiter_server::store::admission::fits(guard, &stored, &BTreeMap::new())
}

/// Reservations, settlement, spend and expiry give the same ledger.
async fn budget_reservations_and_settlement(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let k1 = key("daily", "agent:a1", 86_400_000);
    let k2 = key("total", "*", 0);
    let r1 = reservation(
        "r1",
        &[k1.clone(), k2.clone()],
        amounts(500, 100, 1),
        61_000,
    );
    let r2 = reservation("r2", std::slice::from_ref(&k1), amounts(200, 0, 1), 61_000);
    let r3 = reservation("r3", std::slice::from_ref(&k2), amounts(1, 1, 1), 2_000);
    log.ops(
        store.as_ref(),
        vec![
            vec![StateOp::Reserve(r1.clone())],
            vec![StateOp::Reserve(r2.clone())],
            vec![StateOp::Reserve(r3.clone())],
        ],
    )
    .await;
    let img = image(&store.load(5_000, 0).await.unwrap());
    assert_eq!(img.reservations, sorted(&[r1.clone(), r2.clone()]));
    assert!(img.counters.is_empty(), "{:?}", img.counters);
    log.ops(
        store.as_ref(),
        vec![
            vec![
                StateOp::SettleReservation { id: "r1".into() },
                StateOp::AddSpend {
                    keys: vec![k1.clone(), k2.clone()],
                    amounts: amounts(450, 90, 1),
                },
            ],
            // The same counter twice in one batch adds up.
            vec![StateOp::AddSpend {
                keys: vec![k1.clone()],
                amounts: amounts(10, 0, 1),
            }],
        ],
    )
    .await;
    log.ops(
        store.as_ref(),
        vec![vec![
            // Settling again changes nothing.
            StateOp::SettleReservation { id: "r1".into() },
            StateOp::SettleReservation {
                id: "unknown".into(),
            },
            StateOp::AddSpend {
                keys: vec![k2.clone()],
                amounts: amounts(5, 5, 0),
            },
        ]],
    )
    .await;
    let store = b.reopen(store).await;
    let img = image(&store.load(5_000, 0).await.unwrap());
    assert_eq!(
        img.counters,
        sorted(&[
            (k1.clone(), amounts(460, 90, 2)),
            (k2.clone(), amounts(455, 95, 1)),
        ])
    );
    assert_eq!(img.reservations, sorted(std::slice::from_ref(&r2)));
    let img = image(&store.load(0, 0).await.unwrap());
    assert_eq!(img.reservations, sorted(&[r2.clone(), r3.clone()]));
    if let Some(pg) = store.replicated() {
        let mut batch = pg.begin_sequenced().await.unwrap();
        // The shared store also keeps what open reservations hold, per counter: k1 holds
        // r2 only (r1 was settled), k2 nothing (r3 expires at 2_000, released here).
        let guard = |k: &CounterKey, cap: u64, micro: u64| BudgetGuard {
            keys: vec![(k.clone(), [Some(cap), None, None])],
            amounts: amounts(micro, 0, 0),
            now_ms: 5_000,
        };
        let b = batch.as_mut();
        assert!(fits(b, &guard(&k1, 1_000, 340)).await);
        assert!(!fits(b, &guard(&k1, 1_000, 341)).await);
        assert!(fits(b, &guard(&k2, 1_000, 545)).await);
        assert!(!fits(b, &guard(&k2, 1_000, 546)).await);
        // Both counters in one read give the same answers.
        let both = batch
            .budget_usage(&[k1.clone(), k2.clone()], 5_000)
            .await
            .unwrap();
        assert_eq!(both.get(&k1), Some(&amounts(660, 90, 3)));
        assert_eq!(both.get(&k2), Some(&amounts(455, 95, 1)));
        drop(batch);
    }
}

/// Decisions awaiting Record: opened, listed, closed once.
async fn open_decisions(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let k = key("daily", "agent:a1", 0);
    let decision = |id: &str, r: Option<Reservation>| OpenDecision {
        decision_id: id.into(),
        agent_id: "a1".into(),
        session_id: "s1".into(),
        model: Some("gpt-x".into()),
        reservation: r,
        created_ms: 1_000,
    };
    let r = reservation("r1", std::slice::from_ref(&k), amounts(3, 2, 1), 90_000);
    let d1 = decision("d1", Some(r.clone()));
    let d2 = decision("d2", None);
    log.ops(
        store.as_ref(),
        vec![vec![
            StateOp::Reserve(r.clone()),
            StateOp::OpenDecision(d1.clone()),
            StateOp::OpenDecision(d2.clone()),
        ]],
    )
    .await;
    assert_eq!(
        load_all(store.as_ref()).await.open_decisions,
        sorted(&[d1.clone(), d2.clone()])
    );
    // Only a shared store is asked: the embedded store's one server made every open
    // decision itself and holds it in memory.
    assert_eq!(store.replicated().is_some(), b.is_pg());
    if let Some(pg) = store.replicated() {
        assert_eq!(pg.find_open_decision("d1").await.unwrap(), Some(d1.clone()));
    }
    log.ops(
        store.as_ref(),
        vec![vec![
            StateOp::CloseDecision {
                decision_id: "d1".into(),
            },
            StateOp::SettleReservation { id: "r1".into() },
        ]],
    )
    .await;
    let store = b.reopen(store).await;
    let img = load_all(store.as_ref()).await;
    assert_eq!(img.open_decisions, sorted(std::slice::from_ref(&d2)));
    assert!(img.reservations.is_empty());
    if let Some(pg) = store.replicated() {
        assert_eq!(pg.find_open_decision("d1").await.unwrap(), None);
        assert_eq!(pg.find_open_decision("d2").await.unwrap(), Some(d2));
    }
}

/// Consent grants and revocations, trust assignments and operators, in op order.
async fn consent_trust_and_operators(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let trust = |scope: &str, level: TrustLevel, by: &str, at: i64| TrustAssignment {
        agent_id: "a1".into(),
        scope: scope.into(),
        level,
        assigned_by: by.into(),
        assigned_ms: at,
    };
    let grant =
        |agent: &str, data: &str, purpose: Option<&str>, by: &str, exp: Option<i64>| ConsentGrant {
            agent_id: agent.into(),
            data_type: data.into(),
            purpose: purpose.map(Into::into),
            granted_by: by.into(),
            granted_ms: 1_000,
            expires_ms: exp,
        };
    let revoke = |agent: &str, data: &str, purpose: Option<&str>| StateOp::RevokeConsent {
        agent_id: agent.into(),
        data_type: data.into(),
        purpose: purpose.map(Into::into),
    };
    let operator = |op: &str| StateOp::SetOperator {
        agent_id: "a1".into(),
        operator: op.into(),
        set_by: "admin".into(),
        set_ms: 1_000,
    };
    log.ops(
        store.as_ref(),
        vec![
            vec![
                StateOp::SetTrust(trust("", TrustLevel::L3ActApprove, "ops", 1_000)),
                StateOp::SetTrust(trust("tool:search", TrustLevel::L1Monitor, "ops", 1_000)),
                StateOp::PutConsent(grant("a1", "pii", None, "ops", None)),
                StateOp::PutConsent(grant("a1", "pii", Some("support"), "ops", Some(9_000))),
                StateOp::PutConsent(grant("a2", "health", Some("care"), "ops", None)),
            ],
            vec![operator("alice")],
        ],
    )
    .await;
    log.ops(
        store.as_ref(),
        vec![
            vec![
                StateOp::SetTrust(trust("", TrustLevel::L5Autonomous, "ops2", 2_000)),
                StateOp::PutConsent(grant("a1", "pii", Some("support"), "ops2", None)),
                // Only the every-purpose grant.
                revoke("a1", "pii", None),
                // Purpose mismatch and unknown grants: nothing.
                revoke("a2", "health", None),
                revoke("a9", "x", Some("y")),
                operator("bob"),
            ],
            // Op order within a batch decides.
            vec![
                StateOp::PutConsent(grant("a3", "email", None, "ops", None)),
                revoke("a3", "email", None),
                revoke("a4", "email", None),
                StateOp::PutConsent(grant("a4", "email", None, "ops", Some(5))),
            ],
        ],
    )
    .await;
    let store = b.reopen(store).await;
    let img = load_all(store.as_ref()).await;
    assert_eq!(
        img.trust,
        sorted(&[
            trust("", TrustLevel::L5Autonomous, "ops2", 2_000),
            trust("tool:search", TrustLevel::L1Monitor, "ops", 1_000),
        ])
    );
    assert_eq!(
        img.consent,
        sorted(&[
            grant("a1", "pii", Some("support"), "ops2", None),
            grant("a2", "health", Some("care"), "ops", None),
            grant("a4", "email", None, "ops", Some(5)),
        ])
    );
    assert_eq!(
        img.operators,
        sorted(&[("a1".to_owned(), "bob".to_owned())])
    );
    if let Some(pg) = store.replicated() {
        let (_, control) = pg.load_control(0).await.unwrap();
        let control = image(&control);
        assert_eq!(
            (control.trust, control.consent, control.operators),
            (img.trust, img.consent, img.operators)
        );
    }
}

/// Halts engage (upsert per target) and lift; watchdog marks are kept once.
async fn halts_and_watchdog_marks(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let reason = "stop ⛔ \"now\"\n\tplease";
    let agent = HaltTarget::Agent("a1".into());
    let session = HaltTarget::Session("a1".into(), "s1".into());
    log.ops(
        store.as_ref(),
        vec![vec![
            StateOp::EngageHalt(halt(
                HaltTarget::Global,
                HaltMode::HaltNoncritical,
                reason,
                1,
            )),
            StateOp::EngageHalt(halt(agent.clone(), HaltMode::HaltAll, "a", 2)),
            StateOp::EngageHalt(halt(session.clone(), HaltMode::Emergency, "s", 3)),
            StateOp::WatchdogMark {
                condition: "loop:a1/s1/search".into(),
                marked_ms: 3,
            },
        ]],
    )
    .await;
    log.ops(
        store.as_ref(),
        vec![vec![
            StateOp::EngageHalt(halt(agent.clone(), HaltMode::Emergency, "again", 4)),
            StateOp::LiftHalt {
                target: session.clone(),
            },
            StateOp::LiftHalt {
                target: HaltTarget::Agent("a9".into()),
            },
            StateOp::WatchdogMark {
                condition: "loop:a1/s1/search".into(),
                marked_ms: 4,
            },
            StateOp::WatchdogMark {
                condition: "budget:daily/a1".into(),
                marked_ms: 4,
            },
        ]],
    )
    .await;
    let store = b.reopen(store).await;
    let img = load_all(store.as_ref()).await;
    let want = [
        halt(HaltTarget::Global, HaltMode::HaltNoncritical, reason, 1),
        halt(agent.clone(), HaltMode::Emergency, "again", 4),
    ];
    assert_eq!(img.halts, sorted(&want));
    assert_eq!(
        img.watchdog_marks,
        sorted(&["budget:daily/a1".to_owned(), "loop:a1/s1/search".to_owned()])
    );
    if let Some(pg) = store.replicated() {
        let mut batch = pg.begin_sequenced().await.unwrap();
        assert_eq!(batch.halt(&agent).await.unwrap(), Some(want[1].clone()));
        assert_eq!(batch.halt(&session).await.unwrap(), None);
        assert!(batch.watchdog_marked("budget:daily/a1").await.unwrap());
        assert!(!batch.watchdog_marked("budget:daily/a2").await.unwrap());
    }
}

/// Approvals and MCP tool pins are stored whole and replaced by their key.
async fn approvals_and_tool_pins(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let mut pending = approval("ap1", ApprovalState::Pending);
    pending.reservation = Some(reservation(
        "r1",
        &[key("daily", "agent:a1", 0)],
        amounts(1, 2, 3),
        9_000,
    ));
    let pin = |tool: &str, candidate: Option<CandidateState>| ToolPin {
        server: "srv".into(),
        tool: tool.into(),
        trusted: Some(pinned("sha256:t", "first-use:a1")),
        candidate: candidate.map(|c| (pinned("sha256:c", "a1"), c)),
    };
    log.ops(
        store.as_ref(),
        vec![vec![
            StateOp::PutApproval(pending.clone()),
            StateOp::PutApproval(approval("ap2", ApprovalState::Pending)),
            StateOp::PutToolPin(pin("a", None)),
            StateOp::PutToolPin(pin("b", Some(CandidateState::Pending))),
        ]],
    )
    .await;
    let mut granted = pending.clone();
    granted.state = ApprovalState::Granted;
    granted.decided_by = "alice".into();
    granted.decided_ms = Some(2_000);
    log.ops(
        store.as_ref(),
        vec![vec![
            StateOp::PutApproval(granted.clone()),
            StateOp::PutToolPin(pin("b", Some(CandidateState::Rejected))),
        ]],
    )
    .await;
    let store = b.reopen(store).await;
    let img = load_all(store.as_ref()).await;
    assert_eq!(
        img.approvals,
        sorted(&[granted, approval("ap2", ApprovalState::Pending)])
    );
    assert_eq!(
        img.tool_pins,
        sorted(&[pin("a", None), pin("b", Some(CandidateState::Rejected))])
    );
    if let Some(pg) = store.replicated() {
        let mut batch = pg.begin_sequenced().await.unwrap();
        assert_eq!(
            batch.approval_state("ap1").await.unwrap(),
            Some(ApprovalState::Granted)
        );
        assert_eq!(batch.approval_state("nope").await.unwrap(), None);
        assert_eq!(
            batch.tool_pin("srv", "b").await.unwrap(),
            Some(pin("b", Some(CandidateState::Rejected)))
        );
        assert_eq!(batch.tool_pin("srv", "c").await.unwrap(), None);
    }
}

/// Principals list in one order on both backends (byte order of the name, whatever the
/// database's collation), revocation happens once, credentials stay unique.
async fn principals_and_api_keys(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let names = ["alice", "Bob", "_svc", "a-b", "ab", "Zed", "émile"];
    let mut rows: Vec<PrincipalRow> = names
        .iter()
        .enumerate()
        .map(|(i, n)| principal(n, Some(&format!("{i:04}hash{n}")), None))
        .collect();
    rows.push(principal(
        "mtls",
        None,
        Some("spiffe://example.org/agent/a1"),
    ));
    rows.push(principal(
        "both",
        Some("9999hashboth"),
        Some("dns:agent.example.org"),
    ));
    log.ops(
        store.as_ref(),
        vec![rows.iter().cloned().map(StateOp::CreatePrincipal).collect()],
    )
    .await;
    log.ops(
        store.as_ref(),
        vec![vec![StateOp::RevokePrincipal {
            name: "mtls".into(),
            revoked_ms: 5_000,
        }]],
    )
    .await;
    log.ops(
        store.as_ref(),
        vec![vec![
            StateOp::RevokePrincipal {
                name: "mtls".into(),
                revoked_ms: 6_000,
            },
            StateOp::RevokePrincipal {
                name: "nobody".into(),
                revoked_ms: 6_000,
            },
        ]],
    )
    .await;
    for r in &mut rows {
        if r.name == "mtls" {
            r.revoked_ms = Some(5_000);
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["Bob", "Zed", "_svc", "a-b", "ab", "alice", "both", "mtls", "émile"]
    );
    let store = b.reopen(store).await;
    assert_eq!(store.principals().await.unwrap(), rows);
    if let Some(pg) = store.replicated() {
        let (_, control) = pg.load_control(0).await.unwrap();
        assert_eq!(control.principals, Some(rows.clone()));
    }
    let before = snapshot(store.as_ref()).await;
    for dup in [
        principal("alice", Some("fresh"), None),
        principal("other", Some("0001hashBob"), None),
        principal("other", None, Some("dns:agent.example.org")),
    ] {
        conflict(
            log.clone()
                .commit(
                    store.as_ref(),
                    vec![(
                        draft(9_000, "admin", "", "", "ok"),
                        vec![StateOp::CreatePrincipal(dup)],
                    )],
                )
                .await,
        );
    }
    assert_eq!(snapshot(store.as_ref()).await, before);
    // A revoked identity may be bound again.
    let rebound = principal("mtls-2", None, Some("spiffe://example.org/agent/a1"));
    log.ops(
        store.as_ref(),
        vec![vec![StateOp::CreatePrincipal(rebound.clone())]],
    )
    .await;
    let listed = store.principals().await.unwrap();
    assert_eq!(listed.len(), rows.len() + 1);
    assert_eq!(listed[8], rebound, "mtls-2 sorts after mtls, before émile");
}

/// Policy loads, newest first, and the newest accepted bundle's exact bytes.
async fn policy_loads_and_the_published_bundle(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let load = |v: &str, accepted: bool, bundle: Option<Vec<u8>>, at: i64| StateOp::PolicyLoad {
        version: v.into(),
        source: format!("/etc/arbiter/{v}.yaml"),
        loaded_ms: at,
        accepted,
        error: if accepted {
            String::new()
        } else {
            "line 3: «unknown» field".into()
        },
        bundle: bundle.map(Into::into),
    };
    let v3: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    log.ops(
        store.as_ref(),
        vec![
            vec![load("v1", true, Some(b"bundle one".to_vec()), 1)],
            vec![
                load("v2", false, None, 2),
                load("v3", true, Some(v3.clone()), 3),
            ],
        ],
    )
    .await;
    log.ops(store.as_ref(), vec![vec![load("v4", false, None, 4)]])
        .await;
    let store = b.reopen(store).await;
    let listed: Vec<(String, bool, i64, String)> = store
        .policy_loads(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            assert_eq!(r.source, format!("/etc/arbiter/{}.yaml", r.version));
            (r.version, r.accepted, r.loaded_ms, r.error)
        })
        .collect();
    let rejected = "line 3: «unknown» field".to_owned();
    assert_eq!(
        listed,
        vec![
            ("v4".into(), false, 4, rejected.clone()),
            ("v3".into(), true, 3, String::new()),
            ("v2".into(), false, 2, rejected),
            ("v1".into(), true, 1, String::new()),
        ]
    );
    assert_eq!(store.policy_loads(2).await.unwrap().len(), 2);
    let published = store.published_policy().await.unwrap().expect("v3");
    assert_eq!(
        (
            published.version.as_str(),
            published.loaded_ms,
            published.bundle
        ),
        ("v3", 3, v3)
    );
    if let Some(pg) = store.replicated() {
        let (_, control) = pg.load_control(0).await.unwrap();
        assert_eq!(control.published_policy.as_deref(), Some("v3"));
    }
}

/// Heartbeats move each agent's presence only forward, also when one flush carries two
/// for the same agent; the silence mark is written with the watchdog's halt only.
async fn presence_moves_only_forward(b: Backend) {
    use PresenceStatus::{Idle, Live, Unresponsive};
    let store = b.open().await;
    let mut log = Log::new();
    store
        .put_presence(&[presence("a", Live, 100), presence("b", Idle, 100)])
        .await
        .unwrap();
    let mut marked = presence("b", Live, 200);
    marked.silence_halted_ms = Some(150); // ignored by put_presence
    store
        .put_presence(&[
            presence("a", Unresponsive, 50), // older: no change
            marked,
            // Twice in one flush: the newest heartbeat wins, in either order.
            presence("c", Live, 300),
            presence("c", Idle, 250),
            presence("d", Idle, 400),
            presence("d", Live, 450),
            // A tie keeps the first (a heartbeat never replaces an equal one).
            presence("e", Live, 500),
            presence("e", Idle, 500),
        ])
        .await
        .unwrap();
    log.ops(
        store.as_ref(),
        vec![vec![
            StateOp::SilenceHalted {
                agent_id: "a".into(),
                heartbeat_ms: 100,
            },
            // No heartbeat row (its flush was lost): the silence makes one.
            StateOp::SilenceHalted {
                agent_id: "f".into(),
                heartbeat_ms: 600,
            },
        ]],
    )
    .await;
    log.ops(
        store.as_ref(),
        vec![vec![StateOp::SilenceHalted {
            agent_id: "a".into(),
            heartbeat_ms: 90, // older than the mark: kept at 100
        }]],
    )
    .await;
    store
        .put_presence(&[presence("a", Live, 700), presence("a", Idle, 800)])
        .await
        .unwrap();
    let store = b.reopen(store).await;
    let mut a = presence("a", Idle, 800);
    a.silence_halted_ms = Some(100);
    let mut f = presence("f", Unresponsive, 600);
    f.silence_halted_ms = Some(600);
    let want = vec![
        a,
        presence("b", Live, 200),
        presence("c", Live, 300),
        presence("d", Live, 450),
        presence("e", Live, 500),
        f,
    ];
    assert_eq!(load_all(store.as_ref()).await.presence, sorted(&want));
    // Only a shared store is asked: the embedded store's one server received every
    // heartbeat itself.
    assert_eq!(store.replicated().is_some(), b.is_pg());
    if let Some(pg) = store.replicated() {
        assert_eq!(sorted(&pg.shared_presence().await.unwrap()), sorted(&want));
    }
}

/// Agents seen twice in one batch (two Evaluates of one agent sealed together) and
/// sessions started twice: the same rows as one at a time.
async fn sightings_of_one_agent_within_one_batch(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let session = |s: &str, at: i64| StateOp::StartSession {
        agent_id: "a1".into(),
        session_id: s.into(),
        started_ms: at,
    };
    log.ops(
        store.as_ref(),
        vec![
            vec![touch("a1", 1_000, 1_000, Some(1_000)), session("s1", 1_000)],
            vec![touch("a1", 1_005, 1_005, None), session("s1", 1_005)],
            vec![
                touch("a1", 1_010, 1_010, Some(1_010)),
                touch("a1", 1_011, 1_008, None),
            ],
            vec![touch("a2", 1_020, 1_020, None)],
        ],
    )
    .await;
    let img = load_all(store.as_ref()).await;
    assert_eq!(
        img.agents,
        sorted(&[
            ("a1".to_owned(), 1_000i64, 1_010i64, Some(1_010i64)),
            ("a2".to_owned(), 1_020, 1_020, None),
        ])
    );
    assert_eq!(
        img.sessions,
        sorted(&[("a1".to_owned(), "s1".to_owned(), 1_000i64)])
    );
    let head = log.seq;
    // An existing agent seen twice again: last seen never moves back, last allowed
    // takes the newest value given.
    log.ops(
        store.as_ref(),
        vec![
            vec![touch("a1", 2_000, 900, Some(2_000))],
            vec![
                touch("a1", 2_001, 2_001, Some(1_500)),
                touch("a3", 5, 5, None),
            ],
            vec![touch("a1", 2_002, 950, None)],
        ],
    )
    .await;
    let store = b.reopen(store).await;
    let img = load_all(store.as_ref()).await;
    let want = [
        ("a1".to_owned(), 1_000i64, 2_001i64, Some(1_500i64)),
        ("a2".to_owned(), 1_020, 1_020, None),
        ("a3".to_owned(), 5, 5, None),
    ];
    assert_eq!(img.agents, sorted(&want));
    if let Some(pg) = store.replicated() {
        let (_, control) = pg.load_control(head).await.unwrap();
        // Only the agents changed by batches after `head`.
        assert_eq!(
            image(&control).agents,
            sorted(&[want[0].clone(), want[2].clone()])
        );
    }
}

/// A request id's stored answer comes back exactly; a second write of it is refused
/// and writes nothing.
async fn replayed_request_id(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    let written = log
        .commit(
            store.as_ref(),
            vec![
                (
                    draft(1_000, "evaluate", "a1", "s1", "allow"),
                    vec![remember("req-1", 1_000)],
                ),
                (
                    draft(1_001, "evaluate", "a1", "s1", "allow"),
                    vec![remember("req-old", 10)],
                ),
                (
                    draft(1_002, "record", "a1", "s1", "ok"),
                    vec![StateOp::Remember {
                        kind: "record",
                        key: "req-1".into(),
                        agent_id: "a1".into(),
                        fingerprint: "fp".into(),
                        created_ms: 1_002,
                    }],
                ),
            ],
        )
        .await
        .unwrap();
    let store = b.reopen(store).await;
    let row = store
        .find_reply("evaluate", "req-1")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        (
            row.kind.as_str(),
            row.key.as_str(),
            row.agent_id.as_str(),
            row.fingerprint.as_str(),
            row.response.as_deref(),
            row.audit_seq,
            row.created_ms,
        ),
        (
            "evaluate",
            "req-1",
            "a1",
            "fp-req-1",
            None,
            written[0].seq,
            1_000
        )
    );
    // No copy of the answer: the row reads back the entry it is rebuilt from.
    assert_eq!(row.entry.as_deref(), Some(written[0].canonical.as_str()));
    let record = store.find_reply("record", "req-1").await.unwrap().unwrap();
    assert_eq!((record.response.as_deref(), record.audit_seq), (None, 3));
    assert_eq!(record.entry.as_deref(), Some(written[2].canonical.as_str()));
    assert!(store
        .find_reply("evaluate", "req-2")
        .await
        .unwrap()
        .is_none());
    // Replies newer than the cutoff only.
    let img = image(&store.load(0, 1_000).await.unwrap());
    assert_eq!(img.replies.len(), 2, "{:?}", img.replies);
    assert!(img.replies.iter().all(|r| !r.contains("req-old")));
    assert_eq!(image(&store.load(0, 0).await.unwrap()).replies.len(), 3);
    // The replay: the same id again writes nothing, not even its entry.
    let before = snapshot(store.as_ref()).await;
    conflict(
        log.clone()
            .commit(
                store.as_ref(),
                vec![(
                    draft(2_000, "evaluate", "a1", "s1", "allow"),
                    vec![
                        touch("a1", 2_000, 2_000, Some(2_000)),
                        remember("req-1", 2_000),
                    ],
                )],
            )
            .await,
    );
    assert_eq!(snapshot(store.as_ref()).await, before);
    assert_eq!(
        store
            .find_reply("evaluate", "req-1")
            .await
            .unwrap()
            .unwrap()
            .audit_seq,
        written[0].seq
    );
}

/// Merkle nodes and checkpoints: written by a batch or alone (the start-up rebuild),
/// read one at a time or in bulk; a checkpoint is kept once per size.
async fn tree_nodes_and_checkpoints(b: Backend) {
    use arbiter_server::audit::merkle::Node;
    let store = b.open().await;
    let node = |level: u32, index: u64, fill: u8| Node {
        level,
        index,
        hash: [fill; 32],
    };
    let cp = |size: u64, note: &str| CheckpointRow {
        size,
        root_hex: hex::encode([size as u8; 32]),
        note: note.into(),
        ts_ms: size as i64,
    };
    store
        .put_tree(&TreeUpdate {
            nodes: vec![node(0, 0, 1), node(0, 1, 2), node(1, 0, 3)],
            checkpoint: Some(cp(2, "two\n")),
        })
        .await
        .unwrap();
    store
        .put_tree(&TreeUpdate {
            nodes: vec![node(0, 2, 4)],
            checkpoint: Some(cp(3, "three\n")),
        })
        .await
        .unwrap();
    // The same size again: the first checkpoint stays.
    store
        .put_tree(&TreeUpdate {
            nodes: vec![],
            checkpoint: Some(cp(3, "other\n")),
        })
        .await
        .unwrap();
    conflict(
        store
            .put_tree(&TreeUpdate {
                nodes: vec![node(0, 3, 5), node(0, 0, 9)],
                checkpoint: Some(cp(4, "four\n")),
            })
            .await,
    );
    let store = b.reopen(store).await;
    assert_eq!(store.tree_size().await.unwrap(), 3);
    assert_eq!(store.node(1, 0).await.unwrap(), Some([3; 32]));
    assert_eq!(store.node(0, 3).await.unwrap(), None, "rolled back");
    let got = store
        .nodes(&[(0, 0), (0, 2), (1, 0), (0, 3), (2, 0)])
        .await
        .unwrap();
    let mut got: Vec<_> = got.into_iter().collect();
    got.sort();
    assert_eq!(
        got,
        vec![((0, 0), [1; 32]), ((0, 2), [4; 32]), ((1, 0), [3; 32])]
    );
    assert_eq!(
        store.checkpoint(None).await.unwrap(),
        Some(cp(3, "three\n"))
    );
    assert_eq!(
        store.checkpoint(Some(2)).await.unwrap(),
        Some(cp(2, "two\n"))
    );
    assert_eq!(store.checkpoint(Some(4)).await.unwrap(), None);
}

/// The webhook delivery cursor: shared progress on PostgreSQL (never moves back);
/// the embedded store keeps none (its one server keeps its cursor in a file, and
/// `notify::lease` exists only on a shared store), so it has nothing to store it in.
async fn delivery_cursors(b: Backend) {
    let store = b.open().await;
    let Some(pg) = store.replicated() else {
        assert!(!b.is_pg(), "PostgreSQL keeps delivery cursors");
        return;
    };
    assert_eq!(pg.delivery_cursor("webhooks").await.unwrap(), None);
    pg.store_delivery_cursor("webhooks", 5).await.unwrap();
    pg.store_delivery_cursor("webhooks", 3).await.unwrap();
    pg.store_delivery_cursor("other", 1).await.unwrap();
    let store = b.reopen(store).await;
    let pg = store.replicated().expect("still PostgreSQL");
    assert_eq!(pg.delivery_cursor("webhooks").await.unwrap(), Some(5));
    assert_eq!(pg.delivery_cursor("other").await.unwrap(), Some(1));
    pg.store_delivery_cursor("webhooks", 9).await.unwrap();
    assert_eq!(pg.delivery_cursor("webhooks").await.unwrap(), Some(9));
    pg.store_delivery_cursor("webhooks", 9).await.unwrap();
    pg.store_delivery_cursor("webhooks", 0).await.unwrap();
    assert_eq!(pg.delivery_cursor("webhooks").await.unwrap(), Some(9));
    assert_eq!(pg.delivery_cursor("never").await.unwrap(), None);
}

/// Singleton-job leases: one holder per job on PostgreSQL, taken over when the holder
/// goes; the embedded store has no leases (its one server always leads,
/// `Engine::leads`).
async fn leases(b: Backend) {
    let first = b.open().await;
    let second = b.open().await;
    let (Some(one), Some(two)) = (first.replicated(), second.replicated()) else {
        assert!(!b.is_pg(), "PostgreSQL has leases");
        return;
    };
    assert!(one.lead("watchdog").await);
    assert!(one.lead("watchdog").await, "the holder keeps it");
    assert!(!two.lead("watchdog").await);
    assert!(two.lead("notifier").await, "another job");
    assert!(!one.lead("notifier").await);
    // The holder stops: its session ends, and the lease passes on.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    let two = second.replicated().expect("still PostgreSQL");
    while !two.lead("watchdog").await {
        assert!(Instant::now() < deadline, "the lease was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = b.open().await;
    let three = third.replicated().expect("still PostgreSQL");
    assert!(!three.lead("watchdog").await);
    assert!(!three.lead("notifier").await);
}

/// What only a shared store does, and its absence on the embedded one.
async fn shared_store_capabilities(b: Backend) {
    let store = b.open().await;
    let mut log = Log::new();
    assert_eq!(store.replicated().is_some(), b.is_pg());
    let pool = store.pool_stats().expect("both backends pool connections");
    assert_eq!(pool.max, 8);
    let k = key("daily", "agent:a1", 0);
    log.ops(
        store.as_ref(),
        vec![vec![
            StateOp::AddSpend {
                keys: vec![k.clone()],
                amounts: amounts(1, 2, 3),
            },
            StateOp::SetTrust(TrustAssignment {
                agent_id: "a1".into(),
                scope: String::new(),
                level: TrustLevel::L2Suggest,
                assigned_by: "ops".into(),
                assigned_ms: 1,
            }),
        ]],
    )
    .await;
    let Some(pg) = store.replicated() else {
        // None of it exists on the embedded store: its callers take their single-writer
        // path instead.
        assert!(!b.is_pg());
        return;
    };
    assert!(b.is_pg());
    let changes = pg.watch_changes();
    let (head, control) = pg.load_control(0).await.unwrap();
    assert_eq!(head, 1);
    let control = image(&control);
    assert_eq!(control.counters, sorted(&[(k.clone(), amounts(1, 2, 3))]));
    assert_eq!(control.trust.len(), 1);
    let (head, control) = pg.load_control(1).await.unwrap();
    assert_eq!(head, 1);
    assert!(
        image(&control).counters.is_empty(),
        "nothing changed after seq 1"
    );
    // A control change committed under the sequencer reaches every listener. The
    // listener connects in the background, so commit until one arrives.
    let mut changes = changes;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let batch = pg.begin_sequenced().await.unwrap();
        let (next, units, tree) = log.seal(vec![(
            draft(2_000, "admin", "a1", "", "ok"),
            vec![StateOp::SetOperator {
                agent_id: "a1".into(),
                operator: "alice".into(),
                set_by: "admin".into(),
                set_ms: 2_000,
            }],
        )]);
        batch.commit(&units, &tree).await.unwrap();
        log = next;
        if tokio::time::timeout(Duration::from_millis(300), changes.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no change notification arrived");
    }
    verify_chain(&all_entries(store.as_ref()).await);
}

// ---------------------------------------------------------------------------------
// Both backends side by side

/// One script, run on SQLite and on PostgreSQL: everything both return is identical.
async fn script(store: &dyn Store) -> Snapshot {
    let mut log = Log::new();
    let k = key("daily", "agent:a1", 86_400_000);
    let r = reservation("r1", std::slice::from_ref(&k), amounts(10, 20, 1), 90_000);
    log.ops(
        store,
        vec![
            vec![
                touch("a1", 1_000, 1_000, Some(1_000)),
                StateOp::StartSession {
                    agent_id: "a1".into(),
                    session_id: "s1".into(),
                    started_ms: 1_000,
                },
                StateOp::Reserve(r.clone()),
                StateOp::OpenDecision(OpenDecision {
                    decision_id: "d-r1".into(),
                    agent_id: "a1".into(),
                    session_id: "s1".into(),
                    model: None,
                    reservation: Some(r.clone()),
                    created_ms: 1_000,
                }),
                remember("req-1", 1_000),
            ],
            vec![touch("a1", 1_001, 1_001, None)],
            vec![
                StateOp::CreatePrincipal(principal("Zed", Some("z"), None)),
                StateOp::CreatePrincipal(principal("_ops", Some("o"), None)),
                StateOp::CreatePrincipal(principal("alice", Some("a"), None)),
                StateOp::PolicyLoad {
                    version: "v1".into(),
                    source: "p.yaml".into(),
                    loaded_ms: 1,
                    accepted: true,
                    error: String::new(),
                    bundle: Some(Arc::from(&b"\x00bundle\xff"[..])),
                },
            ],
        ],
    )
    .await;
    log.ops(
        store,
        vec![
            vec![
                StateOp::CloseDecision {
                    decision_id: "d-r1".into(),
                },
                StateOp::SettleReservation { id: "r1".into() },
                StateOp::AddSpend {
                    keys: vec![k.clone()],
                    amounts: amounts(9, 18, 1),
                },
            ],
            vec![
                StateOp::PutConsent(ConsentGrant {
                    agent_id: "a1".into(),
                    data_type: "pii".into(),
                    purpose: None,
                    granted_by: "ops".into(),
                    granted_ms: 2,
                    expires_ms: None,
                }),
                StateOp::EngageHalt(halt(
                    HaltTarget::Session("a1".into(), "s1".into()),
                    HaltMode::HaltAll,
                    "ß",
                    2,
                )),
                StateOp::PutApproval(approval("ap1", ApprovalState::Pending)),
                StateOp::WatchdogMark {
                    condition: "c".into(),
                    marked_ms: 2,
                },
            ],
        ],
    )
    .await;
    store
        .put_presence(&[
            presence("a1", PresenceStatus::Live, 5),
            presence("a1", PresenceStatus::Idle, 7),
        ])
        .await
        .unwrap();
    let mut snap = snapshot(store).await;
    // The control snapshot exists only on the shared store.
    snap.control = None;
    snap
}

mod both {
    use super::*;

    #[tokio::test]
    async fn same_script_same_state() {
        let Some(admin) = pg_admin_url("both::same_script_same_state") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Backend {
            kind: Kind::Sqlite,
            dir: Some(dir),
            url: None,
        };
        let on_sqlite = script(sqlite.open().await.as_ref()).await;
        let (url, name) = create_database(&admin).await;
        let pg = Backend {
            kind: Kind::Postgres,
            dir: None,
            url: Some(url),
        };
        let on_pg = tokio::spawn(async move { script(pg.open().await.as_ref()).await }).await;
        drop_database(&admin, &name).await;
        let on_pg = on_pg.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        assert_eq!(on_sqlite, on_pg);
        assert_eq!(on_sqlite.count, 5);
        assert_eq!(on_sqlite.principals.len(), 3);
    }
}
