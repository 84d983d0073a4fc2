//! `arbiter audit report --format article12`: an evidence report over a time range for
//! EU AI Act Article 12 (record-keeping), built from the log itself.
//!
//! The report is only as good as the log behind it, so it first checks the log: the
//! export up to the latest signed checkpoint must rebuild exactly the signed Merkle root
//! (and, with `--public-key`, the signature must verify), and the HMAC chain must verify
//! (offline with `--keys`, else by the server). Counting is a pure function of the
//! entries ([`Tally`]), unit-tested without a server.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One entry as the report reads it.
pub struct Seen<'a> {
    pub seq: u64,
    pub ts_ms: i64,
    pub kind: &'a str,
    pub agent_id: &'a str,
    pub outcome: &'a str,
    pub body: &'a Value,
}

#[derive(Debug, Default, Serialize)]
pub struct AgentUse {
    pub first: String,
    pub last: String,
    pub decisions: u64,
    pub allowed: u64,
    pub denied: u64,
    pub pending_approval: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Oversight {
    pub approvals_requested: u64,
    pub approvals_granted: u64,
    pub approvals_denied: u64,
    pub approvals_expired: u64,
    /// Approver principal → decisions taken.
    pub approvers: BTreeMap<String, u64>,
    pub halts_engaged: u64,
    pub halts_released: u64,
    /// Halts engaged by the watchdog (automatic).
    pub watchdog_halts: u64,
    /// Principal → halts engaged or released.
    pub halt_principals: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Changes {
    /// (time, version, accepted)
    pub policy: Vec<(String, String, bool)>,
    pub key_changes: u64,
    pub trust_changes: u64,
    pub consent_grants: u64,
    pub consent_revocations: u64,
    pub principals_created: u64,
    pub principals_revoked: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Security {
    /// RPC → refused calls.
    pub auth_denied: BTreeMap<String, u64>,
    pub delegations_issued: u64,
    /// Refusal code → count.
    pub delegations_refused: BTreeMap<String, u64>,
    pub forged_tokens_presented: u64,
}

/// Everything the report counts over the entries in its period.
#[derive(Debug, Default, Serialize)]
pub struct Tally {
    pub entries: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub by_kind: BTreeMap<String, u64>,
    /// allow / deny / pending_approval → count.
    pub decisions: BTreeMap<String, u64>,
    /// Deciding reason code of each denial → count.
    pub denials: BTreeMap<String, u64>,
    pub records: BTreeMap<String, u64>,
    pub overspends: u64,
    pub by_day: BTreeMap<String, u64>,
    pub agents: BTreeMap<String, AgentUse>,
    pub oversight: Oversight,
    pub changes: Changes,
    pub security: Security,
    #[serde(skip)]
    approval_ids: std::collections::HashSet<String>,
}

fn text(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

impl Tally {
    pub fn add(&mut self, e: &Seen<'_>) {
        self.entries += 1;
        self.first_seq.get_or_insert(e.seq);
        self.last_seq = Some(e.seq);
        *self.by_kind.entry(e.kind.to_owned()).or_default() += 1;
        *self
            .by_day
            .entry(text(e.ts_ms)[..10].to_owned())
            .or_default() += 1;
        let count =
            |m: &mut BTreeMap<String, u64>, k: &str| *m.entry(k.to_owned()).or_default() += 1;
        match e.kind {
            "evaluate" => {
                count(&mut self.decisions, e.outcome);
                let a = self.agents.entry(e.agent_id.to_owned()).or_default();
                if a.first.is_empty() {
                    a.first = text(e.ts_ms);
                }
                a.last = text(e.ts_ms);
                a.decisions += 1;
                match e.outcome {
                    "allow" => a.allowed += 1,
                    "deny" => {
                        a.denied += 1;
                        let code = e
                            .body
                            .get("reasons")
                            .and_then(Value::as_array)
                            .and_then(|rs| rs.iter().find(|r| r["passed"] == false))
                            .map(|r| str_of(r, "code"))
                            .unwrap_or("unknown");
                        count(&mut self.denials, code);
                    }
                    "pending_approval" => {
                        a.pending_approval += 1;
                        // A re-sent still-pending request is not a new request.
                        let new = e.body.get("approval_id").is_some_and(|v| !v.is_null())
                            && !self.seen_approval(e.body);
                        if new {
                            self.oversight.approvals_requested += 1;
                        }
                    }
                    _ => {}
                }
                if e.body.pointer("/delegation/forged").is_some() {
                    self.security.forged_tokens_presented += 1;
                }
            }
            "record" => {
                count(&mut self.records, e.outcome);
                if e.body.get("overspend") == Some(&Value::Bool(true)) {
                    self.overspends += 1;
                }
            }
            "approval.grant" | "approval.deny" => {
                if e.kind == "approval.grant" {
                    self.oversight.approvals_granted += 1;
                } else {
                    self.oversight.approvals_denied += 1;
                }
                count(&mut self.oversight.approvers, str_of(e.body, "approver"));
            }
            "approval.expire" => self.oversight.approvals_expired += 1,
            "halt.engage" | "halt.release" => {
                if e.kind == "halt.engage" {
                    self.oversight.halts_engaged += 1;
                    if str_of(e.body, "principal") == "watchdog" {
                        self.oversight.watchdog_halts += 1;
                    }
                } else {
                    self.oversight.halts_released += 1;
                }
                count(
                    &mut self.oversight.halt_principals,
                    str_of(e.body, "principal"),
                );
            }
            "policy.load" | "policy.rejected" => self.changes.policy.push((
                text(e.ts_ms),
                str_of(e.body, "version").to_owned(),
                e.kind == "policy.load",
            )),
            "keys.changed" => self.changes.key_changes += 1,
            "trust.set" => self.changes.trust_changes += 1,
            "consent.grant" => self.changes.consent_grants += 1,
            "consent.revoke" => self.changes.consent_revocations += 1,
            "principal.create" => self.changes.principals_created += 1,
            "principal.revoke" => self.changes.principals_revoked += 1,
            // A summary entry (`dropped`) stands for that many refusals the queue
            // could not take one by one.
            "auth.denied" => {
                let refusals = e.body.get("dropped").and_then(Value::as_u64).unwrap_or(1);
                *self
                    .security
                    .auth_denied
                    .entry(str_of(e.body, "rpc").to_owned())
                    .or_default() += refusals;
            }
            "delegation.issued" => self.security.delegations_issued += 1,
            "delegation.refused" => count(
                &mut self.security.delegations_refused,
                str_of(e.body, "code"),
            ),
            _ => {}
        }
    }

    fn seen_approval(&mut self, body: &Value) -> bool {
        !self
            .approval_ids
            .insert(str_of(body, "approval_id").to_owned())
    }
}

/// How the integrity of the log was established.
#[derive(Debug, Serialize)]
pub struct Integrity {
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: String,
    /// The export rebuilt the signed root.
    pub tree_ok: bool,
    /// `verified`, `failed: …`, or `not checked (no --public-key)`.
    pub signature: String,
    /// `verified offline with the key ring`, `verified by the server`, or the failure.
    pub chain: String,
    pub chain_ok: bool,
    pub problems: Vec<String>,
}

impl Integrity {
    pub fn ok(&self) -> bool {
        self.tree_ok && self.chain_ok && !self.signature.starts_with("failed")
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub generated_at: String,
    pub period_since: Option<String>,
    pub period_until: Option<String>,
    pub integrity: Integrity,
    pub tally: Tally,
    pub coverage_caveat: &'static str,
}

pub const CAVEAT: &str = "This report covers what Arbiter was asked about and what it recorded. \
Actions an agent took without calling Evaluate, outcomes never reported with Record, and \
systems that bypass Arbiter are not in the log and cannot appear here. Times are the \
server's clock. Counts are over the entries whose time falls in the period; integrity \
is checked over the whole log up to the latest signed checkpoint.";

impl Report {
    pub fn markdown(&self) -> String {
        let t = &self.tally;
        let i = &self.integrity;
        let mut m = String::new();
        let mut line = |s: String| {
            m.push_str(&s);
            m.push('\n');
        };
        line("# Arbiter evidence report — EU AI Act Article 12 (record-keeping)".into());
        line(String::new());
        line(format!("- Log: `{}`", i.origin));
        line(format!(
            "- Period: {} to {}",
            self.period_since.as_deref().unwrap_or("the first entry"),
            self.period_until
                .as_deref()
                .unwrap_or("the latest checkpoint")
        ));
        line(format!("- Generated: {}", self.generated_at));
        line(format!(
            "- Entries in the period: {} (seq {} to {})",
            t.entries,
            t.first_seq.map_or("–".into(), |s| s.to_string()),
            t.last_seq.map_or("–".into(), |s| s.to_string())
        ));
        line(String::new());
        line("## 1. Integrity of the record (Art. 12(1))".into());
        line(String::new());
        line(format!(
            "**Status: {}**",
            if i.ok() { "VERIFIED" } else { "FAILED" }
        ));
        line(String::new());
        line(format!(
            "- Merkle tree (RFC 6962): {} entries rebuild the signed root `{}`: {}",
            i.tree_size,
            i.root_hash,
            if i.tree_ok { "yes" } else { "NO" }
        ));
        line(format!("- Checkpoint signature (Ed25519): {}", i.signature));
        line(format!("- HMAC chain: {}", i.chain));
        for p in &i.problems {
            line(format!("- Problem: {p}"));
        }
        line(String::new());
        line("## 2. Events recorded automatically (Art. 12(1))".into());
        line(String::new());
        table(&mut line, "Kind", &t.by_kind);
        line("## 3. Situations that may present a risk (Art. 12(2)(a))".into());
        line(String::new());
        line("Decisions by outcome:".into());
        line(String::new());
        table(&mut line, "Outcome", &t.decisions);
        line("Denials by deciding reason:".into());
        line(String::new());
        table(&mut line, "Reason code", &t.denials);
        line(format!(
            "Reported outcomes (Record): {}; overspends flagged: {}.",
            summary(&t.records),
            t.overspends
        ));
        line(String::new());
        line("## 4. Post-market monitoring (Art. 12(2)(b), Art. 72)".into());
        line(String::new());
        table(&mut line, "Day (UTC)", &t.by_day);
        line("## 5. Human oversight and operation (Art. 12(2)(c), Art. 14, Art. 26(5))".into());
        line(String::new());
        let o = &t.oversight;
        line(format!(
            "- Approvals: {} requested, {} granted, {} denied, {} expired",
            o.approvals_requested, o.approvals_granted, o.approvals_denied, o.approvals_expired
        ));
        line(format!(
            "- Approvers (natural persons verifying, Art. 12(3)(d)): {}",
            summary(&o.approvers)
        ));
        line(format!(
            "- Halts: {} engaged ({} by the watchdog), {} released; by: {}",
            o.halts_engaged,
            o.watchdog_halts,
            o.halts_released,
            summary(&o.halt_principals)
        ));
        line(String::new());
        line("## 6. Periods of use per agent (Art. 12(3)(a))".into());
        line(String::new());
        line("| Agent | First decision | Last decision | Decisions | Allowed | Denied | Pending approval |".into());
        line("|---|---|---|---:|---:|---:|---:|".into());
        for (agent, a) in &t.agents {
            line(format!(
                "| `{agent}` | {} | {} | {} | {} | {} | {} |",
                a.first, a.last, a.decisions, a.allowed, a.denied, a.pending_approval
            ));
        }
        line(String::new());
        line("## 7. Changes to the system and its controls".into());
        line(String::new());
        let c = &t.changes;
        for (when, version, accepted) in &c.policy {
            line(format!(
                "- {when}: policy `{version}` {}",
                if *accepted { "loaded" } else { "REJECTED" }
            ));
        }
        line(format!(
            "- Key ring changes: {}; trust changes: {}; consent grants / revocations: {} / {}; principals created / revoked: {} / {}",
            c.key_changes, c.trust_changes, c.consent_grants, c.consent_revocations, c.principals_created, c.principals_revoked
        ));
        line(String::new());
        line("## 8. Security events".into());
        line(String::new());
        let s = &t.security;
        line(format!(
            "- Refused calls by RPC: {}",
            summary(&s.auth_denied)
        ));
        line(format!(
            "- Delegation tokens issued: {}; refused: {}; forged tokens presented: {}",
            s.delegations_issued,
            summary(&s.delegations_refused),
            s.forged_tokens_presented
        ));
        line(String::new());
        line("## 9. Coverage caveat".into());
        line(String::new());
        line(CAVEAT.into());
        m
    }
}

fn summary(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(line: &mut impl FnMut(String), head: &str, m: &BTreeMap<String, u64>) {
    if m.is_empty() {
        line("None.".into());
        line(String::new());
        return;
    }
    line(format!("| {head} | Count |"));
    line("|---|---:|".into());
    for (k, v) in m {
        line(format!("| `{k}` | {v} |"));
    }
    line(String::new());
}

/// What `arbiter audit report` was asked for.
pub struct ReportOptions {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub keys: Option<std::path::PathBuf>,
    pub public_key: Option<std::path::PathBuf>,
}

/// Parses `--since` / `--until`: RFC 3339 time or a date (`2026-11-01`, midnight UTC).
pub fn parse_time(flag: &str, s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| {
            super::Exit(
                2,
                format!("{flag} {s:?}: use an RFC 3339 time or a date like 2026-11-01"),
            )
            .into()
        })
}

/// Checks the log up to the latest checkpoint and counts the entries in the period.
pub async fn generate(c: &arbiter_client::Client, o: &ReportOptions) -> anyhow::Result<Report> {
    use crate::audit::{merkle, verify::Verifier, SealedEntry, GENESIS};
    use arbiter_client::proto as pb;
    use tokio_stream::StreamExt;

    let fail = |e: arbiter_client::Error| -> anyhow::Error { super::Exit(3, e.to_string()).into() };
    let cp = c
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .map_err(fail)?;
    let origin = cp.checkpoint.lines().next().unwrap_or_default().to_owned();
    let mut problems = Vec::new();
    let signature = match &o.public_key {
        None => "not checked (pass --public-key signing.pub)".to_owned(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| super::Exit(2, format!("reading {}: {e}", path.display())))?;
            let (want_origin, keys) = crate::audit::receipt::read_public_key(&text)
                .map_err(|e| super::Exit(2, format!("{}: {e}", path.display())))?;
            match crate::audit::checkpoint::verify(&cp.checkpoint, &want_origin, &keys) {
                Ok(head) if hex::encode(head.root) == cp.root_hash && head.size == cp.tree_size => {
                    "verified".to_owned()
                }
                Ok(_) => "failed: the signed note disagrees with the reported tree head".to_owned(),
                Err(e) => format!("failed: {e}"),
            }
        }
    };
    let ring = match &o.keys {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| super::Exit(2, format!("reading {}: {e}", path.display())))?;
            Some(crate::keys::parse(&text, &path.display().to_string())?)
        }
        None => None,
    };
    let mut verifier = ring.as_ref().map(|r| Verifier::new(r, 1, *GENESIS));
    let mut chain_failure: Option<String> = None;
    let mut frontier = merkle::Frontier::default();
    let mut tally = Tally::default();
    if cp.tree_size > 0 {
        let mut lines = c
            .export_audit(pb::ExportAuditRequest {
                from_seq: 1,
                to_seq: cp.tree_size,
            })
            .await
            .map_err(fail)?;
        while let Some(line) = lines.next().await {
            let line = line.map_err(fail)?;
            let parsed: Value = serde_json::from_str(&line)?;
            let entry = &parsed["entry"];
            let canonical = serde_jcs::to_string(entry)?;
            frontier.push(merkle::leaf_hash(canonical.as_bytes()));
            let seq = entry["seq"].as_u64().unwrap_or(0);
            let ts_ms = entry["ts"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis())
                .unwrap_or(0);
            if let (Some(v), None) = (verifier.as_mut(), &chain_failure) {
                let sealed = SealedEntry {
                    seq,
                    ts_ms,
                    kind: str_of(entry, "kind").to_owned(),
                    agent_id: str_of(entry, "agent_id").to_owned(),
                    session_id: str_of(entry, "session_id").to_owned(),
                    outcome: str_of(entry, "outcome").to_owned(),
                    key_id: str_of(entry, "key_id").to_owned(),
                    canonical: canonical.clone(),
                    mac: str_of(&parsed, "mac").to_owned(),
                };
                if let Err(f) = v.feed(&sealed) {
                    chain_failure =
                        Some(format!("seq {}: {}: {}", f.seq, f.fault.name(), f.message));
                }
            }
            let in_period =
                o.since_ms.is_none_or(|s| ts_ms >= s) && o.until_ms.is_none_or(|u| ts_ms < u);
            if in_period {
                tally.add(&Seen {
                    seq,
                    ts_ms,
                    kind: str_of(entry, "kind"),
                    agent_id: str_of(entry, "agent_id"),
                    outcome: str_of(entry, "outcome"),
                    body: &entry["body"],
                });
            }
        }
    }
    let rebuilt = hex::encode(frontier.root());
    let tree_ok = frontier.size == cp.tree_size && rebuilt == cp.root_hash;
    if !tree_ok {
        problems.push(format!(
            "the export of {} entries rebuilds root {rebuilt}, not the checkpoint's {} (size {}): entries were altered, inserted, removed or reordered",
            frontier.size, cp.root_hash, cp.tree_size
        ));
    }
    let (chain, chain_ok) = match (verifier, chain_failure) {
        (_, Some(f)) => (format!("FAILED offline with the key ring at {f}"), false),
        (Some(v), None) => (
            format!("{} entries verified offline with the key ring", v.checked),
            true,
        ),
        (None, None) => {
            let v = c
                .verify_audit(pb::VerifyAuditRequest {
                    from_seq: 1,
                    to_seq: cp.tree_size,
                })
                .await
                .map_err(fail)?;
            if v.ok {
                (
                    format!(
                        "{} entries verified by the server (pass --keys to verify offline)",
                        v.checked
                    ),
                    true,
                )
            } else {
                (
                    format!(
                        "FAILED on the server at seq {}: {}",
                        v.first_bad_seq, v.message
                    ),
                    false,
                )
            }
        }
    };
    Ok(Report {
        format: "article12",
        generated_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        period_since: o.since_ms.map(text),
        period_until: o.until_ms.map(text),
        integrity: Integrity {
            origin,
            tree_size: cp.tree_size,
            root_hash: cp.root_hash,
            tree_ok,
            signature,
            chain,
            chain_ok,
            problems,
        },
        tally,
        coverage_caveat: CAVEAT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seen<'a>(seq: u64, kind: &'a str, outcome: &'a str, body: &'a Value) -> Seen<'a> {
        Seen {
            seq,
            ts_ms: 1_767_225_600_000 + seq as i64 * 1000,
            kind,
            agent_id: "bot",
            outcome,
            body,
        }
    }

    #[test]
    fn the_tally_counts_decisions_denials_oversight_and_changes() {
        let deny = json!({"reasons": [{"stage": "halt", "code": "ok", "passed": true}, {"stage": "budget", "code": "budget.exceeded", "passed": false}]});
        let pending = json!({"approval_id": "apr_1"});
        let grant = json!({"approver": "alice"});
        let halt = json!({"principal": "watchdog"});
        let policy = json!({"version": "sha256:abc"});
        let empty = json!({});
        let mut t = Tally::default();
        t.add(&seen(1, "policy.load", "accepted", &policy));
        t.add(&seen(2, "evaluate", "allow", &empty));
        t.add(&seen(3, "evaluate", "deny", &deny));
        t.add(&seen(4, "evaluate", "pending_approval", &pending));
        t.add(&seen(5, "evaluate", "pending_approval", &pending));
        t.add(&seen(6, "approval.grant", "granted", &grant));
        t.add(&seen(7, "halt.engage", "engaged", &halt));
        assert_eq!(t.entries, 7);
        assert_eq!((t.first_seq, t.last_seq), (Some(1), Some(7)));
        assert_eq!(t.decisions["pending_approval"], 2);
        assert_eq!(t.denials["budget.exceeded"], 1);
        assert_eq!(
            t.oversight.approvals_requested, 1,
            "a re-sent pending request is not new"
        );
        assert_eq!(t.oversight.approvers["alice"], 1);
        assert_eq!(t.oversight.watchdog_halts, 1);
        assert_eq!(t.agents["bot"].decisions, 4);
        assert_eq!(t.changes.policy.len(), 1);
        assert_eq!(t.by_day["2026-01-01"], 7);
    }

    #[test]
    fn a_summary_refusal_entry_counts_as_the_refusals_it_stands_for() {
        let one = json!({"principal": "unauthenticated", "rpc": "*", "reason": "unknown key"});
        let summary =
            json!({"principal": "unauthenticated", "rpc": "*", "reason": "…", "dropped": 40});
        let role = json!({"principal": "bob", "rpc": "Halt", "reason": "Halt requires …"});
        let mut t = Tally::default();
        t.add(&seen(1, "auth.denied", "denied", &one));
        t.add(&seen(2, "auth.denied", "denied", &summary));
        t.add(&seen(3, "auth.denied", "denied", &role));
        assert_eq!(t.security.auth_denied["*"], 41);
        assert_eq!(t.security.auth_denied["Halt"], 1);
        assert_eq!(t.by_kind["auth.denied"], 3, "entries are still entries");
    }
}
