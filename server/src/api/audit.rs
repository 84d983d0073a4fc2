//! `arbiter.v1.AuditService`.

use super::convert::{optional_id, timestamp, timestamp_ms};
use super::streams::{bound, Binding, BoxStream, Need};
use super::AUDITORS;
use crate::audit::canonical::export_line;
use crate::audit::merkle;
use crate::audit::SealedEntry;
use crate::auth::Access;
use crate::domain::{check_len, ParseError};
use crate::engine::Engine;
use crate::store::{AuditLog, AuditQuery};
use arbiter_proto::v1 as pb;
use futures::StreamExt;
use pb::audit_service_server::AuditService;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct AuditApi {
    pub engine: Arc<Engine>,
}

fn entry(e: SealedEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: e.seq,
        kind: e.kind,
        time: Some(timestamp(e.ts_ms)),
        agent_id: e.agent_id,
        session_id: e.session_id,
        outcome: e.outcome,
        key_id: e.key_id,
        canonical: e.canonical,
        mac: e.mac,
    }
}

fn query(f: Option<pb::AuditFilter>) -> Result<AuditQuery, ParseError> {
    let f = f.unwrap_or_default();
    if f.kinds.len() > 16 {
        return Err(ParseError::new(
            "filter.kinds",
            format!("must have at most 16 entries, got {}", f.kinds.len()),
        ));
    }
    for (i, k) in f.kinds.iter().enumerate() {
        check_len(&format!("filter.kinds[{i}]"), k, 1, 64)?;
    }
    check_len("filter.outcome", &f.outcome, 0, 32)?;
    Ok(AuditQuery {
        agent_id: optional_id("filter.agent_id", &f.agent_id)?,
        session_id: optional_id("filter.session_id", &f.session_id)?,
        kinds: f.kinds,
        outcome: (!f.outcome.is_empty()).then_some(f.outcome),
        since_ms: f
            .since
            .as_ref()
            .map(|t| timestamp_ms("filter.since", t))
            .transpose()?,
        until_ms: f
            .until
            .as_ref()
            .map(|t| timestamp_ms("filter.until", t))
            .transpose()?,
        newest_first: false,
    })
}

fn page_size(v: i32) -> Result<u32, ParseError> {
    match v {
        0 => Ok(100),
        1..=1000 => Ok(v as u32),
        _ => Err(ParseError::new(
            "page_size",
            format!("must be 0–1000, got {v}"),
        )),
    }
}

fn fault(f: crate::audit::verify::Fault) -> pb::AuditFault {
    use crate::audit::verify::Fault::*;
    match f {
        Gap => pb::AuditFault::Gap,
        MacMismatch => pb::AuditFault::MacMismatch,
        SeqMismatch => pb::AuditFault::SeqMismatch,
        NotCanonical => pb::AuditFault::NotCanonical,
        UnknownKey | RevokedKey => pb::AuditFault::UnknownKey,
        ColumnMismatch => pb::AuditFault::ColumnMismatch,
        Truncated => pb::AuditFault::Truncated,
        TreeMismatch => pb::AuditFault::TreeMismatch,
    }
}

impl AuditApi {
    /// 0 means the latest checkpoint's size; larger than the stored tree is refused.
    async fn tree_size(&self, requested: u64) -> Result<u64, Status> {
        let latest = self
            .engine
            .audit_log()
            .checkpoint(None)
            .await?
            .map_or(0, |c| c.size);
        match requested {
            0 if latest == 0 => Err(Status::not_found("the log is empty: no checkpoint yet")),
            0 => Ok(latest),
            n if n > latest => Err(ParseError::new(
                "tree_size",
                format!("must be at most {latest} (the latest checkpoint)"),
            )
            .into()),
            n => Ok(n),
        }
    }
}

/// A receipt for one entry: its canonical bytes and MAC, an inclusion proof and the
/// latest signed checkpoint (which covers it: every batch is checkpointed on commit).
pub(super) async fn receipt(engine: &Engine, seq: u64) -> Result<pb::Receipt, Status> {
    let log = engine.audit_log();
    let entry = log
        .entry(seq)
        .await?
        .ok_or_else(|| Status::internal("the decision's audit entry is missing"))?;
    let cp = log
        .checkpoint(None)
        .await?
        .filter(|c| c.size >= seq)
        .ok_or_else(|| Status::internal("no checkpoint covers the decision yet"))?;
    let hashes = proof_nodes(&log, |node| merkle::inclusion_proof(seq - 1, cp.size, node)).await?;
    Ok(pb::Receipt {
        entry: entry.canonical,
        mac: entry.mac,
        inclusion_proof: hashes.iter().map(hex::encode).collect(),
        checkpoint: cp.note,
    })
}

/// A receipt as the file `arbiter audit receipt` writes (for the console's download).
pub(crate) async fn receipt_file(
    engine: &Engine,
    seq: u64,
) -> Result<crate::audit::receipt::ReceiptFile, String> {
    if seq == 0 {
        return Err("seq must be at least 1".into());
    }
    let r = receipt(engine, seq)
        .await
        .map_err(|s| s.message().to_owned())?;
    Ok(crate::audit::receipt::ReceiptFile {
        entry: r.entry,
        mac: r.mac,
        inclusion_proof: r.inclusion_proof,
        checkpoint: r.checkpoint,
    })
}

/// Runs a proof function twice: once to learn which stored nodes it reads, then with
/// those nodes fetched from the store. The nodes a proof needs depend only on the sizes.
async fn proof_nodes(
    log: &AuditLog,
    proof: impl Fn(&mut dyn FnMut(u32, u64) -> Option<merkle::Hash>) -> Option<Vec<merkle::Hash>>,
) -> Result<Vec<merkle::Hash>, Status> {
    let mut wanted = Vec::new();
    proof(&mut |level, index| {
        wanted.push((level, index));
        Some([0u8; 32])
    });
    let found = log.nodes(&wanted).await?;
    proof(&mut |level, index| found.get(&(level, index)).copied())
        .ok_or_else(|| Status::data_loss("a Merkle node is missing; run `arbiter audit verify`"))
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn query_audit(
        &self,
        req: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        super::authorize(&self.engine, &req, "QueryAudit", Access::Roles(AUDITORS)).await?;
        let r = req.into_inner();
        let q = query(r.filter)?;
        let limit = page_size(r.page_size)?;
        let after = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse::<u64>().map_err(|_| {
                ParseError::new("page_token", "is not a token returned by QueryAudit")
            })?
        };
        let entries = self.engine.audit_log().query(&q, after, limit).await?;
        let next = if entries.len() == limit as usize {
            entries
                .last()
                .map(|e| e.seq.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::QueryAuditResponse {
            entries: entries.into_iter().map(entry).collect(),
            next_page_token: next,
        }))
    }

    type TailAuditStream = BoxStream<pb::TailAuditResponse>;

    async fn tail_audit(
        &self,
        req: Request<pb::TailAuditRequest>,
    ) -> Result<Response<Self::TailAuditStream>, Status> {
        let who =
            super::authorize(&self.engine, &req, "TailAudit", Access::Roles(AUDITORS)).await?;
        let r = req.into_inner();
        let q = query(r.filter)?;
        let after = (r.from_seq != 0).then(|| r.from_seq - 1);
        let entries = self.engine.follow_log(q, after).await?;
        let tail = ReceiverStream::new(entries).map(|e| match e {
            Ok(e) => Ok(pb::TailAuditResponse {
                entry: Some(entry(e)),
            }),
            Err(e) => Err(Status::from(e)),
        });
        let binding = Binding::new(&self.engine, &who, "TailAudit", Need::Roles(AUDITORS));
        Ok(Response::new(bound(binding, tail)))
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        super::authorize(&self.engine, &req, "VerifyAudit", Access::Roles(AUDITORS)).await?;
        let r = req.into_inner();
        if r.to_seq != 0 && r.to_seq < r.from_seq {
            return Err(ParseError::new("to_seq", "must be 0 or at least from_seq").into());
        }
        let rep = self.engine.verify_audit(r.from_seq, r.to_seq).await?;
        let (first_bad_seq, f, message) = match &rep.failure {
            None => (
                0,
                pb::AuditFault::Unspecified,
                format!("{} entries verified", rep.checked),
            ),
            Some(f) => (
                f.seq,
                fault(f.fault),
                format!("{}: {}", f.fault.name(), f.message),
            ),
        };
        Ok(Response::new(pb::VerifyAuditResponse {
            ok: rep.failure.is_none(),
            checked: rep.checked,
            first_bad_seq,
            fault: f as i32,
            message,
            head_seq: rep.head_seq,
            head_mac: rep.head_mac,
            checkpoint_size: rep.checkpoint_size,
        }))
    }

    type ExportAuditStream = BoxStream<pb::ExportAuditResponse>;

    async fn export_audit(
        &self,
        req: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        let who =
            super::authorize(&self.engine, &req, "ExportAudit", Access::Roles(AUDITORS)).await?;
        let binding = Binding::new(&self.engine, &who, "ExportAudit", Need::Roles(AUDITORS));
        let r = req.into_inner();
        let log = self.engine.audit_log();
        let to = if r.to_seq == 0 {
            u64::MAX >> 1
        } else {
            r.to_seq
        };
        let mut next = r.from_seq.max(1);
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while next <= to {
                match log.range(next, to, 1000).await {
                    Ok(page) if page.is_empty() => return,
                    Ok(page) => {
                        next = page.last().map_or(to, |e| e.seq) + 1;
                        let lines = page.iter().map(export_line).collect();
                        if tx
                            .send(Ok(pb::ExportAuditResponse { lines }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(bound(binding, ReceiverStream::new(rx))))
    }

    async fn get_checkpoint(
        &self,
        r: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        super::authorize(&self.engine, &r, "GetCheckpoint", Access::Roles(AUDITORS)).await?;
        let c = self
            .engine
            .audit_log()
            .checkpoint(None)
            .await?
            .ok_or_else(|| Status::not_found("the log is empty: no checkpoint yet"))?;
        Ok(Response::new(pb::GetCheckpointResponse {
            checkpoint: c.note,
            tree_size: c.size,
            root_hash: c.root_hex,
        }))
    }

    async fn get_inclusion_proof(
        &self,
        r: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        super::authorize(
            &self.engine,
            &r,
            "GetInclusionProof",
            Access::Roles(AUDITORS),
        )
        .await?;
        let r = r.into_inner();
        let size = self.tree_size(r.tree_size).await?;
        if r.seq == 0 || r.seq > size {
            return Err(ParseError::new(
                "seq",
                format!("must be 1–{size} (the tree size), got {}", r.seq),
            )
            .into());
        }
        let log = self.engine.audit_log();
        let hashes =
            proof_nodes(&log, |node| merkle::inclusion_proof(r.seq - 1, size, node)).await?;
        Ok(Response::new(pb::GetInclusionProofResponse {
            leaf_index: r.seq - 1,
            tree_size: size,
            hashes: hashes.iter().map(hex::encode).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        r: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        super::authorize(
            &self.engine,
            &r,
            "GetConsistencyProof",
            Access::Roles(AUDITORS),
        )
        .await?;
        let r = r.into_inner();
        let to = self.tree_size(r.to_size).await?;
        if r.from_size == 0 || r.from_size > to {
            return Err(ParseError::new(
                "from_size",
                format!("must be 1–{to}, got {}", r.from_size),
            )
            .into());
        }
        let log = self.engine.audit_log();
        let hashes = proof_nodes(&log, |node| {
            merkle::consistency_proof(r.from_size, to, node)
        })
        .await?;
        Ok(Response::new(pb::GetConsistencyProofResponse {
            from_size: r.from_size,
            to_size: to,
            hashes: hashes.iter().map(hex::encode).collect(),
        }))
    }
}
