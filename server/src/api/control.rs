//! `arbiter.v1.ControlService`: halts (the kill switch) and approvals. Approvals are
//! part of the contract but not implemented yet; they answer UNIMPLEMENTED.

use super::convert::timestamp;
use super::status::not_yet;
use super::{OPERATORS, READERS};
use crate::auth::Access;
use crate::domain::{check_len, Id, ParseError};
use crate::state::{Halt, HaltMode, HaltTarget};
use arbiter_proto::v1 as pb;
use pb::control_service_server::ControlService;
use tonic::{Request, Response, Status};

pub struct ControlApi {
    pub engine: std::sync::Arc<crate::engine::Engine>,
}

type WatchStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::WatchApprovalResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl ControlService for ControlApi {
    async fn approve(
        &self,
        r: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        super::authorize(&self.engine, &r, "Approve", Access::Roles(OPERATORS)).await?;
        Err(not_yet("Approve"))
    }
    async fn get_approval(
        &self,
        r: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::GetApprovalResponse>, Status> {
        super::authorize(&self.engine, &r, "GetApproval", Access::Roles(READERS)).await?;
        Err(not_yet("GetApproval"))
    }
    async fn list_approvals(
        &self,
        r: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        super::authorize(&self.engine, &r, "ListApprovals", Access::Roles(READERS)).await?;
        Err(not_yet("ListApprovals"))
    }
    type WatchApprovalStream = WatchStream;
    async fn watch_approval(
        &self,
        r: Request<pb::WatchApprovalRequest>,
    ) -> Result<Response<Self::WatchApprovalStream>, Status> {
        super::authorize(&self.engine, &r, "WatchApproval", Access::Roles(READERS)).await?;
        Err(not_yet("WatchApproval"))
    }
    async fn halt(
        &self,
        r: Request<pb::HaltRequest>,
    ) -> Result<Response<pb::HaltResponse>, Status> {
        let who = super::authorize(&self.engine, &r, "Halt", Access::Roles(OPERATORS)).await?;
        let r = r.into_inner();
        let target = target(r.target)?;
        let reason = reason(r.reason)?;
        let halt = match pb::HaltMode::try_from(r.mode) {
            Ok(pb::HaltMode::HaltNoncritical) => {
                self.engine
                    .halt(&who, target, HaltMode::HaltNoncritical, reason)
                    .await?
            }
            Ok(pb::HaltMode::HaltAll) => {
                self.engine
                    .halt(&who, target, HaltMode::HaltAll, reason)
                    .await?
            }
            Ok(pb::HaltMode::Emergency) => {
                self.engine
                    .halt(&who, target, HaltMode::Emergency, reason)
                    .await?
            }
            Ok(pb::HaltMode::Disengaged) => self.engine.resume(&who, target, reason).await?,
            _ => {
                return Err(ParseError::new(
                    "mode",
                    format!(
                        "must be HALT_NONCRITICAL, HALT_ALL, EMERGENCY or DISENGAGED, got {}",
                        r.mode
                    ),
                )
                .into())
            }
        };
        Ok(Response::new(pb::HaltResponse {
            halt: Some(halt_pb(halt)),
        }))
    }

    async fn resume(
        &self,
        r: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let who = super::authorize(&self.engine, &r, "Resume", Access::Roles(OPERATORS)).await?;
        let r = r.into_inner();
        let target = target(r.target)?;
        let reason = reason(r.reason)?;
        let halt = self.engine.resume(&who, target, reason).await?;
        Ok(Response::new(pb::ResumeResponse {
            halt: Some(halt_pb(halt)),
        }))
    }

    async fn list_halts(
        &self,
        r: Request<pb::ListHaltsRequest>,
    ) -> Result<Response<pb::ListHaltsResponse>, Status> {
        super::authorize(&self.engine, &r, "ListHalts", Access::Roles(READERS)).await?;
        Ok(Response::new(pb::ListHaltsResponse {
            halts: self.engine.halts().into_iter().map(halt_pb).collect(),
        }))
    }
}

fn target(t: Option<pb::HaltTarget>) -> Result<HaltTarget, ParseError> {
    let t = t.ok_or_else(|| ParseError::new("target", "is required"))?;
    match pb::HaltScope::try_from(t.scope) {
        Ok(pb::HaltScope::Global) => {
            if !t.agent_id.is_empty() || !t.session_id.is_empty() {
                return Err(ParseError::new(
                    "target.agent_id",
                    "must be empty for a GLOBAL halt",
                ));
            }
            Ok(HaltTarget::Global)
        }
        Ok(pb::HaltScope::Agent) => {
            if !t.session_id.is_empty() {
                return Err(ParseError::new(
                    "target.session_id",
                    "must be empty for an AGENT halt (use SESSION)",
                ));
            }
            Ok(HaltTarget::Agent(
                Id::parse("target.agent_id", &t.agent_id)?.to_string(),
            ))
        }
        Ok(pb::HaltScope::Session) => Ok(HaltTarget::Session(
            Id::parse("target.agent_id", &t.agent_id)?.to_string(),
            Id::parse("target.session_id", &t.session_id)?.to_string(),
        )),
        _ => Err(ParseError::new(
            "target.scope",
            format!("must be GLOBAL, AGENT or SESSION, got {}", t.scope),
        )),
    }
}

fn reason(r: String) -> Result<String, ParseError> {
    check_len("reason", &r, 1, 1024)?;
    Ok(r)
}

fn halt_pb(h: Halt) -> pb::Halt {
    let (scope, agent_id, session_id) = match h.target {
        HaltTarget::Global => (pb::HaltScope::Global, String::new(), String::new()),
        HaltTarget::Agent(a) => (pb::HaltScope::Agent, a, String::new()),
        HaltTarget::Session(a, s) => (pb::HaltScope::Session, a, s),
    };
    pb::Halt {
        target: Some(pb::HaltTarget {
            scope: scope as i32,
            agent_id,
            session_id,
        }),
        mode: match h.mode {
            HaltMode::HaltNoncritical => pb::HaltMode::HaltNoncritical,
            HaltMode::HaltAll => pb::HaltMode::HaltAll,
            HaltMode::Emergency => pb::HaltMode::Emergency,
        } as i32,
        reason: h.reason,
        engaged_by: h.engaged_by,
        engaged_at: Some(timestamp(h.engaged_ms)),
    }
}
