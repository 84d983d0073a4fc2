//! The embedded store's bulk read of the log (`Store::audit_page`, what whole-log
//! verification reads millions of rows through): one SQLite connection of its own,
//! stepped in place through rusqlite on a blocking thread.
//!
//! Why not sqlx, as for the other reads: sqlx's SQLite driver decodes each row on its
//! worker thread and hands it across, ≈ 3 µs an entry; framing a page into one string
//! inside SQLite (`group_concat`) saved the hand-offs but made SQLite copy the growing
//! row once per `||`. Here each column is copied once, straight out of SQLite's page
//! buffer, and nothing crosses threads per row (docs/benchmarks.md, issue 18 item 7).

use super::rows::to_i64;
use super::StoreError;
use crate::audit::SealedEntry;
use rusqlite::{params, Connection, OpenFlags, Row};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// As the pool's connections: a checkpoint holding the file briefly is waited for.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const PAGE_SQL: &str = "SELECT seq, ts_ms, kind, agent_id, session_id, outcome, key_id, \
                        canonical, mac FROM audit_entries WHERE seq >= ?1 AND seq <= ?2 \
                        ORDER BY seq LIMIT ?3";

/// The connection, opened on first use and dropped after any failed read. One is
/// enough: a verification reads one page at a time (the next while this one is
/// checked), and two verifications at once take turns page by page.
pub struct Reader {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("path", &self.path).finish()
    }
}

impl Reader {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            conn: Mutex::new(None),
        }
    }

    /// Entries with `from_seq <= seq <= to_seq`, at most `limit`, in order: the rows
    /// `audit_range` returns. Blocking; call it off the runtime.
    pub fn page(
        &self,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<SealedEntry>, StoreError> {
        // A panic while reading left nothing half-done on a read-only connection.
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let read = match guard.as_ref() {
            Some(conn) => read_page(conn, from_seq, to_seq, limit),
            None => open(&self.path)
                .and_then(|conn| read_page(guard.insert(conn), from_seq, to_seq, limit)),
        };
        if read.is_err() {
            *guard = None;
        }
        read
    }

    /// Closes the connection (at shutdown, with the pool's).
    pub fn close(&self) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    // Read-write (no create) rather than read-only: a read-only connection to a WAL
    // database fails when the -shm file does not exist yet (no other connection open).
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // It only ever reads: a bug here cannot write to the log.
    conn.execute_batch("PRAGMA query_only = ON")?;
    Ok(conn)
}

fn read_page(
    conn: &Connection,
    from_seq: u64,
    to_seq: u64,
    limit: u32,
) -> Result<Vec<SealedEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(PAGE_SQL)?;
    let mut rows = stmt.query(params![to_i64(from_seq), to_i64(to_seq), i64::from(limit)])?;
    let mut out = Vec::with_capacity(limit.min(1 << 16) as usize);
    while let Some(row) = rows.next()? {
        out.push(entry(row)?);
    }
    Ok(out)
}

fn entry(r: &Row<'_>) -> Result<SealedEntry, StoreError> {
    Ok(SealedEntry {
        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        ts_ms: r.get(1)?,
        kind: r.get(2)?,
        agent_id: r.get(3)?,
        session_id: r.get(4)?,
        outcome: r.get(5)?,
        key_id: r.get(6)?,
        canonical: r.get(7)?,
        mac: r.get(8)?,
    })
}
