//! The embedded store's write path: one SQLite connection of its own, driven in place
//! through rusqlite, so a whole batch (its entries, its state changes, its Merkle nodes
//! and the commit) is one call on the writing thread.
//!
//! Why not sqlx here, as everywhere else: sqlx's SQLite driver runs each connection on a
//! worker thread of its own and every statement is a round trip to it (a message there,
//! the rows back, a wake-up each way). A batch is a dozen statements, so one Evaluate
//! alone on the server waited on ≈ 37 context switches, and under load the hand-offs
//! cost ≈ 13 % of the server's CPU (issue 18). rusqlite is the same bundled SQLite
//! (`libsqlite3-sys` is shared with sqlx), its statements are prepared once and cached,
//! and the batch runs where the batcher is, inside `block_in_place` so the runtime moves
//! its other tasks elsewhere while SQLite writes. Reads, migrations, presence upserts
//! and WAL checkpoints stay on sqlx's pool: WAL readers never wait for this writer.

use super::rows::{to_i64, to_json};
use super::{CommitUnit, StateOp, StoreError, TreeUpdate};
use crate::audit::SealedEntry;
use crate::state::Reservation;
use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Bound on waiting for the write lock (a checkpoint or a presence upsert holding it),
/// as the pool's connections have.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Distinct statements the writer prepares; all of them stay cached.
const STATEMENT_CACHE: usize = 64;

/// The connection, opened on first use and dropped after any failed write.
pub struct Writer {
    path: PathBuf,
    synchronous_full: bool,
    conn: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("path", &self.path).finish()
    }
}

impl Writer {
    /// Nothing is opened yet: the first write opens the connection, after migrations.
    pub fn new(path: &Path, synchronous_full: bool) -> Self {
        Self {
            path: path.to_owned(),
            synchronous_full,
            conn: Mutex::new(None),
        }
    }

    /// Writes a batch and its tree nodes in one transaction.
    pub fn commit(&self, units: &[CommitUnit], tree: &TreeUpdate) -> Result<(), StoreError> {
        self.write(|tx| {
            for unit in units {
                insert_entry(tx, &unit.entry)?;
                for op in &unit.ops {
                    write_op(tx, unit.entry.seq, op)?;
                }
            }
            write_tree(tx, tree)
        })
    }

    /// Writes tree nodes and a checkpoint alone (outside a batch).
    pub fn put_tree(&self, tree: &TreeUpdate) -> Result<(), StoreError> {
        self.write(|tx| write_tree(tx, tree))
    }

    /// Rewrites the health probe's row with `bytes` of zeros.
    pub fn probe(&self, bytes: i64) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE health_probe SET writes = writes + 1, room = zeroblob(?1) WHERE id = 1",
            )?
            .execute([bytes])?;
            Ok(())
        })
    }

    /// Closes the connection (at shutdown, before the final WAL truncation).
    pub fn close(&self) {
        *self.lock() = None;
    }

    /// Runs `body` in an IMMEDIATE transaction on the writer's connection and commits.
    /// A failure closes the connection instead of keeping it: after a full disk or an
    /// I/O error SQLite's transaction may still be open, and a kept connection inside it
    /// would hold the write lock for every later commit. Closing it rolls back whatever
    /// it holds; the next write opens a fresh one.
    fn write(
        &self,
        body: impl FnOnce(&Transaction<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        off_the_runtime(|| {
            let mut guard = self.lock();
            let done = match guard.as_mut() {
                Some(conn) => in_transaction(conn, body),
                None => match open(&self.path, self.synchronous_full) {
                    Ok(conn) => in_transaction(guard.insert(conn), body),
                    Err(e) => Err(e),
                },
            };
            if done.is_err() {
                *guard = None;
            }
            done
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        // A panic while writing left no transaction behind (its Transaction rolled back
        // on unwind), so the connection is as good as before.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn in_transaction(
    conn: &mut Connection,
    body: impl FnOnce(&Transaction<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    body(&tx)?;
    tx.commit()?;
    Ok(())
}

/// The pool's settings (sqlite.rs `open`) that act per connection, for this one too.
fn open(path: &Path, synchronous_full: bool) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let synchronous = if synchronous_full { "FULL" } else { "NORMAL" };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA temp_store = MEMORY;"
    ))?;
    Ok(conn)
}

/// Runs blocking SQLite work without stalling the runtime's other tasks: on a
/// multi-threaded runtime the worker's queue moves to another thread meanwhile; on a
/// current-thread runtime (unit tests) there is nothing else to move.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi;
        match &e {
            rusqlite::Error::SqliteFailure(f, msg)
                if f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                Self::Conflict(msg.clone().unwrap_or_else(|| e.to_string()))
            }
            _ => Self::Unavailable(Box::new(e)),
        }
    }
}

fn insert_entry(tx: &Transaction<'_>, e: &SealedEntry) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO audit_entries (seq, ts_ms, kind, agent_id, session_id, outcome, key_id, canonical, mac) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        to_i64(e.seq),
        e.ts_ms,
        e.kind,
        e.agent_id,
        e.session_id,
        e.outcome,
        e.key_id,
        e.canonical,
        e.mac
    ])?;
    Ok(())
}

fn write_tree(tx: &Transaction<'_>, tree: &TreeUpdate) -> Result<(), StoreError> {
    let mut node = tx.prepare_cached("INSERT INTO merkle_tree (pos, hash) VALUES (?1, ?2)")?;
    for n in &tree.nodes {
        let pos = crate::audit::merkle::stored_position(n.level, n.index);
        node.execute(params![to_i64(pos), &n.hash[..]])?;
    }
    if let Some(c) = &tree.checkpoint {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO checkpoints (size, root, note, ts_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![to_i64(c.size), c.root_hex, c.note, c.ts_ms])?;
    }
    Ok(())
}

/// One state change, in the order the batch holds them (each unit's after its entry).
/// The hot ones (every Evaluate and Record writes them) come first.
fn write_op(tx: &Transaction<'_>, seq: u64, op: &StateOp) -> Result<(), StoreError> {
    match op {
        StateOp::TouchAgent {
            agent_id,
            first_seen_ms,
            last_seen_ms,
            last_allowed_ms,
        } => run(
            tx,
            "INSERT INTO agents (agent_id, first_seen_ms, last_seen_ms, last_allowed_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (agent_id) DO UPDATE SET last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms), \
             last_allowed_ms = COALESCE(excluded.last_allowed_ms, last_allowed_ms)",
            params![agent_id, first_seen_ms, last_seen_ms, last_allowed_ms],
        ),
        StateOp::StartSession {
            agent_id,
            session_id,
            started_ms,
        } => run(
            tx,
            "INSERT OR IGNORE INTO sessions (agent_id, session_id, started_ms) VALUES (?1, ?2, ?3)",
            params![agent_id, session_id, started_ms],
        ),
        StateOp::Reserve(r) => reserve(tx, r),
        StateOp::SettleReservation { id } => run(
            tx,
            "DELETE FROM reservations WHERE id = ?1",
            params![id],
        ),
        StateOp::AddSpend { keys, amounts } => {
            for k in keys {
                run(
                    tx,
                    "INSERT INTO budget_counters (budget, scope_key, window_start_ms, spent_micro_usd, spent_tokens, spent_calls) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (budget, scope_key, window_start_ms) DO UPDATE SET \
                     spent_micro_usd = spent_micro_usd + excluded.spent_micro_usd, \
                     spent_tokens = spent_tokens + excluded.spent_tokens, \
                     spent_calls = spent_calls + excluded.spent_calls",
                    params![
                        k.budget,
                        k.scope_key,
                        k.window_start_ms,
                        to_i64(amounts.micro_usd),
                        to_i64(amounts.tokens),
                        to_i64(amounts.calls)
                    ],
                )?;
            }
            Ok(())
        }
        StateOp::OpenDecision(d) => run(
            tx,
            "INSERT INTO decisions (decision_id, agent_id, body_json, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![d.decision_id, d.agent_id, to_json(d), d.created_ms],
        ),
        StateOp::CloseDecision { decision_id } => run(
            tx,
            "DELETE FROM decisions WHERE decision_id = ?1",
            params![decision_id],
        ),
        StateOp::Remember {
            kind,
            key,
            agent_id,
            fingerprint,
            created_ms,
        } => run(
            tx,
            // An empty response: the answer is rebuilt from the entry at audit_seq.
            "INSERT INTO replies (kind, key, agent_id, fingerprint, response, audit_seq, created_ms) \
             VALUES (?1, ?2, ?3, ?4, '', ?5, ?6)",
            params![kind, key, agent_id, fingerprint, to_i64(seq), created_ms],
        ),
        // One server: its memory counts the window and holds the state these were
        // checked against (docs/postgres.md).
        StateOp::LoopTick { .. } | StateOp::ExpectHalt { .. } | StateOp::ExpectToolPin { .. } => {
            Ok(())
        }
        admin => write_admin(tx, admin),
    }
}

fn reserve(tx: &Transaction<'_>, r: &Reservation) -> Result<(), StoreError> {
    run(
        tx,
        "INSERT INTO reservations (id, decision_id, agent_id, keys_json, micro_usd, tokens, calls, created_ms, expires_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            r.id,
            r.decision_id,
            r.agent_id,
            to_json(&r.keys),
            to_i64(r.amounts.micro_usd),
            to_i64(r.amounts.tokens),
            to_i64(r.amounts.calls),
            r.created_ms,
            r.expires_ms
        ],
    )
}

/// The administrative changes (trust, consent, operators, pins, approvals, halts,
/// watchdog, principals, policy loads): rare, one statement each.
fn write_admin(tx: &Transaction<'_>, op: &StateOp) -> Result<(), StoreError> {
    match op {
        StateOp::SetTrust(a) => run(
            tx,
            "INSERT INTO trust_assignments (agent_id, scope, level, assigned_by, assigned_ms) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (agent_id, scope) DO UPDATE SET level = excluded.level, \
             assigned_by = excluded.assigned_by, assigned_ms = excluded.assigned_ms",
            params![a.agent_id, a.scope, i64::from(a.level.rank()), a.assigned_by, a.assigned_ms],
        ),
        StateOp::PutConsent(g) => run(
            tx,
            "INSERT INTO consent_grants (agent_id, data_type, purpose, granted_by, granted_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (agent_id, data_type, purpose) DO UPDATE SET granted_by = excluded.granted_by, \
             granted_ms = excluded.granted_ms, expires_ms = excluded.expires_ms",
            params![
                g.agent_id,
                g.data_type,
                g.purpose.as_deref().unwrap_or(""),
                g.granted_by,
                g.granted_ms,
                g.expires_ms
            ],
        ),
        StateOp::RevokeConsent {
            agent_id,
            data_type,
            purpose,
        } => run(
            tx,
            "DELETE FROM consent_grants WHERE agent_id = ?1 AND data_type = ?2 AND purpose = ?3",
            params![agent_id, data_type, purpose.as_deref().unwrap_or("")],
        ),
        StateOp::SetOperator {
            agent_id,
            operator,
            set_by,
            set_ms,
        } => run(
            tx,
            "INSERT INTO agent_operators (agent_id, operator, set_by, set_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (agent_id) DO UPDATE SET operator = excluded.operator, set_by = excluded.set_by, set_ms = excluded.set_ms",
            params![agent_id, operator, set_by, set_ms],
        ),
        StateOp::PutToolPin(pin) => run(
            tx,
            "INSERT INTO mcp_tool_pins (server, tool, body_json) VALUES (?1, ?2, ?3) \
             ON CONFLICT (server, tool) DO UPDATE SET body_json = excluded.body_json",
            params![pin.server, pin.tool, to_json(pin)],
        ),
        StateOp::PutApproval(a) => run(
            tx,
            "INSERT INTO approvals (id, agent_id, state, requested_ms, body_json) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, body_json = excluded.body_json",
            params![a.id, a.agent_id, a.state.name(), a.requested_ms, to_json(a)],
        ),
        StateOp::EngageHalt(h) => {
            let (scope, agent, session) = h.target.columns();
            run(
                tx,
                "INSERT INTO halts (target, scope, agent_id, session_id, mode, reason, engaged_by, engaged_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (target) DO UPDATE SET mode = excluded.mode, reason = excluded.reason, \
                 engaged_by = excluded.engaged_by, engaged_ms = excluded.engaged_ms",
                params![
                    h.target.key(),
                    scope,
                    agent,
                    session,
                    h.mode.name(),
                    h.reason,
                    h.engaged_by,
                    h.engaged_ms
                ],
            )
        }
        StateOp::LiftHalt { target } => run(
            tx,
            "DELETE FROM halts WHERE target = ?1",
            params![target.key()],
        ),
        StateOp::WatchdogMark {
            condition,
            marked_ms,
        } => run(
            tx,
            "INSERT INTO watchdog_marks (condition, marked_ms) VALUES (?1, ?2) ON CONFLICT (condition) DO NOTHING",
            params![condition, marked_ms],
        ),
        // The heartbeat row exists unless its write was lost (a crash); then the
        // silence itself is what the row records.
        StateOp::SilenceHalted {
            agent_id,
            heartbeat_ms,
        } => run(
            tx,
            "INSERT INTO presence (agent_id, status, last_heartbeat_ms, silence_halted_ms) \
             VALUES (?1, 'unresponsive', ?2, ?2) \
             ON CONFLICT (agent_id) DO UPDATE SET silence_halted_ms = \
             MAX(COALESCE(silence_halted_ms, excluded.silence_halted_ms), excluded.silence_halted_ms)",
            params![agent_id, heartbeat_ms],
        ),
        StateOp::CreatePrincipal(p) => {
            let roles: Vec<&str> = p.roles.iter().map(|r| r.name()).collect();
            run(
                tx,
                "INSERT INTO principals (name, roles, agents, key_hash, key_prefix, tls_identity, created_by, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    p.name,
                    roles.join(","),
                    to_json(&p.agents),
                    p.key_hash,
                    p.key_prefix,
                    p.tls_identity.as_ref().map(|t| t.to_string()),
                    p.created_by,
                    p.created_ms
                ],
            )
        }
        StateOp::RevokePrincipal { name, revoked_ms } => run(
            tx,
            "UPDATE principals SET revoked_ms = ?1 WHERE name = ?2 AND revoked_ms IS NULL",
            params![revoked_ms, name],
        ),
        StateOp::PolicyLoad {
            version,
            source,
            loaded_ms,
            accepted,
            error,
            bundle,
        } => run(
            tx,
            "INSERT INTO policy_loads (version, source, loaded_ms, accepted, error, bundle) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![version, source, loaded_ms, i64::from(*accepted), error, bundle.as_deref()],
        ),
        StateOp::TouchAgent { .. }
        | StateOp::StartSession { .. }
        | StateOp::Reserve(_)
        | StateOp::SettleReservation { .. }
        | StateOp::AddSpend { .. }
        | StateOp::OpenDecision(_)
        | StateOp::CloseDecision { .. }
        | StateOp::Remember { .. }
        | StateOp::LoopTick { .. }
        | StateOp::ExpectHalt { .. }
        | StateOp::ExpectToolPin { .. } => unreachable!("written by write_op"),
    }
}

/// Executes one cached statement.
fn run(tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> Result<(), StoreError> {
    tx.prepare_cached(sql)?.execute(params)?;
    Ok(())
}
