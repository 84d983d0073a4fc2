//! `arbiter.v1.ControlService`: human approvals and halts (the kill switch).

use super::convert::timestamp;
use super::streams::{bound, Binding, Need};
use super::{ANYONE, OPERATORS, READERS};
use crate::auth::Access;
use crate::auth::Refusal;
use crate::domain::{check_len, Id, ParseError};
use crate::state::{Approval, ApprovalState, Halt, HaltMode, HaltTarget};
use arbiter_proto::v1 as pb;
use pb::control_service_server::ControlService;
use tonic::{Request, Response, Status};

pub struct ControlApi {
    pub engine: std::sync::Arc<crate::engine::Engine>,
}

type WatchStream = super::streams::BoxStream<pb::WatchApprovalResponse>;

impl ControlApi {
    /// The approval, if the caller may see it: readers see all, an agent principal its own.
    async fn visible(
        &self,
        who: &crate::domain::Principal,
        id: &str,
        rpc: &'static str,
    ) -> Result<Approval, Status> {
        check_len("approval_id", id, 1, 64)?;
        let found = self.engine.approval(id);
        let reader = READERS.iter().any(|role| who.has(*role));
        match found {
            Some(a) if reader || who.acts_for(&a.agent_id) => return Ok(a),
            None if reader => {
                return Err(Status::not_found(super::status::bounded(format!(
                    "approval {id} does not exist"
                ))))
            }
            _ => {}
        }
        // An agent key learns nothing about approvals that are not its own, not even
        // whether the id exists.
        let reason = format!(
            "{rpc}: approval {id} is not one of {}'s agents' approvals",
            who.name
        );
        self.engine
            .record_refusal(Refusal {
                principal: who.name.clone(),
                rpc,
                reason: reason.clone(),
            })
            .await;
        Err(Status::permission_denied(reason))
    }
}

#[tonic::async_trait]
impl ControlService for ControlApi {
    async fn approve(
        &self,
        r: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        let who = super::authorize(&self.engine, &r, "Approve", Access::Roles(OPERATORS)).await?;
        let r = r.into_inner();
        check_len("approval_id", &r.approval_id, 1, 64)?;
        check_len("reason", &r.reason, 0, 1024)?;
        let a = self
            .engine
            .approve(&who, &r.approval_id, r.grant, r.reason)
            .await?;
        Ok(Response::new(pb::ApproveResponse {
            approval: Some(approval_pb(a)),
        }))
    }

    async fn get_approval(
        &self,
        r: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::GetApprovalResponse>, Status> {
        let who = super::authorize(&self.engine, &r, "GetApproval", Access::Roles(ANYONE)).await?;
        let a = self
            .visible(&who, &r.get_ref().approval_id, "GetApproval")
            .await?;
        Ok(Response::new(pb::GetApprovalResponse {
            approval: Some(approval_pb(a)),
        }))
    }

    async fn list_approvals(
        &self,
        r: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        let who =
            super::authorize(&self.engine, &r, "ListApprovals", Access::Roles(ANYONE)).await?;
        let r = r.into_inner();
        let agent = super::convert::optional_id("agent_id", &r.agent_id)?;
        // An agent principal lists only its own agents' approvals.
        if !READERS.iter().any(|role| who.has(*role))
            && !agent.as_deref().is_some_and(|a| who.acts_for(a))
        {
            let reason =
                "ListApprovals for an agent principal must name one of its own agents in agent_id"
                    .to_owned();
            self.engine
                .record_refusal(Refusal {
                    principal: who.name.clone(),
                    rpc: "ListApprovals",
                    reason: reason.clone(),
                })
                .await;
            return Err(Status::permission_denied(reason));
        }
        let state = match pb::ApprovalState::try_from(r.state) {
            Ok(pb::ApprovalState::Unspecified) => None,
            Ok(pb::ApprovalState::Pending) => Some(ApprovalState::Pending),
            Ok(pb::ApprovalState::Granted) => Some(ApprovalState::Granted),
            Ok(pb::ApprovalState::Denied) => Some(ApprovalState::Denied),
            Ok(pb::ApprovalState::Expired) => Some(ApprovalState::Expired),
            Ok(pb::ApprovalState::Consumed) => Some(ApprovalState::Consumed),
            Err(_) => {
                return Err(ParseError::new(
                    "state",
                    format!("unknown ApprovalState value {}", r.state),
                )
                .into())
            }
        };
        let size = match r.page_size {
            0 => 100,
            1..=1000 => r.page_size as usize,
            n => {
                return Err(ParseError::new("page_size", format!("must be 0–1000, got {n}")).into())
            }
        };
        let skip = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse::<usize>().map_err(|_| {
                ParseError::new("page_token", "is not a token returned by ListApprovals")
            })?
        };
        let all = self.engine.approvals(agent.as_deref(), state);
        let next = if all.len() > skip + size {
            (skip + size).to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListApprovalsResponse {
            approvals: all
                .into_iter()
                .skip(skip)
                .take(size)
                .map(approval_pb)
                .collect(),
            next_page_token: next,
        }))
    }

    type WatchApprovalStream = WatchStream;

    async fn watch_approval(
        &self,
        r: Request<pb::WatchApprovalRequest>,
    ) -> Result<Response<Self::WatchApprovalStream>, Status> {
        let who =
            super::authorize(&self.engine, &r, "WatchApproval", Access::Roles(ANYONE)).await?;
        // Subscribe before reading the current state so no change falls in between.
        let mut changes = self.engine.approval_changes();
        let current = self
            .visible(&who, &r.get_ref().approval_id, "WatchApproval")
            .await?;
        let id = current.id.clone();
        // Readers watch any approval, an agent principal only its own agents' ones.
        let need = Need::ActForOr(current.agent_id.clone(), READERS);
        let binding = Binding::new(&self.engine, &who, "WatchApproval", need);
        let engine = self.engine.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut last = current.state;
            if tx
                .send(Ok(pb::WatchApprovalResponse {
                    approval: Some(approval_pb(current)),
                }))
                .await
                .is_err()
                || last.is_final()
            {
                return;
            }
            loop {
                if tx.is_closed() {
                    // The stream ended (its caller lost it, or hung up).
                    return;
                }
                // Expiry is time-driven: re-check once a second as well as on every change.
                let next =
                    tokio::time::timeout(std::time::Duration::from_secs(1), changes.recv()).await;
                let changed = match next {
                    Ok(Ok(a)) if a.id == id => true,
                    Ok(Ok(_)) => false,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) | Err(_) => true,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                };
                if !changed {
                    continue;
                }
                let Some(now) = engine.approval(&id) else {
                    return;
                };
                if now.state != last {
                    last = now.state;
                    if tx
                        .send(Ok(pb::WatchApprovalResponse {
                            approval: Some(approval_pb(now)),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if last.is_final() {
                    return;
                }
            }
        });
        Ok(Response::new(bound(
            binding,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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
            Ok(pb::HaltMode::Disengaged) => {
                super::refuse_self_governance(&self.engine, &who, target.agent(), "Halt").await?;
                self.engine.resume(&who, target, reason).await?
            }
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
        super::refuse_self_governance(&self.engine, &who, target.agent(), "Resume").await?;
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

pub(super) fn halt_pb(h: Halt) -> pb::Halt {
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

fn approval_pb(a: Approval) -> pb::Approval {
    pb::Approval {
        approval_id: a.id,
        agent_id: a.agent_id,
        session_id: a.session_id,
        action_digest: a.action_digest,
        policy_version: a.policy_version,
        state: match a.state {
            ApprovalState::Pending => pb::ApprovalState::Pending,
            ApprovalState::Granted => pb::ApprovalState::Granted,
            ApprovalState::Denied => pb::ApprovalState::Denied,
            ApprovalState::Expired => pb::ApprovalState::Expired,
            ApprovalState::Consumed => pb::ApprovalState::Consumed,
        } as i32,
        reason: a.reason,
        action_summary: a.action_summary,
        requested_at: Some(timestamp(a.requested_ms)),
        expires_at: Some(timestamp(a.expires_ms)),
        decided_by: a.decided_by,
        decision_reason: a.decision_reason,
        decided_at: a.decided_ms.map(timestamp),
        action_json: a.action_json,
    }
}
