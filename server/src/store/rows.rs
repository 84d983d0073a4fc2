//! Rows as both backends read them, decoded once. The tables have the same columns on
//! SQLite and PostgreSQL (integers as INTEGER / BIGINT, text as TEXT, bundles as BLOB /
//! BYTEA), so what a row means is written here and only how it is fetched differs: the
//! statements (placeholders, collations, the PostgreSQL-only columns in their `WHERE`)
//! stay in `sqlite.rs` and `postgres.rs`. `Columns` is that edge, one impl per row type.
//! Also the value conversions every backend file makes, so a stored number or JSON body
//! is read and written one way.

use super::StoreError;
use super::{CheckpointRow, PolicyLoadRow, PresenceRow, PrincipalRow, PublishedPolicy, ReplyRow};
use crate::audit::SealedEntry;
use crate::domain::TrustLevel;
use crate::state::{
    Amounts, ConsentGrant, CounterKey, Halt, HaltMode, HaltTarget, Reservation, TrustAssignment,
};
use sqlx::Row;

/// The columns of `audit_entries` that make a `SealedEntry` (`entry`).
pub(super) const ENTRY_COLUMNS: &str =
    "seq, ts_ms, kind, agent_id, session_id, outcome, key_id, canonical, mac";

/// Typed column reads, the one thing that differs between the two sqlx row types.
pub(super) trait Columns {
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    fn int_or_null(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn text_or_null(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError>;
}

macro_rules! columns_of {
    ($row:ty) => {
        impl Columns for $row {
            fn int(&self, column: &str) -> Result<i64, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn int_or_null(&self, column: &str) -> Result<Option<i64>, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn text(&self, column: &str) -> Result<String, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn text_or_null(&self, column: &str) -> Result<Option<String>, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
                Ok(self.try_get(column)?)
            }
        }
    };
}

columns_of!(sqlx::sqlite::SqliteRow);
columns_of!(sqlx::postgres::PgRow);

/// A sequence number or count as stored (signed 64-bit on both backends); saturates,
/// which no real log reaches.
pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored sequence number or count; a negative one (never written) reads as 0.
pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A JSON body column; unreadable JSON is corruption, not an outage.
pub(super) fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("state types serialize")
}

/// A stored Merkle node hash (hex of 32 bytes).
pub(super) fn node_hash(level: i64, index: i64, hex_hash: &str) -> Result<[u8; 32], StoreError> {
    hex::decode(hex_hash)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("merkle node {level}/{index} is not 32 bytes")))
}

/// A stored Merkle node hash (its 32 bytes).
pub(super) fn node_bytes(level: u32, index: u64, hash: &[u8]) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(hash)
        .map_err(|_| StoreError::Corrupt(format!("merkle node {level}/{index} is not 32 bytes")))
}

/// `ENTRY_COLUMNS` of `audit_entries`.
pub(super) fn entry(r: &impl Columns) -> Result<SealedEntry, StoreError> {
    Ok(SealedEntry {
        seq: to_u64(r.int("seq")?),
        ts_ms: r.int("ts_ms")?,
        kind: r.text("kind")?,
        agent_id: r.text("agent_id")?,
        session_id: r.text("session_id")?,
        outcome: r.text("outcome")?,
        key_id: r.text("key_id")?,
        canonical: r.text("canonical")?,
        mac: r.text("mac")?,
    })
}

/// `REPLY_COLUMNS` of `replies` joined to its entry.
pub(super) fn reply(r: &impl Columns) -> Result<ReplyRow, StoreError> {
    Ok(ReplyRow {
        kind: r.text("kind")?,
        key: r.text("key")?,
        agent_id: r.text("agent_id")?,
        fingerprint: r.text("fingerprint")?,
        response: r.text_or_null("response")?,
        audit_seq: to_u64(r.int("audit_seq")?),
        created_ms: r.int("created_ms")?,
        entry: r.text_or_null("entry")?,
    })
}

/// A `budget_counters` row's key and settled spend (`budget, scope_key,
/// window_start_ms, spent_micro_usd, spent_tokens, spent_calls`).
pub(super) fn counter(r: &impl Columns) -> Result<(CounterKey, Amounts), StoreError> {
    Ok((
        CounterKey {
            budget: r.text("budget")?,
            scope_key: r.text("scope_key")?,
            window_start_ms: r.int("window_start_ms")?,
        },
        Amounts {
            micro_usd: to_u64(r.int("spent_micro_usd")?),
            tokens: to_u64(r.int("spent_tokens")?),
            calls: to_u64(r.int("spent_calls")?),
        },
    ))
}

/// A `reservations` row (`id, decision_id, agent_id, keys_json, micro_usd, tokens,
/// calls, created_ms, expires_ms`).
pub(super) fn reservation(r: &impl Columns) -> Result<Reservation, StoreError> {
    Ok(Reservation {
        id: r.text("id")?,
        decision_id: r.text("decision_id")?,
        agent_id: r.text("agent_id")?,
        keys: json(&r.text("keys_json")?)?,
        amounts: Amounts {
            micro_usd: to_u64(r.int("micro_usd")?),
            tokens: to_u64(r.int("tokens")?),
            calls: to_u64(r.int("calls")?),
        },
        created_ms: r.int("created_ms")?,
        expires_ms: r.int("expires_ms")?,
    })
}

/// The `body_json` of a row kept whole (open decisions, approvals, tool pins).
pub(super) fn body<T: serde::de::DeserializeOwned>(r: &impl Columns) -> Result<T, StoreError> {
    json(&r.text("body_json")?)
}

/// An `agents` row: (agent id, first seen, last seen, last allowed).
pub(super) fn agent(r: &impl Columns) -> Result<(String, i64, i64, Option<i64>), StoreError> {
    Ok((
        r.text("agent_id")?,
        r.int("first_seen_ms")?,
        r.int("last_seen_ms")?,
        r.int_or_null("last_allowed_ms")?,
    ))
}

/// A `sessions` row: (agent id, session id, started).
pub(super) fn session(r: &impl Columns) -> Result<(String, String, i64), StoreError> {
    Ok((
        r.text("agent_id")?,
        r.text("session_id")?,
        r.int("started_ms")?,
    ))
}

/// An `agent_operators` row: (agent id, operator).
pub(super) fn operator(r: &impl Columns) -> Result<(String, String), StoreError> {
    Ok((r.text("agent_id")?, r.text("operator")?))
}

/// A `trust_assignments` row.
pub(super) fn trust(r: &impl Columns) -> Result<TrustAssignment, StoreError> {
    let rank = r.int("level")?;
    Ok(TrustAssignment {
        agent_id: r.text("agent_id")?,
        scope: r.text("scope")?,
        level: TrustLevel::from_rank(rank as u8)
            .ok_or_else(|| StoreError::Corrupt(format!("trust level {rank}")))?,
        assigned_by: r.text("assigned_by")?,
        assigned_ms: r.int("assigned_ms")?,
    })
}

/// A `consent_grants` row; the empty purpose is stored for "any purpose".
pub(super) fn consent(r: &impl Columns) -> Result<ConsentGrant, StoreError> {
    let purpose = r.text("purpose")?;
    Ok(ConsentGrant {
        agent_id: r.text("agent_id")?,
        data_type: r.text("data_type")?,
        purpose: (!purpose.is_empty()).then_some(purpose),
        granted_by: r.text("granted_by")?,
        granted_ms: r.int("granted_ms")?,
        expires_ms: r.int_or_null("expires_ms")?,
    })
}

/// A `halts` row (`scope, agent_id, session_id, mode, reason, engaged_by, engaged_ms`).
pub(super) fn halt(r: &impl Columns) -> Result<Halt, StoreError> {
    let scope = r.text("scope")?;
    let agent = r.text("agent_id")?;
    let session = r.text("session_id")?;
    let mode = r.text("mode")?;
    Ok(Halt {
        target: match scope.as_str() {
            "global" => HaltTarget::Global,
            "agent" => HaltTarget::Agent(agent),
            "session" => HaltTarget::Session(agent, session),
            other => return Err(StoreError::Corrupt(format!("halt scope {other:?}"))),
        },
        mode: HaltMode::parse(&mode)
            .ok_or_else(|| StoreError::Corrupt(format!("halt mode {mode:?}")))?,
        reason: r.text("reason")?,
        engaged_by: r.text("engaged_by")?,
        engaged_ms: r.int("engaged_ms")?,
    })
}

/// A `presence` row.
pub(super) fn presence(r: &impl Columns) -> Result<PresenceRow, StoreError> {
    let status = r.text("status")?;
    Ok(PresenceRow {
        agent_id: r.text("agent_id")?,
        status: crate::state::PresenceStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("presence status {status:?}")))?,
        last_heartbeat_ms: r.int("last_heartbeat_ms")?,
        silence_halted_ms: r.int_or_null("silence_halted_ms")?,
    })
}

/// A `principals` row; roles are stored comma-separated, agents as a JSON list.
pub(super) fn principal(r: &impl Columns) -> Result<PrincipalRow, StoreError> {
    let roles = r.text("roles")?;
    Ok(PrincipalRow {
        name: r.text("name")?,
        roles: roles
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().map_err(StoreError::Corrupt))
            .collect::<Result<_, _>>()?,
        agents: json(&r.text("agents")?)?,
        key_hash: r.text_or_null("key_hash")?,
        key_prefix: r.text_or_null("key_prefix")?,
        tls_identity: r
            .text_or_null("tls_identity")?
            .map(|t| t.parse().map_err(StoreError::Corrupt))
            .transpose()?,
        created_by: r.text("created_by")?,
        created_ms: r.int("created_ms")?,
        revoked_ms: r.int_or_null("revoked_ms")?,
    })
}

/// A `checkpoints` row (`size, root, note, ts_ms`).
pub(super) fn checkpoint(r: &impl Columns) -> Result<CheckpointRow, StoreError> {
    Ok(CheckpointRow {
        size: to_u64(r.int("size")?),
        root_hex: r.text("root")?,
        note: r.text("note")?,
        ts_ms: r.int("ts_ms")?,
    })
}

/// A `policy_loads` row without its bundle.
pub(super) fn policy_load(r: &impl Columns) -> Result<PolicyLoadRow, StoreError> {
    Ok(PolicyLoadRow {
        version: r.text("version")?,
        source: r.text("source")?,
        loaded_ms: r.int("loaded_ms")?,
        accepted: r.int("accepted")? != 0,
        error: r.text("error")?,
    })
}

/// A `policy_loads` row with its bundle (`PUBLISHED_POLICY`).
pub(super) fn published_policy(r: &impl Columns) -> Result<PublishedPolicy, StoreError> {
    Ok(PublishedPolicy {
        version: r.text("version")?,
        source: r.text("source")?,
        loaded_ms: r.int("loaded_ms")?,
        bundle: r.bytes("bundle")?,
    })
}
