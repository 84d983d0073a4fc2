//! `arbiter.v1.AdminService`.

use super::convert::{optional_id, plain_text, timestamp, timestamp_ms, trust_level, trust_to_pb};
use super::{ADMINS, OPERATORS, READERS};
use crate::auth::Access;
use crate::domain::{check_len, Id, ParseError, Role};
use crate::engine::Engine;
use crate::state::{ConsentGrant, TrustAssignment};
use arbiter_proto::v1 as pb;
use pb::admin_service_server::AdminService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminApi {
    pub engine: Arc<Engine>,
}

fn assignment(a: TrustAssignment) -> pb::TrustAssignment {
    pb::TrustAssignment {
        agent_id: a.agent_id,
        scope: a.scope,
        level: trust_to_pb(a.level) as i32,
        assigned_by: a.assigned_by,
        assigned_at: Some(timestamp(a.assigned_ms)),
    }
}

fn grant(g: ConsentGrant) -> pb::ConsentGrant {
    pb::ConsentGrant {
        agent_id: g.agent_id,
        data_type: g.data_type,
        purpose: g.purpose.unwrap_or_default(),
        granted_by: g.granted_by,
        granted_at: Some(timestamp(g.granted_ms)),
        expires_at: g.expires_ms.map(timestamp),
    }
}

fn amount(unit: &str, cap: u64, spent: u64, reserved: u64) -> pb::BudgetAmount {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::BudgetAmount {
        unit: unit.into(),
        cap: clamp(cap),
        spent: clamp(spent),
        reserved: clamp(reserved),
        remaining: clamp(cap.saturating_sub(spent).saturating_sub(reserved)),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn set_trust(
        &self,
        req: Request<pb::SetTrustRequest>,
    ) -> Result<Response<pb::SetTrustResponse>, Status> {
        let who =
            super::authorize(&self.engine, &req, "SetTrust", Access::Roles(OPERATORS)).await?;
        let r = req.into_inner();
        let agent = Id::parse("agent_id", &r.agent_id)?;
        super::refuse_self_governance(&self.engine, &who, Some(agent.as_str()), "SetTrust").await?;
        let level = trust_level("level", r.level)?
            .ok_or_else(|| ParseError::new("level", "is required"))?;
        let scope = plain_text("scope", r.scope, 256)?.unwrap_or_default();
        let reason = plain_text("reason", r.reason, 1024)?.unwrap_or_default();
        let (a, seq) = self
            .engine
            .set_trust(&who, agent, level, scope, reason)
            .await?;
        Ok(Response::new(pb::SetTrustResponse {
            assignment: Some(assignment(a)),
            audit_seq: seq,
        }))
    }

    async fn get_trust(
        &self,
        req: Request<pb::GetTrustRequest>,
    ) -> Result<Response<pb::GetTrustResponse>, Status> {
        super::authorize(&self.engine, &req, "GetTrust", Access::Roles(READERS)).await?;
        let r = req.into_inner();
        let agent = Id::parse("agent_id", &r.agent_id)?;
        check_len("scope", &r.scope, 0, 256)?;
        let eff = self.engine.get_trust(&agent, &r.scope);
        Ok(Response::new(pb::GetTrustResponse {
            effective_level: trust_to_pb(eff.level) as i32,
            assignment: eff.assignment.map(assignment),
            source: eff.source.into(),
        }))
    }

    async fn list_trust(
        &self,
        req: Request<pb::ListTrustRequest>,
    ) -> Result<Response<pb::ListTrustResponse>, Status> {
        super::authorize(&self.engine, &req, "ListTrust", Access::Roles(READERS)).await?;
        let agent = optional_id("agent_id", &req.get_ref().agent_id)?;
        Ok(Response::new(pb::ListTrustResponse {
            assignments: self
                .engine
                .list_trust(agent.as_deref())
                .into_iter()
                .map(assignment)
                .collect(),
        }))
    }

    async fn grant_consent(
        &self,
        req: Request<pb::GrantConsentRequest>,
    ) -> Result<Response<pb::GrantConsentResponse>, Status> {
        let who =
            super::authorize(&self.engine, &req, "GrantConsent", Access::Roles(OPERATORS)).await?;
        let r = req.into_inner();
        let agent = Id::parse("agent_id", &r.agent_id)?;
        super::refuse_self_governance(&self.engine, &who, Some(agent.as_str()), "GrantConsent")
            .await?;
        check_len("data_type", &r.data_type, 1, 128)?;
        let purpose = plain_text("purpose", r.purpose, 128)?;
        let expires = r
            .expires_at
            .as_ref()
            .map(|t| timestamp_ms("expires_at", t))
            .transpose()?;
        let (g, seq) = self
            .engine
            .grant_consent(&who, agent, r.data_type, purpose, expires)
            .await?;
        Ok(Response::new(pb::GrantConsentResponse {
            grant: Some(grant(g)),
            audit_seq: seq,
        }))
    }

    async fn revoke_consent(
        &self,
        req: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<pb::RevokeConsentResponse>, Status> {
        let who = super::authorize(
            &self.engine,
            &req,
            "RevokeConsent",
            Access::Roles(OPERATORS),
        )
        .await?;
        let r = req.into_inner();
        let agent = Id::parse("agent_id", &r.agent_id)?;
        super::refuse_self_governance(&self.engine, &who, Some(agent.as_str()), "RevokeConsent")
            .await?;
        check_len("data_type", &r.data_type, 1, 128)?;
        let purpose = plain_text("purpose", r.purpose, 128)?;
        let seq = self
            .engine
            .revoke_consent(&who, agent, r.data_type, purpose)
            .await?;
        Ok(Response::new(pb::RevokeConsentResponse { audit_seq: seq }))
    }

    async fn list_consents(
        &self,
        req: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        super::authorize(&self.engine, &req, "ListConsents", Access::Roles(READERS)).await?;
        let agent = optional_id("agent_id", &req.get_ref().agent_id)?;
        Ok(Response::new(pb::ListConsentsResponse {
            grants: self
                .engine
                .list_consents(agent.as_deref())
                .into_iter()
                .map(grant)
                .collect(),
        }))
    }

    async fn get_budgets(
        &self,
        req: Request<pb::GetBudgetsRequest>,
    ) -> Result<Response<pb::GetBudgetsResponse>, Status> {
        super::authorize(&self.engine, &req, "GetBudgets", Access::Roles(READERS)).await?;
        let r = req.into_inner();
        let agent = optional_id("agent_id", &r.agent_id)?;
        let session = optional_id("session_id", &r.session_id)?;
        let budgets = self
            .engine
            .budgets(agent.as_deref(), session.as_deref())
            .into_iter()
            .map(|b| {
                let amounts = b
                    .capped_units()
                    .into_iter()
                    .map(|u| amount(u.unit, u.cap, u.spent, u.reserved))
                    .collect();
                pb::BudgetSnapshot {
                    name: b.name,
                    scope: b.scope.name().into(),
                    scope_key: b.scope_key,
                    period: b.period.into(),
                    window_start: b.window_end_ms.map(|_| timestamp(b.window_start_ms)),
                    window_end: b.window_end_ms.map(timestamp),
                    amounts,
                }
            })
            .collect();
        Ok(Response::new(pb::GetBudgetsResponse { budgets }))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        super::authorize(&self.engine, &req, "ListAgents", Access::Roles(READERS)).await?;
        let agents = self
            .engine
            .agents()
            .into_iter()
            .map(|(id, info, level)| (self.engine.presence(&id), id, info, level))
            .map(|(presence, id, info, level)| pb::Agent {
                halted: self.engine.is_halted(&id),
                agent_id: id,
                trust_level: trust_to_pb(level) as i32,
                first_seen: Some(timestamp(info.first_seen_ms)),
                last_seen: Some(timestamp(info.last_seen_ms)),
                presence: match presence.0 {
                    None => pb::PresenceStatus::Unspecified,
                    Some(crate::state::PresenceStatus::Live) => pb::PresenceStatus::Live,
                    Some(crate::state::PresenceStatus::Idle) => pb::PresenceStatus::Idle,
                    Some(crate::state::PresenceStatus::Unresponsive) => {
                        pb::PresenceStatus::Unresponsive
                    }
                } as i32,
                operator: presence.1.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        super::authorize(&self.engine, &req, "GetPolicy", Access::Roles(READERS)).await?;
        let info = self.engine.policy_info().await?;
        let load = |row: &crate::store::PolicyLoadRow| pb::PolicyLoad {
            version: row.version.clone(),
            source: row.source.clone(),
            loaded_at: Some(timestamp(row.loaded_ms)),
            accepted: row.accepted,
            error: row.error.clone(),
        };
        let current = info
            .history
            .iter()
            .find(|r| r.accepted && r.version == info.current.version)
            .map(load)
            .unwrap_or_else(|| pb::PolicyLoad {
                version: info.current.version.clone(),
                source: info.current.source.clone(),
                loaded_at: None,
                accepted: true,
                error: String::new(),
            });
        Ok(Response::new(pb::GetPolicyResponse {
            current: Some(current),
            history: info.history.iter().map(load).collect(),
            agent_rules: info.current.agents.len() as i32,
            budgets: info.current.budgets.len() as i32,
        }))
    }

    async fn create_principal(
        &self,
        r: Request<pb::CreatePrincipalRequest>,
    ) -> Result<Response<pb::CreatePrincipalResponse>, Status> {
        let who =
            super::authorize(&self.engine, &r, "CreatePrincipal", Access::Roles(ADMINS)).await?;
        let r = r.into_inner();
        let name = Id::parse("name", &r.name)?.to_string();
        if r.roles.is_empty() || r.roles.len() > 4 {
            return Err(ParseError::new(
                "roles",
                format!("must have 1–4 entries, got {}", r.roles.len()),
            )
            .into());
        }
        let mut roles = Vec::new();
        for (i, v) in r.roles.iter().enumerate() {
            let role = match pb::Role::try_from(*v) {
                Ok(pb::Role::Agent) => Role::Agent,
                Ok(pb::Role::Operator) => Role::Operator,
                Ok(pb::Role::Admin) => Role::Admin,
                Ok(pb::Role::Auditor) => Role::Auditor,
                _ => {
                    return Err(ParseError::new(
                        format!("roles[{i}]"),
                        format!("unknown Role value {v}"),
                    )
                    .into())
                }
            };
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if r.agents.len() > 64 {
            return Err(ParseError::new(
                "agents",
                format!("must have at most 64 entries, got {}", r.agents.len()),
            )
            .into());
        }
        for (i, a) in r.agents.iter().enumerate() {
            check_len(&format!("agents[{i}]"), a, 1, 128)?;
        }
        if roles.contains(&Role::Agent) && r.agents.is_empty() {
            return Err(ParseError::new(
                "agents",
                "an agent principal must be bound to at least one agent id or glob",
            )
            .into());
        }
        let tls_identity = match r.tls_identity.as_str() {
            "" => None,
            text => Some(
                text.parse::<crate::domain::TlsIdentity>()
                    .map_err(|e| ParseError::new("tls_identity", e))?,
            ),
        };
        let (row, key, _seq) = self
            .engine
            .create_principal(&who, name, roles, r.agents, tls_identity)
            .await?;
        Ok(Response::new(pb::CreatePrincipalResponse {
            principal: Some(principal(row)),
            api_key: key,
        }))
    }

    async fn list_principals(
        &self,
        r: Request<pb::ListPrincipalsRequest>,
    ) -> Result<Response<pb::ListPrincipalsResponse>, Status> {
        super::authorize(&self.engine, &r, "ListPrincipals", Access::Roles(ADMINS)).await?;
        let principals = self
            .engine
            .list_principals()
            .await?
            .into_iter()
            .map(principal)
            .collect();
        Ok(Response::new(pb::ListPrincipalsResponse { principals }))
    }

    async fn revoke_principal(
        &self,
        r: Request<pb::RevokePrincipalRequest>,
    ) -> Result<Response<pb::RevokePrincipalResponse>, Status> {
        let who =
            super::authorize(&self.engine, &r, "RevokePrincipal", Access::Roles(ADMINS)).await?;
        let name = Id::parse("name", &r.get_ref().name)?.to_string();
        let (row, _seq) = self.engine.revoke_principal(&who, &name).await?;
        Ok(Response::new(pb::RevokePrincipalResponse {
            principal: Some(principal(row)),
        }))
    }

    async fn list_tool_pins(
        &self,
        req: Request<pb::ListToolPinsRequest>,
    ) -> Result<Response<pb::ListToolPinsResponse>, Status> {
        super::tool_pins::list(&self.engine, req).await
    }

    async fn approve_tool_pin(
        &self,
        req: Request<pb::ApproveToolPinRequest>,
    ) -> Result<Response<pb::ApproveToolPinResponse>, Status> {
        let (pin, seq) = super::tool_pins::decide(
            &self.engine,
            req,
            "ApproveToolPin",
            crate::engine::PinDecision::Approve,
            |r| (r.server, r.tool, r.digest, r.reason),
        )
        .await?;
        Ok(Response::new(pb::ApproveToolPinResponse {
            pin: Some(pin),
            audit_seq: seq,
        }))
    }

    async fn reject_tool_pin(
        &self,
        req: Request<pb::RejectToolPinRequest>,
    ) -> Result<Response<pb::RejectToolPinResponse>, Status> {
        let (pin, seq) = super::tool_pins::decide(
            &self.engine,
            req,
            "RejectToolPin",
            crate::engine::PinDecision::Reject,
            |r| (r.server, r.tool, r.digest, r.reason),
        )
        .await?;
        Ok(Response::new(pb::RejectToolPinResponse {
            pin: Some(pin),
            audit_seq: seq,
        }))
    }
}

fn principal(p: crate::store::PrincipalRow) -> pb::Principal {
    pb::Principal {
        name: p.name,
        roles: p
            .roles
            .iter()
            .map(|r| match r {
                Role::Agent => pb::Role::Agent,
                Role::Operator => pb::Role::Operator,
                Role::Admin => pb::Role::Admin,
                Role::Auditor => pb::Role::Auditor,
            } as i32)
            .collect(),
        agents: p.agents,
        created_at: Some(timestamp(p.created_ms)),
        revoked_at: p.revoked_ms.map(timestamp),
        tls_identity: p.tls_identity.map(|t| t.to_string()).unwrap_or_default(),
    }
}
