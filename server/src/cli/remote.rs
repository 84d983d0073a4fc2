//! Commands that talk to a running server through `arbiter-client`.

use super::term::{self, say, tell, Shown};
use super::{Exit, Remote};
use anyhow::Context;
use arbiter_client::{proto as pb, Client, Error};
use clap::Subcommand;
use futures::StreamExt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Assign a level (L0_OBSERVER … L5_AUTONOMOUS, or L0 … L5).
    Set {
        agent: String,
        level: String,
        /// Only for actions on this tool or budget category.
        #[arg(long, default_value = "")]
        scope: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show the effective level and how it was derived.
    Get {
        agent: String,
        #[arg(long, default_value = "")]
        scope: String,
    },
    /// List assignments.
    List { agent: Option<String> },
}

#[derive(Subcommand, Debug)]
pub enum ConsentCommand {
    /// Grant consent (omit --purpose to cover every purpose).
    Grant {
        agent: String,
        data_type: String,
        #[arg(long, default_value = "")]
        purpose: String,
        /// Expiry as RFC 3339 time or a duration from now ("30d", "12h").
        #[arg(long)]
        expires: Option<String>,
    },
    /// Revoke exactly one grant.
    Revoke {
        agent: String,
        data_type: String,
        #[arg(long, default_value = "")]
        purpose: String,
    },
    /// List grants.
    List { agent: Option<String> },
}

#[derive(Subcommand, Debug)]
pub enum PrincipalsCommand {
    /// Create a principal; its API key is printed once and never again.
    Create {
        name: String,
        /// agent, operator, admin or auditor (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Agent ids or globs an agent principal may act for (repeatable).
        #[arg(long = "agent")]
        agents: Vec<String>,
        /// Authenticate by client certificate instead of an API key: a URI SAN
        /// (spiffe://…), dns:NAME or cn:NAME. No key is issued.
        #[arg(long)]
        tls_identity: Option<String>,
    },
    /// List principals (never their keys).
    List,
    /// Revoke a principal; its key stops working at once.
    Revoke { name: String },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Follow the log as entries commit.
    Tail {
        /// Start from this sequence number (default: only new entries).
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value = "")]
        agent: String,
        #[arg(long)]
        kind: Vec<String>,
        /// Stop after this many entries.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Verify the chain (on the server, or offline over an export with --export).
    Verify {
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 0)]
        to: u64,
        /// Verify this JSONL export offline instead of asking the server.
        #[arg(long, requires = "keys")]
        export: Option<PathBuf>,
        /// Key ring file for offline verification (`<data dir>/keys/hmac.json`).
        #[arg(long)]
        keys: Option<PathBuf>,
        /// With --export: a saved checkpoint the export must match (its first `size`
        /// entries rebuild the signed Merkle root).
        #[arg(long, requires_all = ["export", "public_key"])]
        checkpoint: Option<PathBuf>,
        /// With --checkpoint: `keys/signing.pub`, to check the checkpoint's signature.
        #[arg(long, requires = "checkpoint")]
        public_key: Option<PathBuf>,
    },
    /// Print the latest signed checkpoint (C2SP signed note).
    Checkpoint {
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Print a receipt for one entry: the entry, its inclusion proof and a checkpoint (JSON).
    Proof {
        seq: u64,
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Verify a receipt offline with only the public key (`<data dir>/keys/signing.pub`).
    VerifyReceipt {
        file: PathBuf,
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Prove the server's log extends a checkpoint saved earlier (detects truncation and rewrites).
    Extends {
        /// A checkpoint saved with `arbiter audit checkpoint --out FILE`.
        checkpoint: PathBuf,
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Write the log as JSONL (one `{"entry":…,"mac":…}` per line).
    Export {
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 0)]
        to: u64,
        /// Output file (default stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Evidence report over a time range (EU AI Act Art. 12): integrity of the log
    /// (tree, signature, chain), events, decisions, denials, human oversight, periods of
    /// use, changes, security events and a coverage caveat. Exit 1 if integrity fails.
    Report {
        /// Report format (only `article12`).
        #[arg(long, value_parser = ["article12"], default_value = "article12")]
        format: String,
        /// Start of the period (RFC 3339 or YYYY-MM-DD, inclusive).
        #[arg(long)]
        since: Option<String>,
        /// End of the period (RFC 3339 or YYYY-MM-DD, exclusive).
        #[arg(long)]
        until: Option<String>,
        /// Key ring (`keys/hmac.json`) to verify the chain offline instead of asking the server.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// `keys/signing.pub`, to verify the checkpoint signature.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Write JSON instead of Markdown.
        #[arg(long)]
        json: bool,
        /// Output file (default stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Show entries matching a filter.
    Query {
        #[arg(long, default_value = "")]
        agent: String,
        #[arg(long, default_value = "")]
        session: String,
        #[arg(long)]
        kind: Vec<String>,
        #[arg(long, default_value = "")]
        outcome: String,
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
}

pub async fn connect(r: &Remote) -> anyhow::Result<Client> {
    let mut builder = Client::builder(r.addr.clone()).timeout(Duration::from_secs_f64(r.timeout));
    if let Some(key) = &r.api_key {
        builder = builder.api_key(key.clone());
    }
    if let Some(ca) = &r.tls_ca {
        builder = builder.tls_ca_pem(read_pem("--tls-ca", ca)?);
    }
    if let (Some(cert), Some(key)) = (&r.tls_cert, &r.tls_key) {
        builder =
            builder.tls_identity_pem(read_pem("--tls-cert", cert)?, read_pem("--tls-key", key)?);
    }
    if let Some(name) = &r.tls_domain {
        builder = builder.tls_domain_name(name.clone());
    }
    builder.connect().await.map_err(|e| match e {
        Error::InvalidConfig(m) => Exit(2, m).into(),
        e => Exit(3, format!("cannot reach arbiter at {}: {e} (is `arbiter serve` running? set --addr or ARBITER_ADDR)", r.addr)).into(),
    })
}

fn read_pem(flag: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Exit(2, format!("{flag} {}: {e}", path.display())).into())
}

pub(super) fn fail(e: Error) -> anyhow::Error {
    let code = if e.is_unavailable() || e.is_timeout() {
        3
    } else {
        1
    };
    Exit(code, e.to_string()).into()
}

fn level_name(v: i32) -> String {
    pb::TrustLevel::try_from(v)
        .map(|l| {
            l.as_str_name()
                .trim_start_matches("TRUST_LEVEL_")
                .to_owned()
        })
        .unwrap_or_else(|_| v.to_string())
}

fn parse_level(s: &str) -> anyhow::Result<i32> {
    let l: crate::domain::TrustLevel = s.parse().map_err(|e: String| Exit(2, e))?;
    Ok(i32::from(l.rank()) + 1)
}

pub(super) fn ts(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

pub async fn trust(r: &Remote, cmd: TrustCommand) -> anyhow::Result<()> {
    let c = connect(r).await?;
    match cmd {
        TrustCommand::Set {
            agent,
            level,
            scope,
            reason,
        } => {
            let resp = c
                .set_trust(pb::SetTrustRequest {
                    agent_id: agent,
                    level: parse_level(&level)?,
                    scope,
                    reason,
                })
                .await
                .map_err(fail)?;
            let a = resp.assignment.unwrap_or_default();
            say!(
                "{} is now {}{} (audit entry {})",
                a.agent_id,
                level_name(a.level),
                scope_note(&a.scope),
                resp.audit_seq
            );
        }
        TrustCommand::Get { agent, scope } => {
            let resp = c
                .get_trust(pb::GetTrustRequest {
                    agent_id: agent.clone(),
                    scope,
                })
                .await
                .map_err(fail)?;
            say!(
                "{agent}: {} ({})",
                level_name(resp.effective_level),
                resp.source
            );
        }
        TrustCommand::List { agent } => {
            let resp = c
                .list_trust(pb::ListTrustRequest {
                    agent_id: agent.unwrap_or_default(),
                })
                .await
                .map_err(fail)?;
            for a in resp.assignments {
                say!(
                    "{}\t{}{}\tby {} at {}",
                    a.agent_id,
                    level_name(a.level),
                    scope_note(&a.scope),
                    a.assigned_by,
                    ts(&a.assigned_at)
                );
            }
        }
    }
    Ok(())
}

fn scope_note(scope: &str) -> String {
    if scope.is_empty() {
        String::new()
    } else {
        format!(" for scope {scope}")
    }
}

fn parse_expiry(s: &str) -> anyhow::Result<prost_types::Timestamp> {
    let at = match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&chrono::Utc),
        Err(_) => {
            let d = humantime::parse_duration(s).map_err(|_| {
                Exit(
                    2,
                    format!("--expires {s:?}: use RFC 3339 time or a duration like 30d"),
                )
            })?;
            chrono::Utc::now() + chrono::Duration::from_std(d)?
        }
    };
    Ok(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

pub async fn consent(r: &Remote, cmd: ConsentCommand) -> anyhow::Result<()> {
    let c = connect(r).await?;
    match cmd {
        ConsentCommand::Grant {
            agent,
            data_type,
            purpose,
            expires,
        } => {
            let expires_at = expires.as_deref().map(parse_expiry).transpose()?;
            let resp = c
                .grant_consent(pb::GrantConsentRequest {
                    agent_id: agent,
                    data_type,
                    purpose,
                    expires_at,
                })
                .await
                .map_err(fail)?;
            let g = resp.grant.unwrap_or_default();
            say!(
                "granted: {} may access {} for {} (expires {}; audit entry {})",
                g.agent_id,
                g.data_type,
                purpose_note(&g.purpose),
                ts(&g.expires_at),
                resp.audit_seq
            );
        }
        ConsentCommand::Revoke {
            agent,
            data_type,
            purpose,
        } => {
            let resp = c
                .revoke_consent(pb::RevokeConsentRequest {
                    agent_id: agent.clone(),
                    data_type: data_type.clone(),
                    purpose: purpose.clone(),
                })
                .await
                .map_err(fail)?;
            say!(
                "revoked: {agent} / {data_type} / {} (audit entry {})",
                purpose_note(&purpose),
                resp.audit_seq
            );
        }
        ConsentCommand::List { agent } => {
            let resp = c
                .list_consents(pb::ListConsentsRequest {
                    agent_id: agent.unwrap_or_default(),
                })
                .await
                .map_err(fail)?;
            for g in resp.grants {
                say!(
                    "{}\t{}\t{}\tby {}\texpires {}",
                    g.agent_id,
                    g.data_type,
                    purpose_note(&g.purpose),
                    g.granted_by,
                    ts(&g.expires_at)
                );
            }
        }
    }
    Ok(())
}

fn purpose_note(p: &str) -> String {
    if p.is_empty() {
        "every purpose".into()
    } else {
        format!("purpose {p}")
    }
}

fn show_amount(unit: &str, v: i64) -> String {
    if unit == "micro_usd" {
        crate::domain::MicroUsd(v.max(0) as u64).to_string()
    } else {
        v.to_string()
    }
}

pub async fn budget(
    r: &Remote,
    agent: Option<String>,
    session: Option<String>,
) -> anyhow::Result<()> {
    let c = connect(r).await?;
    let resp = c
        .get_budgets(pb::GetBudgetsRequest {
            agent_id: agent.unwrap_or_default(),
            session_id: session.unwrap_or_default(),
        })
        .await
        .map_err(fail)?;
    if resp.budgets.is_empty() {
        say!("no budget applies");
    }
    for b in resp.budgets {
        say!(
            "{} ({} {}, {} window from {})",
            b.name,
            b.scope,
            b.scope_key,
            b.period,
            ts(&b.window_start)
        );
        for a in b.amounts {
            say!(
                "  {:<16} spent {:>14}  reserved {:>14}  remaining {:>14}  of {}",
                a.unit,
                show_amount(&a.unit, a.spent),
                show_amount(&a.unit, a.reserved),
                show_amount(&a.unit, a.remaining),
                show_amount(&a.unit, a.cap)
            );
        }
    }
    Ok(())
}

pub async fn agents(r: &Remote) -> anyhow::Result<()> {
    let c = connect(r).await?;
    let resp = c
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(fail)?;
    for a in resp.agents {
        say!(
            "{}\t{}\tfirst seen {}\tlast seen {}",
            a.agent_id,
            level_name(a.trust_level),
            ts(&a.first_seen),
            ts(&a.last_seen)
        );
    }
    Ok(())
}

pub async fn policy_show(r: &Remote) -> anyhow::Result<()> {
    let c = connect(r).await?;
    let resp = c.get_policy(pb::GetPolicyRequest {}).await.map_err(fail)?;
    if let Some(cur) = resp.current {
        say!(
            "serving {} from {} ({} agent rules, {} budgets)",
            cur.version,
            cur.source,
            resp.agent_rules,
            resp.budgets
        );
    }
    for h in resp.history {
        let status = if h.accepted {
            "accepted".to_owned()
        } else {
            format!("REJECTED: {}", h.error)
        };
        say!("  {}  {}  {}", ts(&h.loaded_at), h.version, status);
    }
    Ok(())
}

/// An entry as its canonical JSON, made safe for a terminal with the same value (the
/// bytes may differ: `audit export` is the byte-exact form verifiers read).
fn print_entry(e: &pb::AuditEntry) {
    term::raw(&(crate::domain::text::json_safe(&e.canonical) + "\n"));
}

pub async fn audit(r: &Remote, cmd: AuditCommand) -> anyhow::Result<()> {
    if let AuditCommand::Verify {
        from,
        export: Some(file),
        keys,
        checkpoint,
        public_key,
        ..
    } = &cmd
    {
        let keys = keys.as_ref().expect("clap requires --keys with --export");
        let head = match (checkpoint, public_key) {
            (Some(cp), Some(pk)) => {
                let (origin, trusted) = read_key(pk)?;
                let note = std::fs::read_to_string(cp)
                    .with_context(|| format!("reading {}", cp.display()))?;
                Some(
                    crate::audit::checkpoint::verify(&note, &origin, &trusted)
                        .map_err(|e| Exit(1, format!("FAIL: checkpoint {}: {e}", cp.display())))?,
                )
            }
            _ => None,
        };
        return crate::audit::offline::verify_file(file, keys, *from, head.as_ref());
    }
    if let AuditCommand::VerifyReceipt { file, public_key } = &cmd {
        let (origin, key) = read_key(public_key)?;
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let receipt: crate::audit::receipt::ReceiptFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a receipt", file.display()))?;
        return match crate::audit::receipt::verify_receipt(&receipt, &origin, &key) {
            Ok((seq, head)) => {
                say!("OK: entry {seq} is in the log {origin} of size {} (signed checkpoint verified)", head.size);
                Ok(())
            }
            Err(e) => Err(Exit(1, format!("FAIL: {e}")).into()),
        };
    }
    let c = connect(r).await?;
    match cmd {
        AuditCommand::VerifyReceipt { .. } => unreachable!("handled offline above"),
        AuditCommand::Report {
            format: _,
            since,
            until,
            keys,
            public_key,
            json,
            out,
        } => {
            let options = super::report::ReportOptions {
                since_ms: since
                    .as_deref()
                    .map(|s| super::report::parse_time("--since", s))
                    .transpose()?,
                until_ms: until
                    .as_deref()
                    .map(|s| super::report::parse_time("--until", s))
                    .transpose()?,
                keys,
                public_key,
            };
            let report = super::report::generate(&c, &options).await?;
            let (text, shown) = if json {
                (serde_json::to_string_pretty(&report)? + "\n", Shown::Json)
            } else {
                (report.markdown(), Shown::Text)
            };
            write_out(out.as_ref(), &text, shown)?;
            if !report.integrity.ok() {
                return Err(Exit(
                    1,
                    format!(
                        "FAIL: the log did not verify: {}; {}",
                        report.integrity.chain,
                        report.integrity.problems.join("; ")
                    ),
                )
                .into());
            }
        }
        AuditCommand::Checkpoint { out } => {
            let cp = c
                .get_checkpoint(pb::GetCheckpointRequest {})
                .await
                .map_err(fail)?;
            write_out(out.as_ref(), &cp.checkpoint, Shown::Data)?;
        }
        AuditCommand::Proof { seq, out } => {
            let cp = c
                .get_checkpoint(pb::GetCheckpointRequest {})
                .await
                .map_err(fail)?;
            let proof = c
                .get_inclusion_proof(pb::GetInclusionProofRequest {
                    seq,
                    tree_size: cp.tree_size,
                })
                .await
                .map_err(fail)?;
            let mut lines = c
                .export_audit(pb::ExportAuditRequest {
                    from_seq: seq,
                    to_seq: seq,
                })
                .await
                .map_err(fail)?;
            let line = lines
                .next()
                .await
                .ok_or_else(|| Exit(1, format!("entry {seq} not found")))?
                .map_err(fail)?;
            let parsed: serde_json::Value = serde_json::from_str(&line)?;
            let receipt = crate::audit::receipt::ReceiptFile {
                entry: serde_jcs::to_string(&parsed["entry"])?,
                mac: parsed["mac"].as_str().unwrap_or_default().to_owned(),
                inclusion_proof: proof.hashes,
                checkpoint: cp.checkpoint,
            };
            write_out(
                out.as_ref(),
                &(serde_json::to_string_pretty(&receipt)? + "\n"),
                Shown::Json,
            )?;
        }
        AuditCommand::Extends {
            checkpoint,
            public_key,
        } => {
            let (origin, key) = read_key(&public_key)?;
            let saved = std::fs::read_to_string(&checkpoint)
                .with_context(|| format!("reading {}", checkpoint.display()))?;
            let old = crate::audit::checkpoint::verify(&saved, &origin, &key)
                .map_err(|e| Exit(1, format!("FAIL: saved checkpoint: {e}")))?;
            let now = c
                .get_checkpoint(pb::GetCheckpointRequest {})
                .await
                .map_err(fail)?;
            let new = crate::audit::checkpoint::verify(&now.checkpoint, &origin, &key)
                .map_err(|e| Exit(1, format!("FAIL: server checkpoint: {e}")))?;
            extends(&c, &old, &new).await?;
            say!(
                "OK: the log's {} entries rebuild its signed checkpoint and extend the saved checkpoint (size {})",
                new.size, old.size
            );
        }
        AuditCommand::Tail {
            from,
            agent,
            kind,
            limit,
        } => {
            let filter = pb::AuditFilter {
                agent_id: agent,
                kinds: kind,
                ..Default::default()
            };
            let mut stream = c
                .tail_audit(pb::TailAuditRequest {
                    filter: Some(filter),
                    from_seq: from,
                })
                .await
                .map_err(fail)?;
            let mut n = 0;
            while let Some(e) = stream.next().await {
                print_entry(&e.map_err(fail)?);
                n += 1;
                if limit.is_some_and(|l| n >= l) {
                    break;
                }
            }
        }
        AuditCommand::Verify { from, to, .. } => {
            let v = c
                .verify_audit(pb::VerifyAuditRequest {
                    from_seq: from,
                    to_seq: to,
                })
                .await
                .map_err(fail)?;
            if v.ok {
                let signed = if v.checkpoint_size > 0 {
                    format!(
                        "; they rebuild the signed checkpoint of size {}",
                        v.checkpoint_size
                    )
                } else {
                    String::new()
                };
                say!(
                    "OK: {} entries verified; head seq {} mac {}{signed}",
                    v.checked,
                    v.head_seq,
                    v.head_mac
                );
            } else {
                return Err(
                    Exit(1, format!("FAIL: seq {}: {}", v.first_bad_seq, v.message)).into(),
                );
            }
        }
        AuditCommand::Export { from, to, out } => {
            let mut stream = c
                .export_audit(pb::ExportAuditRequest {
                    from_seq: from,
                    to_seq: to,
                })
                .await
                .map_err(fail)?;
            let mut sink: Box<dyn Write> = match &out {
                Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut n = 0u64;
            while let Some(line) = stream.next().await {
                writeln!(sink, "{}", line.map_err(fail)?)?;
                n += 1;
            }
            sink.flush()?;
            if let Some(p) = out {
                tell!("exported {n} entries to {}", p.display());
            }
        }
        AuditCommand::Query {
            agent,
            session,
            kind,
            outcome,
            limit,
        } => {
            let filter = pb::AuditFilter {
                agent_id: agent,
                session_id: session,
                kinds: kind,
                outcome,
                ..Default::default()
            };
            let resp = c
                .query_audit(pb::QueryAuditRequest {
                    filter: Some(filter),
                    page_size: limit,
                    page_token: String::new(),
                })
                .await
                .map_err(fail)?;
            for e in &resp.entries {
                print_entry(e);
            }
        }
    }
    Ok(())
}

fn role_names(roles: &[i32]) -> String {
    roles
        .iter()
        .map(|r| {
            pb::Role::try_from(*r)
                .map(|r| {
                    r.as_str_name()
                        .trim_start_matches("ROLE_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_else(|_| r.to_string())
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn principals(r: &Remote, cmd: PrincipalsCommand) -> anyhow::Result<()> {
    let c = connect(r).await?;
    match cmd {
        PrincipalsCommand::Create {
            name,
            roles,
            agents,
            tls_identity,
        } => {
            if let Some(id) = &tls_identity {
                id.parse::<crate::domain::TlsIdentity>()
                    .map_err(|e| Exit(2, format!("--tls-identity: {e}")))?;
            }
            let mut wire = Vec::new();
            for role in &roles {
                let role: crate::domain::Role = role.parse().map_err(|e: String| Exit(2, e))?;
                wire.push(match role {
                    crate::domain::Role::Agent => pb::Role::Agent,
                    crate::domain::Role::Operator => pb::Role::Operator,
                    crate::domain::Role::Admin => pb::Role::Admin,
                    crate::domain::Role::Auditor => pb::Role::Auditor,
                } as i32);
            }
            let resp = c
                .create_principal(pb::CreatePrincipalRequest {
                    name,
                    roles: wire,
                    agents,
                    tls_identity: tls_identity.unwrap_or_default(),
                })
                .await
                .map_err(fail)?;
            let p = resp.principal.unwrap_or_default();
            if resp.api_key.is_empty() {
                say!(
                    "created principal {} with roles {}, bound to client certificate identity {} (no API key)",
                    p.name,
                    role_names(&p.roles),
                    p.tls_identity
                );
            } else {
                tell!(
                    "created principal {} with roles {}; its API key (shown once, store it now):",
                    p.name,
                    role_names(&p.roles)
                );
                say!("{}", resp.api_key);
            }
        }
        PrincipalsCommand::List => {
            let resp = c
                .list_principals(pb::ListPrincipalsRequest {})
                .await
                .map_err(fail)?;
            for p in resp.principals {
                let state = if p.revoked_at.is_some() {
                    format!("revoked {}", ts(&p.revoked_at))
                } else {
                    "active".into()
                };
                let credential = if p.tls_identity.is_empty() {
                    "api key".to_owned()
                } else {
                    format!("tls {}", p.tls_identity)
                };
                say!(
                    "{}\t{}\tagents [{}]\t{}\tcreated {}\t{}",
                    p.name,
                    role_names(&p.roles),
                    p.agents.join(", "),
                    credential,
                    ts(&p.created_at),
                    state
                );
            }
        }
        PrincipalsCommand::Revoke { name } => {
            let resp = c
                .revoke_principal(pb::RevokePrincipalRequest { name })
                .await
                .map_err(fail)?;
            say!(
                "revoked {}",
                resp.principal.map(|p| p.name).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Which halt: no flags = every agent; --agent = one agent; --agent and --session = one session.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long, requires = "agent")]
    pub session: Option<String>,
}

impl TargetArgs {
    fn to_pb(&self) -> pb::HaltTarget {
        let scope = match (&self.agent, &self.session) {
            (None, _) => pb::HaltScope::Global,
            (Some(_), None) => pb::HaltScope::Agent,
            (Some(_), Some(_)) => pb::HaltScope::Session,
        };
        pb::HaltTarget {
            scope: scope as i32,
            agent_id: self.agent.clone().unwrap_or_default(),
            session_id: self.session.clone().unwrap_or_default(),
        }
    }
}

fn show_halt(h: &pb::Halt) -> String {
    let t = h.target.clone().unwrap_or_default();
    let target = match pb::HaltScope::try_from(t.scope) {
        Ok(pb::HaltScope::Agent) => format!("agent {}", t.agent_id),
        Ok(pb::HaltScope::Session) => format!("session {} of agent {}", t.session_id, t.agent_id),
        _ => "every agent".to_owned(),
    };
    let mode = pb::HaltMode::try_from(h.mode)
        .map(|m| m.as_str_name().trim_start_matches("HALT_MODE_").to_owned())
        .unwrap_or_default();
    format!(
        "{mode} on {target} by {} at {}: {}",
        h.engaged_by,
        ts(&h.engaged_at),
        crate::domain::text::escape_text(&h.reason)
    )
}

pub async fn halt(
    r: &Remote,
    target: TargetArgs,
    mode: &str,
    reason: String,
) -> anyhow::Result<()> {
    let mode = match mode.to_ascii_lowercase().as_str() {
        "halt_noncritical" | "noncritical" => pb::HaltMode::HaltNoncritical,
        "halt_all" | "all" => pb::HaltMode::HaltAll,
        "emergency" => pb::HaltMode::Emergency,
        other => {
            return Err(Exit(
                2,
                format!("--mode {other:?}: use halt_noncritical, halt_all or emergency"),
            )
            .into())
        }
    };
    let c = connect(r).await?;
    let resp = c
        .halt(pb::HaltRequest {
            target: Some(target.to_pb()),
            mode: mode as i32,
            reason,
        })
        .await
        .map_err(fail)?;
    say!(
        "engaged: {}",
        resp.halt.as_ref().map(show_halt).unwrap_or_default()
    );
    Ok(())
}

pub async fn resume(r: &Remote, target: TargetArgs, reason: String) -> anyhow::Result<()> {
    let c = connect(r).await?;
    let resp = c
        .resume(pb::ResumeRequest {
            target: Some(target.to_pb()),
            reason,
        })
        .await
        .map_err(fail)?;
    say!(
        "released: {}",
        resp.halt.as_ref().map(show_halt).unwrap_or_default()
    );
    Ok(())
}

pub async fn halts(r: &Remote) -> anyhow::Result<()> {
    let c = connect(r).await?;
    let resp = c.list_halts(pb::ListHaltsRequest {}).await.map_err(fail)?;
    if resp.halts.is_empty() {
        say!("no halt is engaged");
    }
    for h in &resp.halts {
        say!("{}", show_halt(h));
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List approvals, newest first.
    List {
        #[arg(long, default_value = "")]
        agent: String,
        /// pending, granted, denied, expired or consumed.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one approval.
    Show { id: String },
    /// Grant a pending approval.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny a pending approval.
    Deny {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Print each state change until the approval is final.
    Watch { id: String },
}

fn approval_state_name(v: i32) -> String {
    pb::ApprovalState::try_from(v)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("APPROVAL_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| v.to_string())
}

fn show_approval(a: &pb::Approval) -> String {
    let decided = if a.decided_by.is_empty() {
        String::new()
    } else {
        format!(" by {} ({})", a.decided_by, a.decision_reason)
    };
    // Free text an agent or an approver chose: escaped field by field, so a tab or a
    // newline in a summary cannot shift or forge columns (`say!` escapes the rest).
    let esc = crate::domain::text::escape_text;
    format!(
        "{}\t{}{}\tagent {}\t{}\t{}\texpires {}",
        a.approval_id,
        approval_state_name(a.state),
        esc(&decided),
        a.agent_id,
        esc(&a.action_summary),
        esc(&a.reason),
        ts(&a.expires_at)
    )
}

pub async fn approvals(r: &Remote, cmd: ApprovalsCommand) -> anyhow::Result<()> {
    let c = connect(r).await?;
    match cmd {
        ApprovalsCommand::List { agent, state } => {
            let state = match state.as_deref() {
                None => pb::ApprovalState::Unspecified,
                Some("pending") => pb::ApprovalState::Pending,
                Some("granted") => pb::ApprovalState::Granted,
                Some("denied") => pb::ApprovalState::Denied,
                Some("expired") => pb::ApprovalState::Expired,
                Some("consumed") => pb::ApprovalState::Consumed,
                Some(other) => {
                    return Err(Exit(
                        2,
                        format!(
                            "--state {other:?}: use pending, granted, denied, expired or consumed"
                        ),
                    )
                    .into())
                }
            };
            let resp = c
                .list_approvals(pb::ListApprovalsRequest {
                    agent_id: agent,
                    state: state as i32,
                    page_size: 1000,
                    page_token: String::new(),
                })
                .await
                .map_err(fail)?;
            if resp.approvals.is_empty() {
                say!("no approvals");
            }
            for a in &resp.approvals {
                say!("{}", show_approval(a));
            }
        }
        ApprovalsCommand::Show { id } => {
            let a = c
                .get_approval(pb::GetApprovalRequest { approval_id: id })
                .await
                .map_err(fail)?;
            let a = a.approval.unwrap_or_default();
            say!("{}", show_approval(&a));
            say!("  action digest {}", a.action_digest);
            say!("  policy {}", a.policy_version);
            if !a.action_json.is_empty() {
                say!("  action {}", a.action_json);
            }
        }
        ApprovalsCommand::Approve { id, reason } => decide(&c, id, true, reason).await?,
        ApprovalsCommand::Deny { id, reason } => decide(&c, id, false, reason).await?,
        ApprovalsCommand::Watch { id } => {
            let mut stream = c
                .watch_approval(pb::WatchApprovalRequest { approval_id: id })
                .await
                .map_err(fail)?;
            while let Some(a) = stream.next().await {
                say!("{}", show_approval(&a.map_err(fail)?));
            }
        }
    }
    Ok(())
}

async fn decide(c: &Client, id: String, grant: bool, reason: String) -> anyhow::Result<()> {
    let resp = c
        .approve(pb::ApproveRequest {
            approval_id: id,
            grant,
            reason,
        })
        .await
        .map_err(fail)?;
    say!("{}", show_approval(&resp.approval.unwrap_or_default()));
    Ok(())
}

/// The tree of the server's entries 1..`to`, read through `ExportAudit`, keeping its
/// root at `target`; fails at the first entry out of place.
async fn rebuild_from_entries(
    c: &Client,
    to: u64,
    target: u64,
) -> anyhow::Result<crate::audit::integrity::Rebuild> {
    let mut rebuild = crate::audit::integrity::Rebuild::new(target);
    let failure = |msg: String| anyhow::Error::from(Exit(1, format!("FAIL: {msg}")));
    let mut lines = c
        .export_audit(pb::ExportAuditRequest {
            from_seq: 1,
            to_seq: to,
        })
        .await
        .map_err(fail)?;
    while let Some(line) = lines.next().await {
        let line = line.map_err(fail)?;
        let expected = rebuild.size() + 1;
        let canonical = line
            .strip_prefix("{\"entry\":")
            .and_then(|rest| rest.rsplit_once(",\"mac\":\""))
            .map(|(entry, _)| entry)
            .ok_or_else(|| failure(format!("seq {expected}: parse_error: not an export line")))?;
        let seq = serde_json::from_str::<serde_json::Value>(canonical)
            .ok()
            .and_then(|v| v["seq"].as_u64());
        if seq != Some(expected) {
            return Err(failure(format!(
                "seq {expected}: gap: expected entry {expected}, the log has {} there",
                seq.map_or("an unreadable entry".to_owned(), |s| format!("entry {s}"))
            )));
        }
        rebuild.push(crate::audit::merkle::leaf_hash(canonical.as_bytes()));
    }
    Ok(rebuild)
}

/// Proves from the entries themselves that the server's log extends `old`: every entry
/// up to the server's newest checkpoint `new` is read, its leaf hashed, and the rebuilt
/// tree must have `old`'s root at `old`'s size and `new`'s root at `new`'s size; the
/// server's consistency proof (from its stored nodes) must hold between the two. A log
/// cut back after `new` was stored, or rewritten under either checkpoint, fails here
/// even when the stored nodes still look whole.
async fn extends(
    c: &Client,
    old: &crate::audit::checkpoint::TreeHead,
    new: &crate::audit::checkpoint::TreeHead,
) -> anyhow::Result<()> {
    let failure = |msg: String| anyhow::Error::from(Exit(1, format!("FAIL: {msg}")));
    let rebuild = rebuild_from_entries(c, new.size.max(old.size), old.size).await?;
    let have = rebuild.size();
    for (what, head) in [("saved", old), ("server's newest", new)] {
        if have < head.size {
            return Err(failure(format!(
                "seq {}: truncated: the {what} checkpoint covers {} entries, the log holds {have}",
                have + 1,
                head.size
            )));
        }
    }
    if rebuild.root_at_target() != Some(old.root) {
        return Err(failure(format!(
            "seq {}: tree_mismatch: entries 1..{} do not rebuild the saved checkpoint's root (rewritten after it was saved)",
            old.size, old.size
        )));
    }
    if have != new.size || rebuild.root() != new.root {
        return Err(failure(format!(
            "seq {}: tree_mismatch: the log's {have} entries do not rebuild the root of the server's newest checkpoint (size {})",
            new.size, new.size
        )));
    }
    let proof = c
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            from_size: old.size,
            to_size: new.size,
        })
        .await
        .map_err(fail)?;
    crate::audit::receipt::verify_extension(old, new, &proof.hashes)
        .map_err(|e| failure(format!("seq {}: {e}", old.size)))
}

fn read_key(path: &std::path::Path) -> anyhow::Result<(String, Vec<ed25519_dalek::VerifyingKey>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    crate::audit::receipt::read_public_key(&text)
        .map_err(|e| Exit(2, format!("{}: {e}", path.display())).into())
}

/// Writes a report, receipt or checkpoint to `out` or stdout, made safe for a reader
/// either way (a Markdown viewer renders a bidi override as readily as a terminal).
fn write_out(out: Option<&PathBuf>, text: &str, shown: Shown) -> anyhow::Result<()> {
    let text = shown.render(text);
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            term::raw(&text);
            Ok(())
        }
    }
}
