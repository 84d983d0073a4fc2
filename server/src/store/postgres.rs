//! The PostgreSQL backend, for several replicas on one database. All SQL for it lives
//! here; it mirrors `sqlite.rs` statement for statement.

use super::rows::{self, json, to_i64, to_json, to_u64, ENTRY_COLUMNS};
use super::{
    AuditQuery, CheckpointRow, CommitUnit, PolicyLoadRow, PresenceRow, PrincipalRow, ReplyRow,
    StateImage, StateOp, Store, StoreError, TreeUpdate, REPLY_COLUMNS, REPLY_JOIN,
};
use super::{Replicated, SequencedBatch};
use crate::audit::SealedEntry;
use crate::state::{Amounts, CounterKey, OpenDecision};
use crate::state::{Halt, HaltMode, HaltTarget};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{
    AssertSqlSafe, ConnectOptions, Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row,
};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tracing::instrument;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Channel on which every commit of a control change notifies the other replicas.
pub const NOTIFY_CHANNEL: &str = "arbiter_control";

/// Advisory lock held around each group commit: one sequencer at a time.
const SEQUENCER_LOCK: i64 = 0x4172_6269_7465_7201;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    options: PgConnectOptions,
    /// Connections holding a session-level advisory lock, one per singleton job.
    leases: Arc<tokio::sync::Mutex<HashMap<&'static str, PgConnection>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the connection options: they may hold a password.
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// The advisory lock key of a singleton job (FNV-1a of its name).
fn job_key(job: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in job.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Parses a `postgres://` URL. The error never repeats the URL: it may hold a password.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url).map_err(|_| {
        StoreError::Unavailable("the database URL is not a valid postgres:// URL".into())
    })
}

impl PgStore {
    /// Connects lazily: the pool opens connections on demand and replaces broken ones,
    /// so the server starts answering again on its own once the database is back.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = connect_options(url)?.application_name("arbiter");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // Short, so a request fails fast (fail closed) while the database is away.
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(opts.clone())
            .await?;
        Ok(Self {
            pool,
            options: opts,
            leases: Arc::default(),
        })
    }

    /// Applies pending migrations (under sqlx's advisory lock, so replicas starting
    /// together do not race).
    ///
    /// When every migration is already applied (same versions and checksums) nothing is
    /// run, so the server can run as a least-privilege role without CREATE rights;
    /// `arbiter migrate` as the owner role applies new ones (docs/postgres.md).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let applied: Result<Vec<(i64, Vec<u8>)>, sqlx::Error> =
            sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await;
        if let Ok(applied) = applied {
            let current = MIGRATOR.iter().all(|m| {
                applied
                    .iter()
                    .any(|(v, c)| *v == m.version && c.as_slice() == &*m.checksum)
            });
            if current {
                return Ok(());
            }
        }
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PgStore {
    fn replicated(&self) -> Option<&dyn Replicated> {
        Some(self)
    }

    async fn principals(&self) -> Result<Vec<PrincipalRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        read_principals(&mut conn).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        let row = sqlx::query("SELECT seq, mac FROM audit_entries ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((to_u64(r.try_get("seq")?), r.try_get("mac")?)))
            .transpose()
    }

    #[instrument(skip_all)]
    async fn load(&self, now_ms: i64, replies_since_ms: i64) -> Result<StateImage, StoreError> {
        let mut img = StateImage::default();
        let mut conn = self.pool.acquire().await?;
        load_control_into(&mut conn, &mut img).await?;
        // Settled spend only, as SQLite keeps it: a row that only ever held reservations
        // (written by `shift_reserved`, spent_seq never set) has none to load.
        for r in sqlx::query(
            "SELECT budget, scope_key, window_start_ms, spent_micro_usd, spent_tokens, spent_calls \
             FROM budget_counters WHERE spent_seq > 0 OR spent_micro_usd <> 0 OR spent_tokens <> 0 \
             OR spent_calls <> 0",
        )
        .fetch_all(&self.pool)
        .await?
        {
            img.counters.push(rows::counter(&r)?);
        }
        for r in sqlx::query(
            "SELECT id, decision_id, agent_id, keys_json, micro_usd, tokens, calls, created_ms, expires_ms
             FROM reservations WHERE settled = 0 AND expires_ms > $1",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?
        {
            img.reservations.push(rows::reservation(&r)?);
        }
        for r in sqlx::query("SELECT body_json FROM decisions WHERE recorded = 0")
            .fetch_all(&self.pool)
            .await?
        {
            img.open_decisions.push(rows::body(&r)?);
        }
        for r in
            sqlx::query("SELECT agent_id, first_seen_ms, last_seen_ms, last_allowed_ms FROM agents")
                .fetch_all(&self.pool)
                .await?
        {
            img.agents.push(rows::agent(&r)?);
        }
        img.watchdog_marks = sqlx::query_scalar("SELECT condition FROM watchdog_marks")
            .fetch_all(&self.pool)
            .await?;
        for r in sqlx::query("SELECT agent_id, session_id, started_ms FROM sessions")
            .fetch_all(&self.pool)
            .await?
        {
            img.sessions.push(rows::session(&r)?);
        }
        for r in sqlx::query(AssertSqlSafe(format!(
            "SELECT {REPLY_COLUMNS} FROM replies r {REPLY_JOIN} WHERE r.created_ms >= $1"
        )))
        .bind(replies_since_ms)
        .fetch_all(&self.pool)
        .await?
        {
            img.replies.push(rows::reply(&r)?);
        }
        img.presence = read_presence(&mut conn).await?;
        Ok(img)
    }

    #[instrument(skip_all, fields(units = units.len()))]
    async fn commit(&self, units: &[CommitUnit], tree: &TreeUpdate) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        write_batch(&mut tx, units).await?;
        write_tree(&mut tx, tree).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_tree(&self, tree: &TreeUpdate) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        write_tree(&mut tx, tree).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_entries")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(n))
    }

    async fn tree_size(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM merkle_nodes WHERE level = 0")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(n))
    }

    async fn node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>, StoreError> {
        let h: Option<String> =
            sqlx::query_scalar("SELECT hash FROM merkle_nodes WHERE level = $1 AND idx = $2")
                .bind(i64::from(level))
                .bind(to_i64(index))
                .fetch_optional(&self.pool)
                .await?;
        h.map(|h| rows::node_hash(i64::from(level), to_i64(index), &h))
            .transpose()
    }

    async fn nodes(
        &self,
        wanted: &[(u32, u64)],
    ) -> Result<std::collections::HashMap<(u32, u64), [u8; 32]>, StoreError> {
        let mut out = std::collections::HashMap::new();
        for chunk in wanted.chunks(CHUNK) {
            let mut q = QueryBuilder::<Postgres>::new(
                "SELECT level, idx, hash FROM merkle_nodes WHERE (level, idx) IN (VALUES ",
            );
            let mut list = q.separated(", ");
            for &(level, index) in chunk {
                list.push("(");
                list.push_bind_unseparated(i64::from(level));
                list.push_unseparated(", ");
                list.push_bind_unseparated(to_i64(index));
                list.push_unseparated(")");
            }
            q.push(")");
            for r in q.build().fetch_all(&self.pool).await? {
                let level: i64 = r.try_get("level")?;
                let index: i64 = r.try_get("idx")?;
                let h = rows::node_hash(level, index, &r.try_get::<String, _>("hash")?)?;
                out.insert((level as u32, to_u64(index)), h);
            }
        }
        Ok(out)
    }

    async fn checkpoint(&self, size: Option<u64>) -> Result<Option<CheckpointRow>, StoreError> {
        let row =
            match size {
                Some(n) => {
                    sqlx::query("SELECT size, root, note, ts_ms FROM checkpoints WHERE size = $1")
                        .bind(to_i64(n))
                        .fetch_optional(&self.pool)
                        .await?
                }
                None => sqlx::query(
                    "SELECT size, root, note, ts_ms FROM checkpoints ORDER BY size DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await?,
            };
        row.as_ref().map(rows::checkpoint).transpose()
    }

    #[instrument(skip_all)]
    async fn audit_range(
        &self,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<SealedEntry>, StoreError> {
        sqlx::query(AssertSqlSafe(format!("SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3")))
            .bind(to_i64(from_seq))
            .bind(to_i64(to_seq))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::entry)
            .collect()
    }

    #[instrument(skip_all)]
    async fn query_audit(
        &self,
        q: &AuditQuery,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<SealedEntry>, StoreError> {
        // Only fixed fragments are pushed as SQL; every value is a bound parameter.
        let mut b = QueryBuilder::<Postgres>::new(format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq > "
        ));
        b.push_bind(to_i64(after_seq));
        if let Some(a) = &q.agent_id {
            b.push(" AND agent_id = ").push_bind(a.clone());
        }
        if let Some(s) = &q.session_id {
            b.push(" AND session_id = ").push_bind(s.clone());
        }
        if !q.kinds.is_empty() {
            b.push(" AND kind IN (");
            let mut list = b.separated(", ");
            for k in &q.kinds {
                list.push_bind(k.clone());
            }
            b.push(")");
        }
        if let Some(o) = &q.outcome {
            b.push(" AND outcome = ").push_bind(o.clone());
        }
        if let Some(t) = q.since_ms {
            b.push(" AND ts_ms >= ").push_bind(t);
        }
        if let Some(t) = q.until_ms {
            b.push(" AND ts_ms < ").push_bind(t);
        }
        b.push(if q.newest_first {
            " ORDER BY seq DESC LIMIT "
        } else {
            " ORDER BY seq LIMIT "
        })
        .push_bind(i64::from(limit));
        b.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::entry)
            .collect()
    }

    async fn policy_loads(&self, limit: u32) -> Result<Vec<PolicyLoadRow>, StoreError> {
        sqlx::query("SELECT version, source, loaded_ms, accepted, error FROM policy_loads ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::policy_load)
            .collect()
    }

    async fn published_policy(&self) -> Result<Option<super::PublishedPolicy>, StoreError> {
        sqlx::query(super::PUBLISHED_POLICY)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(rows::published_policy)
            .transpose()
    }

    fn pool_stats(&self) -> Option<super::PoolStats> {
        Some(super::PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        })
    }

    async fn put_presence(&self, rows: &[PresenceRow]) -> Result<(), StoreError> {
        let rows = newest_heartbeats(rows);
        for chunk in rows.chunks(CHUNK) {
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO presence (agent_id, status, last_heartbeat_ms) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.agent_id.clone())
                    .push_bind(r.status.name())
                    .push_bind(r.last_heartbeat_ms);
            });
            // Several replicas write the same rows: a heartbeat older than the stored one
            // (received elsewhere, or flushed late) changes nothing, and the status stays
            // the one reported with the newest heartbeat.
            q.push(
                " ON CONFLICT (agent_id) DO UPDATE SET status = excluded.status, \
                 last_heartbeat_ms = excluded.last_heartbeat_ms \
                 WHERE presence.last_heartbeat_ms < excluded.last_heartbeat_ms",
            );
            q.build().execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn find_reply(&self, kind: &str, key: &str) -> Result<Option<ReplyRow>, StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {REPLY_COLUMNS} FROM replies r {REPLY_JOIN} WHERE r.kind = $1 AND r.key = $2"
        )))
        .bind(kind)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(rows::reply)
        .transpose()
    }
}

#[async_trait]
impl Replicated for PgStore {
    async fn begin_sequenced(&self) -> Result<Box<dyn SequencedBatch>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SEQUENCER_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(Box::new(PgBatch { tx }))
    }

    async fn load_control(&self, changed_after_seq: u64) -> Result<(u64, StateImage), StoreError> {
        let mut tx = self.pool.begin().await?;
        // One snapshot: the head and the control tables agree.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let head: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM audit_entries")
            .fetch_one(&mut *tx)
            .await?;
        let mut img = StateImage::default();
        load_control_into(&mut tx, &mut img).await?;
        // In the same snapshot as the rest: a principal set read apart could be older
        // than the snapshot's sequence number says, and replace a newer one.
        img.principals = Some(read_principals(&mut tx).await?);
        img.published_policy = sqlx::query_scalar(
            "SELECT version FROM policy_loads WHERE accepted = 1 AND bundle IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        for r in sqlx::query(
            "SELECT budget, scope_key, window_start_ms, spent_micro_usd, spent_tokens, spent_calls \
             FROM budget_counters WHERE spent_seq > $1",
        )
        .bind(to_i64(changed_after_seq))
        .fetch_all(&mut *tx)
        .await?
        {
            img.counters.push(rows::counter(&r)?);
        }
        for r in sqlx::query(
            "SELECT agent_id, first_seen_ms, last_seen_ms, last_allowed_ms FROM agents WHERE seen_seq > $1",
        )
        .bind(to_i64(changed_after_seq))
        .fetch_all(&mut *tx)
        .await?
        {
            img.agents.push(rows::agent(&r)?);
        }
        tx.commit().await?;
        Ok((to_u64(head.unwrap_or(0)), img))
    }

    async fn find_open_decision(
        &self,
        decision_id: &str,
    ) -> Result<Option<OpenDecision>, StoreError> {
        let body: Option<String> = sqlx::query_scalar(
            "SELECT body_json FROM decisions WHERE decision_id = $1 AND recorded = 0",
        )
        .bind(decision_id)
        .fetch_optional(&self.pool)
        .await?;
        body.map(|b| json::<OpenDecision>(&b)).transpose()
    }

    fn watch_changes(&self) -> tokio::sync::mpsc::Receiver<()> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                let listener = async {
                    let mut l = PgListener::connect_with(&pool).await?;
                    l.listen(NOTIFY_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                match listener.await {
                    Ok(mut l) => loop {
                        match l.try_recv().await {
                            // A full channel already holds a pending signal.
                            Ok(Some(_)) => {
                                let _ = tx.try_send(());
                            }
                            // The connection was lost and is re-established on the next
                            // call; what was missed is caught by the periodic re-check.
                            Ok(None) => {
                                let _ = tx.try_send(());
                            }
                            Err(_) => break,
                        }
                        if tx.is_closed() {
                            return;
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed; retrying"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        rx
    }

    async fn shared_presence(&self) -> Result<Vec<PresenceRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        read_presence(&mut conn).await
    }

    async fn lead(&self, job: &'static str) -> bool {
        // Bounded like pool acquisition: a database that drops packets must not hold
        // the lease jobs (and this mutex) for the operating system's TCP timeout.
        const LEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
        let mut leases = self.leases.lock().await;
        if let Some(conn) = leases.get_mut(job) {
            if matches!(
                tokio::time::timeout(LEASE_TIMEOUT, conn.ping()).await,
                Ok(Ok(()))
            ) {
                return true;
            }
            // The session (and its lock) is gone; try to take the lease again.
            leases.remove(job);
        }
        let Ok(Ok(mut conn)) = tokio::time::timeout(LEASE_TIMEOUT, self.options.connect()).await
        else {
            return false;
        };
        let held: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(job_key(job))
            .fetch_one(&mut conn)
            .await;
        if matches!(held, Ok(true)) {
            leases.insert(job, conn);
            true
        } else {
            false
        }
    }

    async fn delivery_cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM delivery_cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(seq.map(|s| s.max(0) as u64))
    }

    async fn store_delivery_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO delivery_cursors (name, seq) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET seq = GREATEST(delivery_cursors.seq, EXCLUDED.seq)",
        )
        .bind(name)
        .bind(to_i64(seq))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prune_loop_ticks(&self, before_ms: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM loop_ticks WHERE ts_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn handle(&self) -> Arc<dyn Replicated> {
        // A clone shares the pool and the lease connections, so it holds what this
        // handle holds.
        Arc::new(self.clone())
    }
}

/// A group commit under the sequencer lock (`pg_advisory_xact_lock`, released by the
/// commit or rollback).
struct PgBatch {
    tx: sqlx::Transaction<'static, Postgres>,
}

#[async_trait]
impl SequencedBatch for PgBatch {
    async fn approval_state(
        &mut self,
        id: &str,
    ) -> Result<Option<crate::state::ApprovalState>, StoreError> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM approvals WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        state
            .map(|name| {
                crate::state::ApprovalState::parse(&name).ok_or_else(|| {
                    StoreError::Corrupt(format!("approval {id} has unknown state {name:?}"))
                })
            })
            .transpose()
    }

    async fn loop_calls(
        &mut self,
        agent_id: &str,
        session_id: &str,
        tool: &str,
        since_ms: i64,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM loop_ticks WHERE agent_id = $1 AND session_id = $2 AND tool = $3 AND ts_ms > $4",
        )
        .bind(agent_id)
        .bind(session_id)
        .bind(tool)
        .bind(since_ms)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(to_u64(n))
    }

    async fn halt(&mut self, target: &HaltTarget) -> Result<Option<Halt>, StoreError> {
        let row =
            sqlx::query("SELECT mode, reason, engaged_by, engaged_ms FROM halts WHERE target = $1")
                .bind(target.key())
                .fetch_optional(&mut *self.tx)
                .await?;
        row.map(|r| {
            let mode: String = r.try_get("mode")?;
            Ok(Halt {
                target: target.clone(),
                mode: HaltMode::parse(&mode)
                    .ok_or_else(|| StoreError::Corrupt(format!("halt mode {mode:?}")))?,
                reason: r.try_get("reason")?,
                engaged_by: r.try_get("engaged_by")?,
                engaged_ms: r.try_get("engaged_ms")?,
            })
        })
        .transpose()
    }

    async fn tool_pin(
        &mut self,
        server: &str,
        tool: &str,
    ) -> Result<Option<crate::state::ToolPin>, StoreError> {
        let row =
            sqlx::query("SELECT body_json FROM mcp_tool_pins WHERE server = $1 AND tool = $2")
                .bind(server)
                .bind(tool)
                .fetch_optional(&mut *self.tx)
                .await?;
        row.as_ref().map(rows::body).transpose()
    }

    async fn watchdog_marked(&mut self, condition: &str) -> Result<bool, StoreError> {
        let marked: Option<i64> =
            sqlx::query_scalar("SELECT 1::BIGINT FROM watchdog_marks WHERE condition = $1")
                .bind(condition)
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(marked.is_some())
    }

    async fn decision_open(&mut self, decision_id: &str) -> Result<bool, StoreError> {
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT 1::BIGINT FROM decisions WHERE decision_id = $1 AND recorded = 0",
        )
        .bind(decision_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(open.is_some())
    }

    async fn budget_usage(
        &mut self,
        keys: &[CounterKey],
        now_ms: i64,
    ) -> Result<HashMap<CounterKey, Amounts>, StoreError> {
        // Reservations that ran out of time stop counting here, under the sequencer
        // lock, so every replica sees the same held amounts (the index on
        // (settled, expires_ms) makes this a no-op when nothing expired).
        let expired = sqlx::query(
            "UPDATE reservations SET settled = 2 WHERE settled = 0 AND expires_ms <= $1 \
             RETURNING keys_json, micro_usd, tokens, calls",
        )
        .bind(now_ms)
        .fetch_all(&mut *self.tx)
        .await?;
        release_reserved(&mut self.tx, &expired).await?;
        let mut usage = HashMap::new();
        if keys.is_empty() {
            return Ok(usage);
        }
        let rows = sqlx::query(
            "SELECT c.budget, c.scope_key, c.window_start_ms, spent_micro_usd, spent_tokens, \
                    spent_calls, reserved_micro_usd, reserved_tokens, reserved_calls \
             FROM budget_counters c \
             JOIN UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS k(budget, scope_key, window_start_ms) \
               USING (budget, scope_key, window_start_ms)",
        )
        .bind(keys.iter().map(|k| k.budget.as_str()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.scope_key.as_str()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.window_start_ms).collect::<Vec<_>>())
        .fetch_all(&mut *self.tx)
        .await?;
        for r in rows {
            let mut held = Amounts::default();
            for prefix in ["spent", "reserved"] {
                held.add(Amounts {
                    micro_usd: to_u64(r.try_get(format!("{prefix}_micro_usd").as_str())?),
                    tokens: to_u64(r.try_get(format!("{prefix}_tokens").as_str())?),
                    calls: to_u64(r.try_get(format!("{prefix}_calls").as_str())?),
                });
            }
            let key = CounterKey {
                budget: r.try_get("budget")?,
                scope_key: r.try_get("scope_key")?,
                window_start_ms: r.try_get("window_start_ms")?,
            };
            usage.insert(key, held);
        }
        Ok(usage)
    }

    async fn head(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        let row = sqlx::query("SELECT seq, mac FROM audit_entries ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| Ok((to_u64(r.try_get("seq")?), r.try_get("mac")?)))
            .transpose()
    }

    async fn commit(
        mut self: Box<Self>,
        units: &[CommitUnit],
        tree: &TreeUpdate,
    ) -> Result<(), StoreError> {
        write_batch(&mut self.tx, units).await?;
        write_tree(&mut self.tx, tree).await?;
        if units.iter().any(|u| u.ops.iter().any(super::is_control_op)) {
            // Delivered to every listener when (and only if) the transaction commits.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(NOTIFY_CHANNEL)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// Trust, consent, operators, tool pins, approvals and halts: what other replicas change.
async fn load_control_into(
    conn: &mut sqlx::PgConnection,
    img: &mut StateImage,
) -> Result<(), StoreError> {
    for r in sqlx::query(
        "SELECT agent_id, scope, level, assigned_by, assigned_ms FROM trust_assignments",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        img.trust.push(rows::trust(&r)?);
    }
    for r in sqlx::query("SELECT agent_id, data_type, purpose, granted_by, granted_ms, expires_ms FROM consent_grants")
        .fetch_all(&mut *conn)
        .await?
    {
        img.consent.push(rows::consent(&r)?);
    }
    for r in sqlx::query("SELECT agent_id, operator FROM agent_operators")
        .fetch_all(&mut *conn)
        .await?
    {
        img.operators.push(rows::operator(&r)?);
    }
    for r in sqlx::query("SELECT body_json FROM mcp_tool_pins")
        .fetch_all(&mut *conn)
        .await?
    {
        img.tool_pins.push(rows::body(&r)?);
    }
    for r in sqlx::query("SELECT body_json FROM approvals")
        .fetch_all(&mut *conn)
        .await?
    {
        img.approvals.push(rows::body(&r)?);
    }
    for r in sqlx::query(
        "SELECT scope, agent_id, session_id, mode, reason, engaged_by, engaged_ms FROM halts",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        img.halts.push(rows::halt(&r)?);
    }
    Ok(())
}

/// Every principal, revoked ones included, in byte order of the name.
async fn read_principals(conn: &mut sqlx::PgConnection) -> Result<Vec<PrincipalRow>, StoreError> {
    // Byte order, as SQLite's BINARY collation sorts: the database's default collation
    // (en_US and the like) would list `alice` before `Bob` here and after it there.
    sqlx::query(
        "SELECT name, roles, agents, key_hash, key_prefix, tls_identity, created_by, created_ms, revoked_ms FROM principals ORDER BY name COLLATE \"C\"",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(rows::principal)
    .collect()
}

/// Every agent's newest heartbeat.
async fn read_presence(conn: &mut sqlx::PgConnection) -> Result<Vec<PresenceRow>, StoreError> {
    sqlx::query("SELECT agent_id, status, last_heartbeat_ms, silence_halted_ms FROM presence")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(rows::presence)
        .collect()
}

/// Rows per multi-row statement; 9 columns × 500 stays far below SQLite's bound-parameter limit.
const CHUNK: usize = 500;

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// Writes a batch with one multi-row statement per table instead of one per row, so the
/// group commit costs per batch, not per decision. Inserts run before updates, and the
/// rare administrative changes run last, in their original order.
async fn write_batch(tx: &mut Tx<'_>, units: &[CommitUnit]) -> Result<(), StoreError> {
    for chunk in units.chunks(CHUNK) {
        let mut q =
            QueryBuilder::<Postgres>::new(format!("INSERT INTO audit_entries ({ENTRY_COLUMNS}) "));
        q.push_values(chunk, |mut b, u| {
            let e = &u.entry;
            b.push_bind(to_i64(e.seq))
                .push_bind(e.ts_ms)
                .push_bind(e.kind.clone())
                .push_bind(e.agent_id.clone())
                .push_bind(e.session_id.clone())
                .push_bind(e.outcome.clone())
                .push_bind(e.key_id.clone())
                .push_bind(e.canonical.clone())
                .push_bind(e.mac.clone());
        });
        q.build().execute(&mut **tx).await?;
    }

    let mut agents = Vec::new();
    let mut sessions = Vec::new();
    let mut reservations = Vec::new();
    let mut settled = Vec::new();
    let mut spend: BTreeMap<CounterKey, Amounts> = BTreeMap::new();
    let mut opened = Vec::new();
    let mut closed = Vec::new();
    let mut replies = Vec::new();
    let mut admin = Vec::new();
    let mut ticks = Vec::new();
    for unit in units {
        for op in &unit.ops {
            match op {
                StateOp::TouchAgent {
                    agent_id,
                    first_seen_ms,
                    last_seen_ms,
                    last_allowed_ms,
                } => agents.push((
                    agent_id.clone(),
                    *first_seen_ms,
                    *last_seen_ms,
                    *last_allowed_ms,
                )),
                StateOp::StartSession {
                    agent_id,
                    session_id,
                    started_ms,
                } => sessions.push((agent_id.clone(), session_id.clone(), *started_ms)),
                StateOp::Reserve(r) => reservations.push(r.clone()),
                StateOp::SettleReservation { id } => settled.push(id.clone()),
                StateOp::AddSpend { keys, amounts } => {
                    for k in keys {
                        spend.entry(k.clone()).or_default().add(*amounts);
                    }
                }
                StateOp::OpenDecision(d) => opened.push(d.clone()),
                StateOp::CloseDecision { decision_id } => closed.push(decision_id.clone()),
                StateOp::LoopTick {
                    agent_id,
                    session_id,
                    tool,
                    ts_ms,
                    ..
                } => ticks.push((agent_id.clone(), session_id.clone(), tool.clone(), *ts_ms)),
                StateOp::Remember {
                    kind,
                    key,
                    agent_id,
                    fingerprint,
                    created_ms,
                } => replies.push((
                    *kind,
                    key.clone(),
                    agent_id.clone(),
                    fingerprint.clone(),
                    unit.entry.seq,
                    *created_ms,
                )),
                _ => admin.push(op),
            }
        }
    }

    // Batches commit in seq order under the sequencer lock, so "changed after seq N"
    // is a watermark a reader can resume from (`load_control`).
    let batch_seq = units.last().map_or(0, |u| to_i64(u.entry.seq));
    let agents = fold_sightings(agents);
    for chunk in agents.chunks(CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO agents (agent_id, first_seen_ms, last_seen_ms, last_allowed_ms, seen_seq) ",
        );
        q.push_values(chunk, |mut b, (id, first, last, allowed)| {
            b.push_bind(id.clone())
                .push_bind(*first)
                .push_bind(*last)
                .push_bind(*allowed)
                .push_bind(batch_seq);
        });
        q.push(
            " ON CONFLICT (agent_id) DO UPDATE SET last_seen_ms = GREATEST(agents.last_seen_ms, excluded.last_seen_ms), \
             last_allowed_ms = COALESCE(excluded.last_allowed_ms, agents.last_allowed_ms), \
             seen_seq = excluded.seen_seq",
        );
        q.build().execute(&mut **tx).await?;
    }
    for chunk in sessions.chunks(CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO sessions (agent_id, session_id, started_ms) ",
        );
        q.push_values(chunk, |mut b, (agent, session, started)| {
            b.push_bind(agent.clone())
                .push_bind(session.clone())
                .push_bind(*started);
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    for chunk in reservations.chunks(CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO reservations (id, decision_id, agent_id, keys_json, micro_usd, tokens, calls, created_ms, expires_ms) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.id.clone())
                .push_bind(r.decision_id.clone())
                .push_bind(r.agent_id.clone())
                .push_bind(to_json(&r.keys))
                .push_bind(to_i64(r.amounts.micro_usd))
                .push_bind(to_i64(r.amounts.tokens))
                .push_bind(to_i64(r.amounts.calls))
                .push_bind(r.created_ms)
                .push_bind(r.expires_ms);
        });
        q.build().execute(&mut **tx).await?;
    }
    let mut held: BTreeMap<CounterKey, [i64; 3]> = BTreeMap::new();
    for r in &reservations {
        for k in &r.keys {
            let d = held.entry(k.clone()).or_default();
            d[0] += to_i64(r.amounts.micro_usd);
            d[1] += to_i64(r.amounts.tokens);
            d[2] += to_i64(r.amounts.calls);
        }
    }
    shift_reserved(tx, held).await?;
    for chunk in opened.chunks(CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO decisions (decision_id, agent_id, body_json, created_ms) ",
        );
        q.push_values(chunk, |mut b, d| {
            b.push_bind(d.decision_id.clone())
                .push_bind(d.agent_id.clone())
                .push_bind(to_json(d))
                .push_bind(d.created_ms);
        });
        q.build().execute(&mut **tx).await?;
    }
    for chunk in replies.chunks(CHUNK) {
        // An empty response: the answer is rebuilt from the entry at audit_seq.
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO replies (kind, key, agent_id, fingerprint, response, audit_seq, created_ms) ",
        );
        q.push_values(
            chunk,
            |mut b, (kind, key, agent, fingerprint, seq, created)| {
                b.push_bind(*kind)
                    .push_bind(key.clone())
                    .push_bind(agent.clone())
                    .push_bind(fingerprint.clone())
                    .push_bind("")
                    .push_bind(to_i64(*seq))
                    .push_bind(*created);
            },
        );
        q.build().execute(&mut **tx).await?;
    }
    let spend: Vec<(CounterKey, Amounts)> = spend.into_iter().collect();
    for chunk in spend.chunks(CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO budget_counters (budget, scope_key, window_start_ms, spent_micro_usd, spent_tokens, spent_calls, spent_seq) ",
        );
        q.push_values(chunk, |mut b, (k, a)| {
            b.push_bind(k.budget.clone())
                .push_bind(k.scope_key.clone())
                .push_bind(k.window_start_ms)
                .push_bind(to_i64(a.micro_usd))
                .push_bind(to_i64(a.tokens))
                .push_bind(to_i64(a.calls))
                .push_bind(batch_seq);
        });
        q.push(
            " ON CONFLICT (budget, scope_key, window_start_ms) DO UPDATE SET \
             spent_micro_usd = budget_counters.spent_micro_usd + excluded.spent_micro_usd, \
             spent_tokens = budget_counters.spent_tokens + excluded.spent_tokens, \
             spent_calls = budget_counters.spent_calls + excluded.spent_calls, \
             spent_seq = excluded.spent_seq",
        );
        q.build().execute(&mut **tx).await?;
    }
    for chunk in ticks.chunks(CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO loop_ticks (agent_id, session_id, tool, ts_ms) ",
        );
        q.push_values(chunk, |mut b, (agent, session, tool, ts)| {
            b.push_bind(agent.clone())
                .push_bind(session.clone())
                .push_bind(tool.clone())
                .push_bind(*ts);
        });
        q.build().execute(&mut **tx).await?;
    }
    for chunk in settled.chunks(CHUNK) {
        // Only a reservation still open is taken off the counters (an expired one was
        // taken off when it expired).
        let mut q = QueryBuilder::<Postgres>::new(
            "UPDATE reservations SET settled = 1 WHERE settled = 0 AND id IN (",
        );
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(id.clone());
        }
        q.push(") RETURNING keys_json, micro_usd, tokens, calls");
        let rows = q.build().fetch_all(&mut **tx).await?;
        release_reserved(tx, &rows).await?;
    }
    for chunk in closed.chunks(CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "UPDATE decisions SET recorded = 1 WHERE decision_id IN (",
        );
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(id.clone());
        }
        q.push(")");
        q.build().execute(&mut **tx).await?;
    }
    for op in admin {
        apply(tx, op).await?;
    }
    Ok(())
}

/// An agent's sightings in one batch (agent id, first seen, last seen, last allowed),
/// folded into one row per agent. PostgreSQL refuses an upsert that reaches the same
/// row twice (SQLSTATE 21000, "ON CONFLICT DO UPDATE command cannot affect row a second
/// time"), which two Evaluates of one agent sealed in the same batch would do; the fold
/// gives the row SQLite's in-order upsert leaves: the first sighting's first seen, the
/// largest last seen, the last `last_allowed` given.
type Sighting = (String, i64, i64, Option<i64>);

fn fold_sightings(rows: Vec<Sighting>) -> Vec<Sighting> {
    let mut at: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<Sighting> = Vec::with_capacity(rows.len());
    for row in rows {
        match at.get(&row.0) {
            Some(&i) => {
                let kept = &mut out[i];
                kept.2 = kept.2.max(row.2);
                if row.3.is_some() {
                    kept.3 = row.3;
                }
            }
            None => {
                at.insert(row.0.clone(), out.len());
                out.push(row);
            }
        }
    }
    out
}

/// One heartbeat per agent for a single upsert (SQLSTATE 21000 otherwise, see
/// `fold_sightings`): the newest, and of equal ones the first, as SQLite's in-order
/// upsert keeps (a heartbeat replaces only an older one).
fn newest_heartbeats(rows: &[PresenceRow]) -> Vec<&PresenceRow> {
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<&PresenceRow> = Vec::with_capacity(rows.len());
    for row in rows {
        match at.get(row.agent_id.as_str()) {
            Some(&i) => {
                if out[i].last_heartbeat_ms < row.last_heartbeat_ms {
                    out[i] = row;
                }
            }
            None => {
                at.insert(&row.agent_id, out.len());
                out.push(row);
            }
        }
    }
    out
}

/// Takes closed reservations (rows of keys_json, micro_usd, tokens, calls) off the
/// reserved amounts of their counters.
async fn release_reserved(tx: &mut Tx<'_>, rows: &[PgRow]) -> Result<(), StoreError> {
    let mut freed: BTreeMap<CounterKey, [i64; 3]> = BTreeMap::new();
    for r in rows {
        let keys: Vec<CounterKey> = json(&r.try_get::<String, _>("keys_json")?)?;
        let amounts: [i64; 3] = [
            r.try_get("micro_usd")?,
            r.try_get("tokens")?,
            r.try_get("calls")?,
        ];
        for k in keys {
            let d = freed.entry(k).or_default();
            for (d, a) in d.iter_mut().zip(amounts) {
                *d -= a;
            }
        }
    }
    shift_reserved(tx, freed).await
}

/// Adds signed deltas to the reserved amounts of budget counters.
async fn shift_reserved(
    tx: &mut Tx<'_>,
    deltas: BTreeMap<CounterKey, [i64; 3]>,
) -> Result<(), StoreError> {
    let deltas: Vec<(CounterKey, [i64; 3])> = deltas.into_iter().collect();
    for chunk in deltas.chunks(CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO budget_counters (budget, scope_key, window_start_ms, reserved_micro_usd, reserved_tokens, reserved_calls) ",
        );
        q.push_values(chunk, |mut b, (k, d)| {
            b.push_bind(k.budget.clone())
                .push_bind(k.scope_key.clone())
                .push_bind(k.window_start_ms)
                .push_bind(d[0])
                .push_bind(d[1])
                .push_bind(d[2]);
        });
        q.push(
            " ON CONFLICT (budget, scope_key, window_start_ms) DO UPDATE SET \
             reserved_micro_usd = budget_counters.reserved_micro_usd + excluded.reserved_micro_usd, \
             reserved_tokens = budget_counters.reserved_tokens + excluded.reserved_tokens, \
             reserved_calls = budget_counters.reserved_calls + excluded.reserved_calls",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn write_tree(tx: &mut Tx<'_>, tree: &TreeUpdate) -> Result<(), StoreError> {
    for chunk in tree.nodes.chunks(CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new("INSERT INTO merkle_nodes (level, idx, hash) ");
        q.push_values(chunk, |mut b, n| {
            b.push_bind(i64::from(n.level))
                .push_bind(to_i64(n.index))
                .push_bind(hex::encode(n.hash));
        });
        q.build().execute(&mut **tx).await?;
    }
    if let Some(c) = &tree.checkpoint {
        sqlx::query(
            "INSERT INTO checkpoints (size, root, note, ts_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING",
        )
        .bind(to_i64(c.size))
        .bind(&c.root_hex)
        .bind(&c.note)
        .bind(c.ts_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Administrative changes, one statement each, in order.
async fn apply(tx: &mut Tx<'_>, op: &StateOp) -> Result<(), StoreError> {
    match op {
        StateOp::TouchAgent { .. }
        | StateOp::StartSession { .. }
        | StateOp::Reserve(_)
        | StateOp::SettleReservation { .. }
        | StateOp::AddSpend { .. }
        | StateOp::OpenDecision(_)
        | StateOp::CloseDecision { .. }
        | StateOp::Remember { .. }
        | StateOp::LoopTick { .. } => unreachable!("batched by write_batch"),
        StateOp::SetTrust(a) => {
            sqlx::query(
                "INSERT INTO trust_assignments (agent_id, scope, level, assigned_by, assigned_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (agent_id, scope) DO UPDATE SET level = excluded.level,
                   assigned_by = excluded.assigned_by, assigned_ms = excluded.assigned_ms",
            )
            .bind(&a.agent_id)
            .bind(&a.scope)
            .bind(i64::from(a.level.rank()))
            .bind(&a.assigned_by)
            .bind(a.assigned_ms)
            .execute(&mut **tx)
            .await?;
        }
        StateOp::PutConsent(g) => {
            sqlx::query(
                "INSERT INTO consent_grants (agent_id, data_type, purpose, granted_by, granted_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (agent_id, data_type, purpose) DO UPDATE SET granted_by = excluded.granted_by,
                   granted_ms = excluded.granted_ms, expires_ms = excluded.expires_ms",
            )
            .bind(&g.agent_id)
            .bind(&g.data_type)
            .bind(g.purpose.as_deref().unwrap_or(""))
            .bind(&g.granted_by)
            .bind(g.granted_ms)
            .bind(g.expires_ms)
            .execute(&mut **tx)
            .await?;
        }
        StateOp::RevokeConsent {
            agent_id,
            data_type,
            purpose,
        } => {
            sqlx::query(
                "DELETE FROM consent_grants WHERE agent_id = $1 AND data_type = $2 AND purpose = $3",
            )
            .bind(agent_id)
            .bind(data_type)
            .bind(purpose.as_deref().unwrap_or(""))
            .execute(&mut **tx)
            .await?;
        }
        StateOp::SetOperator {
            agent_id,
            operator,
            set_by,
            set_ms,
        } => {
            sqlx::query(
                "INSERT INTO agent_operators (agent_id, operator, set_by, set_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (agent_id) DO UPDATE SET operator = excluded.operator, set_by = excluded.set_by, set_ms = excluded.set_ms",
            )
            .bind(agent_id)
            .bind(operator)
            .bind(set_by)
            .bind(set_ms)
            .execute(&mut **tx)
            .await?;
        }
        StateOp::PutToolPin(pin) => {
            sqlx::query(
                "INSERT INTO mcp_tool_pins (server, tool, body_json) VALUES ($1, $2, $3)
                 ON CONFLICT (server, tool) DO UPDATE SET body_json = excluded.body_json",
            )
            .bind(&pin.server)
            .bind(&pin.tool)
            .bind(to_json(pin))
            .execute(&mut **tx)
            .await?;
        }
        StateOp::PutApproval(a) => {
            sqlx::query(
                "INSERT INTO approvals (id, agent_id, state, requested_ms, body_json) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, body_json = excluded.body_json",
            )
            .bind(&a.id)
            .bind(&a.agent_id)
            .bind(a.state.name())
            .bind(a.requested_ms)
            .bind(to_json(a))
            .execute(&mut **tx)
            .await?;
        }
        StateOp::EngageHalt(h) => {
            let (scope, agent, session) = h.target.columns();
            sqlx::query(
                "INSERT INTO halts (target, scope, agent_id, session_id, mode, reason, engaged_by, engaged_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (target) DO UPDATE SET mode = excluded.mode, reason = excluded.reason,
                   engaged_by = excluded.engaged_by, engaged_ms = excluded.engaged_ms",
            )
            .bind(h.target.key())
            .bind(scope)
            .bind(agent)
            .bind(session)
            .bind(h.mode.name())
            .bind(&h.reason)
            .bind(&h.engaged_by)
            .bind(h.engaged_ms)
            .execute(&mut **tx)
            .await?;
        }
        StateOp::ExpectHalt { .. } | StateOp::ExpectToolPin { .. } => {}
        StateOp::LiftHalt { target } => {
            sqlx::query("DELETE FROM halts WHERE target = $1")
                .bind(target.key())
                .execute(&mut **tx)
                .await?;
        }
        StateOp::WatchdogMark {
            condition,
            marked_ms,
        } => {
            sqlx::query(
                "INSERT INTO watchdog_marks (condition, marked_ms) VALUES ($1, $2) ON CONFLICT (condition) DO NOTHING",
            )
            .bind(condition)
            .bind(marked_ms)
            .execute(&mut **tx)
            .await?;
        }
        StateOp::SilenceHalted {
            agent_id,
            heartbeat_ms,
        } => {
            // The heartbeat row exists unless its flush was lost (a crash); then the
            // silence itself is what the row records.
            sqlx::query(
                "INSERT INTO presence (agent_id, status, last_heartbeat_ms, silence_halted_ms)
                 VALUES ($1, 'unresponsive', $2, $2)
                 ON CONFLICT (agent_id) DO UPDATE SET silence_halted_ms =
                   GREATEST(presence.silence_halted_ms, excluded.silence_halted_ms)",
            )
            .bind(agent_id)
            .bind(heartbeat_ms)
            .execute(&mut **tx)
            .await?;
        }
        StateOp::CreatePrincipal(p) => {
            let roles: Vec<&str> = p.roles.iter().map(|r| r.name()).collect();
            sqlx::query(
                "INSERT INTO principals (name, roles, agents, key_hash, key_prefix, tls_identity, created_by, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&p.name)
            .bind(roles.join(","))
            .bind(to_json(&p.agents))
            .bind(&p.key_hash)
            .bind(&p.key_prefix)
            .bind(p.tls_identity.as_ref().map(|t| t.to_string()))
            .bind(&p.created_by)
            .bind(p.created_ms)
            .execute(&mut **tx)
            .await?;
        }
        StateOp::RevokePrincipal { name, revoked_ms } => {
            sqlx::query(
                "UPDATE principals SET revoked_ms = $1 WHERE name = $2 AND revoked_ms IS NULL",
            )
            .bind(revoked_ms)
            .bind(name)
            .execute(&mut **tx)
            .await?;
        }
        StateOp::PolicyLoad {
            version,
            source,
            loaded_ms,
            accepted,
            error,
            bundle,
        } => {
            sqlx::query("INSERT INTO policy_loads (version, source, loaded_ms, accepted, error, bundle) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(version)
                .bind(source)
                .bind(loaded_ms)
                .bind(i64::from(*accepted))
                .bind(error)
                .bind(bundle.as_deref())
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}
