//! The Audit page: the newest entries matching the filters, then a live tail
//! (`events::audit`); one entry's canonical JSON and its receipt (the entry, its
//! inclusion proof and the signed checkpoint, the file `arbiter audit verify-receipt`
//! checks offline); and "verify now" against the newest signed checkpoint. Reading
//! the log takes the gRPC AuditService's roles (auditor or admin).

use super::views::when;
use super::{Caller, Peer, Shared};
use crate::audit::SealedEntry;
use crate::auth::{self as authn, Access};
use crate::domain::{check_len, Id};
use crate::store::AuditQuery;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};

/// Entries shown when the page opens.
const SHOWN: usize = 50;
/// Entries read back from the head to find them (filters may skip many).
const LOOK_BACK: u64 = 5_000;

pub fn reads_log(caller: &Caller) -> bool {
    authn::allows(&caller.principal, &Access::Roles(crate::api::AUDITORS)).is_ok()
}

#[derive(Deserialize, Serialize, Default, Clone)]
pub struct Filter {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    session: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    outcome: String,
    /// RFC 3339; entries at or after it.
    #[serde(default)]
    since: String,
    /// The live tail starts after this entry (the head the page was rendered at), so
    /// nothing committed before the stream opened is missed.
    #[serde(default)]
    pub after: Option<u64>,
}

impl Filter {
    /// The store query, with each problem named by field.
    pub fn query(&self) -> Result<AuditQuery, String> {
        let id = |field: &str, v: &str| -> Result<Option<String>, String> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            Id::parse(field, v)
                .map(|i| Some(i.to_string()))
                .map_err(|e| e.to_string())
        };
        check_len("kind", &self.kind, 0, 64).map_err(|e| e.to_string())?;
        check_len("outcome", &self.outcome, 0, 32).map_err(|e| e.to_string())?;
        let since_ms = match self.since.trim() {
            "" => None,
            t => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|_| {
                        "since: must be an RFC 3339 time like 2026-01-31T12:00:00Z".to_owned()
                    })?
                    .timestamp_millis(),
            ),
        };
        Ok(AuditQuery {
            agent_id: id("agent", &self.agent)?,
            session_id: id("session", &self.session)?,
            kinds: match self.kind.trim() {
                "" => Vec::new(),
                k => vec![k.to_owned()],
            },
            outcome: Some(self.outcome.trim().to_owned()).filter(|o| !o.is_empty()),
            since_ms,
            until_ms: None,
            newest_first: false,
        })
    }

    /// The filter as the tail's query string, following on from `head`.
    fn encoded(&self, head: u64) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("agent", &self.agent)
            .append_pair("session", &self.session)
            .append_pair("kind", &self.kind)
            .append_pair("outcome", &self.outcome)
            .append_pair("since", &self.since)
            .append_pair("after", &head.to_string())
            .finish()
    }
}

#[derive(Serialize)]
pub struct Row {
    seq: u64,
    time: String,
    kind: String,
    agent: String,
    session: String,
    outcome: String,
}

pub fn row(e: &SealedEntry) -> Row {
    Row {
        seq: e.seq,
        time: when(e.ts_ms),
        kind: e.kind.clone(),
        agent: e.agent_id.clone(),
        session: e.session_id.clone(),
        outcome: e.outcome.clone(),
    }
}

fn auditor(c: &Shared, headers: &HeaderMap, peer: Peer) -> Result<Caller, Response> {
    let caller = c.caller(headers, peer.0)?;
    if !reads_log(&caller) {
        return Err(c.error_page(
            StatusCode::FORBIDDEN,
            &format!(
                "Reading the audit log requires the auditor or admin role; {} has {}.",
                caller.principal.name,
                caller
                    .principal
                    .roles
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(caller)
}

pub async fn page(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Query(f): Query<Filter>,
) -> Response {
    let caller = match auditor(&c, &headers, peer) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let q = match f.query() {
        Ok(q) => q,
        Err(e) => return c.error_page(StatusCode::BAD_REQUEST, &e),
    };
    let log = c.engine.audit_log();
    let read = async {
        let head = log.head().await?.map_or(0, |(seq, _)| seq);
        let entries = log
            .query(&q, head.saturating_sub(LOOK_BACK), LOOK_BACK as u32)
            .await?;
        let checkpoint = log.checkpoint(None).await?;
        Ok::<_, crate::store::StoreError>((head, entries, checkpoint))
    };
    let (head, entries, checkpoint) = match read.await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "console audit page cannot read the log");
            return c.error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit log cannot be read right now",
            );
        }
    };
    let rows: Vec<Row> = entries.iter().rev().take(SHOWN).map(row).collect();
    let flash = c.sessions.take_flash(&caller.session_id);
    c.views
        .page(
            "audit.html",
            &caller,
            flash,
            "audit",
            context! {
                tail_query => f.encoded(head),
                entries => Serde(rows),
                filter => Serde(f),
                head => head,
                checkpoint_size => checkpoint.as_ref().map(|c| c.size),
            },
        )
        .into_response()
}

/// The newest entries alone (for scripts and the page's refresh).
pub async fn list(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Query(f): Query<Filter>,
) -> Response {
    if let Err(r) = auditor(&c, &headers, peer) {
        return r;
    }
    let q = match f.query() {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let log = c.engine.audit_log();
    let head = log.head().await.ok().flatten().map_or(0, |(s, _)| s);
    match log
        .query(&q, head.saturating_sub(LOOK_BACK), LOOK_BACK as u32)
        .await
    {
        Ok(entries) => {
            let rows: Vec<Row> = entries.iter().rev().take(SHOWN).map(row).collect();
            c.views
                .render("audit_list.html", context! { entries => Serde(rows) })
                .into_response()
        }
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

pub async fn entry(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Path(seq): Path<u64>,
) -> Response {
    let caller = match auditor(&c, &headers, peer) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let found = c.engine.audit_log().entry(seq).await;
    let Some(e) = found.ok().flatten() else {
        return c.error_page(
            StatusCode::NOT_FOUND,
            &format!("entry {seq} does not exist"),
        );
    };
    let pretty = serde_json::from_str::<serde_json::Value>(&e.canonical)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| e.canonical.clone());
    c.views
        .page(
            "entry.html",
            &caller,
            None,
            "audit",
            context! {
                entry => Serde(row(&e)),
                canonical => e.canonical,
                pretty => pretty,
                mac => e.mac,
                key_id => e.key_id,
            },
        )
        .into_response()
}

/// The receipt as a JSON file (`arbiter audit verify-receipt FILE` checks it offline).
pub async fn receipt(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Path(seq): Path<u64>,
) -> Response {
    if let Err(r) = auditor(&c, &headers, peer) {
        return r;
    }
    match crate::api::audit::receipt_file(&c.engine, seq).await {
        Ok(r) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"receipt-{seq}.json\""),
                ),
            ],
            serde_json::to_string_pretty(&r).unwrap_or_default() + "\n",
        )
            .into_response(),
        Err(e) => c.error_page(
            StatusCode::NOT_FOUND,
            &format!("no receipt for entry {seq}: {e}"),
        ),
    }
}

#[derive(Deserialize)]
pub struct Verify {
    #[serde(default)]
    csrf: String,
}

/// Verifies the whole log against the newest signed checkpoint. It changes nothing,
/// but costs work, so it is a CSRF-checked POST.
pub async fn verify(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<Verify>,
) -> Response {
    let caller = match auditor(&c, &headers, peer) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    if !caller.session.csrf_matches(&f.csrf) {
        return c.error_page(
            StatusCode::FORBIDDEN,
            "verify: the form's CSRF token is missing or wrong",
        );
    }
    let (ok, text) = match c.engine.verify_audit(1, 0).await {
        Ok(rep) => match rep.failure {
            None => (
                true,
                format!(
                    "Verified: {} entries; the log rebuilds the newest signed checkpoint ({} entries).",
                    rep.checked, rep.checkpoint_size
                ),
            ),
            Some(f) => (
                false,
                format!("NOT VERIFIED at entry {}: {}: {}", f.seq, f.fault.name(), f.message),
            ),
        },
        Err(e) => (false, format!("Verification could not run: {e}")),
    };
    c.sessions.flash(&caller.session_id, ok, text);
    Redirect::to("/audit").into_response()
}
