//! The embedded backend: SQLite in WAL mode. Its SQL lives here (reads, presence,
//! checkpoints, through sqlx) and in `sqlite_writer.rs` (every audited write).

use super::rows::{self, to_i64, to_u64, ENTRY_COLUMNS};
use super::sqlite_reader::Reader;
use super::sqlite_writer::Writer;
use super::{
    AuditQuery, CheckpointRow, CommitUnit, PolicyLoadRow, PresenceRow, PrincipalRow, ReplyRow,
    StateImage, Store, StoreError, TreeUpdate, REPLY_COLUMNS, REPLY_JOIN,
};
use crate::audit::{merkle, SealedEntry};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tracing::instrument;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Every write that changes audited state (`sqlite_writer.rs`).
    writer: Arc<Writer>,
    /// The bulk read of the log for verification (`sqlite_reader.rs`).
    reader: Arc<Reader>,
}

/// WAL frames (pages) past which `wal_checkpoint` truncates the file: 4096 pages of
/// 4 KiB is 16 MiB. The promised bound is 64 MiB (`journal_size_limit`); the margin is
/// what the writer appends between two maintenance ticks while a truncation waits for
/// a gap (≈ 50 MiB in 500 ms at 2.2k Evaluates/s measured by `scripts/wal.sh`, which
/// is why the tick is 100 ms and the threshold a quarter of the bound). The price is
/// in the tail: a truncation holds the writer lock while it waits for readers, so at
/// saturation p99 rose from 30–54 ms to ≈ 92 ms (docs/benchmarks.md); writing fewer
/// bytes per Evaluate is the way to lower both.
const WAL_RESTART_PAGES: i64 = 4_096;

impl SqliteStore {
    /// Opens (creating if needed) the database file. `synchronous_full` trades commit
    /// latency for surviving power loss; the default survives a process crash.
    pub async fn open(path: &Path, synchronous_full: bool) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(5))
            // Checkpoints run in the background (`checkpoint`), not inside a commit.
            .pragma("wal_autocheckpoint", "0")
            // A checkpointed WAL is cut back to this size, so a burst never leaves a
            // multi-gigabyte file behind.
            .pragma("journal_size_limit", "67108864")
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        let writer = Arc::new(Writer::new(path, synchronous_full));
        let reader = Arc::new(Reader::new(path));
        Ok(Self {
            pool,
            writer,
            reader,
        })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }

    /// Copies committed WAL pages into the database file without blocking the writer.
    /// Called periodically; replaces SQLite's auto-checkpoint, which would otherwise run
    /// (and fsync) inside whichever commit crosses the threshold. A PASSIVE checkpoint
    /// never restarts the WAL while the writer keeps appending, so under sustained load
    /// the file grows without bound (8 GiB in a soak); once it holds more than
    /// `WAL_RESTART_PAGES` frames, a TRUNCATE checkpoint waits (busy_timeout) for a gap
    /// between batches and cuts the file to zero, so the WAL stays bounded.
    pub async fn wal_checkpoint(&self) -> Result<(), StoreError> {
        let (_busy, log_frames, _done): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&self.pool)
                .await?;
        if log_frames > WAL_RESTART_PAGES {
            self.wal_truncate().await?;
        }
        Ok(())
    }

    /// Checkpoints everything and truncates the WAL to zero bytes; `busy` (a reader or
    /// the writer held on past busy_timeout) is not an error, the next call retries.
    async fn wal_truncate(&self) -> Result<bool, StoreError> {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await?;
        Ok(busy == 0)
    }

    /// At a clean stop, after the last batch: leaves no WAL behind (the database file
    /// alone is the whole state), then closes the pool.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.writer.close();
        self.reader.close();
        let truncated = self.wal_truncate().await;
        self.pool.close().await;
        match truncated? {
            true => Ok(()),
            false => Err(StoreError::Unavailable(
                "the WAL could not be checkpointed at shutdown (database busy)".into(),
            )),
        }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn pool_stats(&self) -> Option<super::PoolStats> {
        Some(super::PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        })
    }

    async fn principals(&self) -> Result<Vec<PrincipalRow>, StoreError> {
        sqlx::query(
            "SELECT name, roles, agents, key_hash, key_prefix, tls_identity, created_by, created_ms, revoked_ms FROM principals ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::principal)
        .collect()
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        self.wal_checkpoint().await
    }

    async fn close(&self) -> Result<(), StoreError> {
        SqliteStore::close(self).await
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
        for r in sqlx::query(
            "SELECT agent_id, scope, level, assigned_by, assigned_ms FROM trust_assignments",
        )
        .fetch_all(&self.pool)
        .await?
        {
            img.trust.push(rows::trust(&r)?);
        }
        for r in sqlx::query("SELECT agent_id, data_type, purpose, granted_by, granted_ms, expires_ms FROM consent_grants")
            .fetch_all(&self.pool)
            .await?
        {
            img.consent.push(rows::consent(&r)?);
        }
        for r in sqlx::query("SELECT budget, scope_key, window_start_ms, spent_micro_usd, spent_tokens, spent_calls FROM budget_counters")
            .fetch_all(&self.pool)
            .await?
        {
            img.counters.push(rows::counter(&r)?);
        }
        for r in sqlx::query(
            "SELECT id, decision_id, agent_id, keys_json, micro_usd, tokens, calls, created_ms, expires_ms
             FROM reservations WHERE settled = 0 AND expires_ms > ?",
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
            "SELECT {REPLY_COLUMNS} FROM replies r {REPLY_JOIN} WHERE r.created_ms >= ?"
        )))
        .bind(replies_since_ms)
        .fetch_all(&self.pool)
        .await?
        {
            img.replies.push(rows::reply(&r)?);
        }
        for r in sqlx::query("SELECT agent_id, operator FROM agent_operators")
            .fetch_all(&self.pool)
            .await?
        {
            img.operators.push(rows::operator(&r)?);
        }
        for r in sqlx::query("SELECT body_json FROM mcp_tool_pins")
            .fetch_all(&self.pool)
            .await?
        {
            img.tool_pins.push(rows::body(&r)?);
        }
        for r in sqlx::query("SELECT body_json FROM approvals")
            .fetch_all(&self.pool)
            .await?
        {
            img.approvals.push(rows::body(&r)?);
        }
        for r in sqlx::query(
            "SELECT scope, agent_id, session_id, mode, reason, engaged_by, engaged_ms FROM halts",
        )
        .fetch_all(&self.pool)
        .await?
        {
            img.halts.push(rows::halt(&r)?);
        }
        for r in sqlx::query(
            "SELECT agent_id, status, last_heartbeat_ms, silence_halted_ms FROM presence",
        )
        .fetch_all(&self.pool)
        .await?
        {
            img.presence.push(rows::presence(&r)?);
        }
        Ok(img)
    }

    #[instrument(skip_all, fields(units = units.len()))]
    async fn commit(&self, units: &[CommitUnit], tree: &TreeUpdate) -> Result<(), StoreError> {
        self.writer.commit(units, tree)
    }

    async fn put_tree(&self, tree: &TreeUpdate) -> Result<(), StoreError> {
        self.writer.put_tree(tree)
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        // Larger than a typical batch, so it does not fit in the room a failed batch
        // left at the end of the WAL while the disk is still full (a one-page write does).
        self.writer.probe(PROBE_BYTES)
    }

    async fn audit_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_entries")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(n))
    }

    async fn tree_size(&self) -> Result<u64, StoreError> {
        // Nodes append in post-order (migration 0014), so the last position tells how
        // many are stored, and that count how many leaves.
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(pos) FROM merkle_tree")
            .fetch_one(&self.pool)
            .await?;
        let count = last.map_or(0, |p| to_u64(p) + 1);
        merkle::size_storing(count).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the Merkle tree stores {count} nodes, which is no tree's count"
            ))
        })
    }

    async fn node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>, StoreError> {
        let h: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM merkle_tree WHERE pos = ?")
            .bind(to_i64(merkle::stored_position(level, index)))
            .fetch_optional(&self.pool)
            .await?;
        h.map(|h| rows::node_bytes(level, index, &h)).transpose()
    }

    async fn nodes(
        &self,
        wanted: &[(u32, u64)],
    ) -> Result<std::collections::HashMap<(u32, u64), [u8; 32]>, StoreError> {
        let mut out = std::collections::HashMap::new();
        for chunk in wanted.chunks(CHUNK) {
            let at: std::collections::HashMap<i64, (u32, u64)> = chunk
                .iter()
                .map(|&(level, index)| {
                    (
                        to_i64(merkle::stored_position(level, index)),
                        (level, index),
                    )
                })
                .collect();
            let mut q =
                QueryBuilder::<Sqlite>::new("SELECT pos, hash FROM merkle_tree WHERE pos IN (");
            let mut list = q.separated(", ");
            for pos in at.keys() {
                list.push_bind(*pos);
            }
            q.push(")");
            for r in q.build().fetch_all(&self.pool).await? {
                let pos: i64 = r.try_get("pos")?;
                let Some(&(level, index)) = at.get(&pos) else {
                    continue;
                };
                let h = rows::node_bytes(level, index, &r.try_get::<Vec<u8>, _>("hash")?)?;
                out.insert((level, index), h);
            }
        }
        Ok(out)
    }

    async fn checkpoint(&self, size: Option<u64>) -> Result<Option<CheckpointRow>, StoreError> {
        let row =
            match size {
                Some(n) => {
                    sqlx::query("SELECT size, root, note, ts_ms FROM checkpoints WHERE size = ?")
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
        sqlx::query(AssertSqlSafe(format!("SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?")))
            .bind(to_i64(from_seq))
            .bind(to_i64(to_seq))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::entry)
            .collect()
    }

    /// Through the reader's own connection, on a blocking thread (`sqlite_reader.rs`):
    /// the same rows as `audit_range`, without sqlx's per-row cost.
    async fn audit_page(
        &self,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<SealedEntry>, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || reader.page(from_seq, to_seq, limit))
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?
    }

    #[instrument(skip_all)]
    async fn query_audit(
        &self,
        q: &AuditQuery,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<SealedEntry>, StoreError> {
        let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq > ?");
        if q.agent_id.is_some() {
            sql.push_str(" AND agent_id = ?");
        }
        if q.session_id.is_some() {
            sql.push_str(" AND session_id = ?");
        }
        if !q.kinds.is_empty() {
            sql.push_str(&format!(
                " AND kind IN ({})",
                vec!["?"; q.kinds.len()].join(", ")
            ));
        }
        if q.outcome.is_some() {
            sql.push_str(" AND outcome = ?");
        }
        if q.since_ms.is_some() {
            sql.push_str(" AND ts_ms >= ?");
        }
        if q.until_ms.is_some() {
            sql.push_str(" AND ts_ms < ?");
        }
        sql.push_str(if q.newest_first {
            " ORDER BY seq DESC LIMIT ?"
        } else {
            " ORDER BY seq LIMIT ?"
        });
        // Only fixed fragments and `?` placeholders are appended above; values are bound.
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(to_i64(after_seq));
        if let Some(a) = &q.agent_id {
            query = query.bind(a);
        }
        if let Some(s) = &q.session_id {
            query = query.bind(s);
        }
        for k in &q.kinds {
            query = query.bind(k);
        }
        if let Some(o) = &q.outcome {
            query = query.bind(o);
        }
        if let Some(t) = q.since_ms {
            query = query.bind(t);
        }
        if let Some(t) = q.until_ms {
            query = query.bind(t);
        }
        query
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::entry)
            .collect()
    }

    async fn policy_loads(&self, limit: u32) -> Result<Vec<PolicyLoadRow>, StoreError> {
        sqlx::query("SELECT version, source, loaded_ms, accepted, error FROM policy_loads ORDER BY id DESC LIMIT ?")
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

    async fn put_presence(&self, rows: &[PresenceRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO presence (agent_id, status, last_heartbeat_ms) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.agent_id.clone())
                    .push_bind(r.status.name())
                    .push_bind(r.last_heartbeat_ms);
            });
            // Only forward: the status stays the one reported with the newest heartbeat.
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
            "SELECT {REPLY_COLUMNS} FROM replies r {REPLY_JOIN} WHERE r.kind = ? AND r.key = ?"
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

/// Rows per multi-row statement; 9 columns × 500 stays far below SQLite's bound-parameter limit.
const CHUNK: usize = 500;

/// What the health probe writes after a failed commit: 256 KiB, a few times a typical
/// batch's pages.
const PROBE_BYTES: i64 = 256 * 1024;
