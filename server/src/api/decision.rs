//! `arbiter.v1.DecisionService`.

use super::convert::{evaluate_response, record_response};
use super::{ANYONE, OPERATORS};
use crate::auth::Access;
use crate::domain::{check_len, Id, ParseError};
use crate::engine::{DelegateInput, Engine, EngineError, EvaluateInput, RecordInput};
use crate::state::PresenceStatus;
use arbiter_proto::v1 as pb;
use pb::decision_service_server::DecisionService;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::instrument;

pub struct DecisionApi {
    pub engine: Arc<Engine>,
    pub metrics: crate::metrics::Metrics,
}

#[tonic::async_trait]
impl DecisionService for DecisionApi {
    #[instrument(
        name = "Evaluate",
        skip_all,
        fields(arbiter.agent_id = %req.get_ref().agent_id, arbiter.decision = tracing::field::Empty)
    )]
    async fn evaluate(
        &self,
        req: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        super::authorize(
            &self.engine,
            &req,
            "Evaluate",
            Access::ActFor(&req.get_ref().agent_id),
        )
        .await?;
        let input = EvaluateInput::try_from(req.into_inner())?;
        let wants_receipt = input.receipt;
        let started = std::time::Instant::now();
        let result = self.engine.evaluate(input).await;
        match &result {
            // A replay repeats an earlier decision; it was counted when it was made.
            Ok(r) if !r.replayed => self
                .metrics
                .record_decision(Some((r.verdict, &r.reasons)), started.elapsed()),
            Err(EngineError::Unavailable(_)) => {
                self.metrics.record_decision(None, started.elapsed())
            }
            _ => {}
        }
        let result = result?;
        let receipt = if wants_receipt {
            Some(super::audit::receipt(&self.engine, result.audit_seq).await?)
        } else {
            None
        };
        tracing::Span::current().record("arbiter.decision", result.verdict.name());
        tracing::debug!(
            arbiter.decision = result.verdict.name(),
            seq = result.audit_seq,
            "decided"
        );
        let mut resp = evaluate_response(result);
        resp.receipt = receipt;
        Ok(Response::new(resp))
    }

    #[instrument(name = "Record", skip_all)]
    async fn record(
        &self,
        req: Request<pb::RecordRequest>,
    ) -> Result<Response<pb::RecordResponse>, Status> {
        let who = super::authorize(
            &self.engine,
            &req,
            "Record",
            Access::Roles(&[crate::domain::Role::Agent]),
        )
        .await?;
        let input = RecordInput::try_from(req.into_inner())?;
        Ok(Response::new(record_response(
            self.engine.record(input, &who).await?,
        )))
    }

    async fn filter_tools(
        &self,
        req: Request<pb::FilterToolsRequest>,
    ) -> Result<Response<pb::FilterToolsResponse>, Status> {
        super::authorize(
            &self.engine,
            &req,
            "FilterTools",
            Access::ActForOr(&req.get_ref().agent_id, OPERATORS),
        )
        .await?;
        let r = req.into_inner();
        let agent = Id::parse("agent_id", &r.agent_id)?;
        if r.tools.len() > 1024 {
            return Err(ParseError::new(
                "tools",
                format!("must have at most 1024 entries, got {}", r.tools.len()),
            )
            .into());
        }
        for (i, t) in r.tools.iter().enumerate() {
            check_len(&format!("tools[{i}]"), t, 1, 256)?;
        }
        Ok(Response::new(pb::FilterToolsResponse {
            tools: self.engine.filter_tools(&agent, r.tools),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let who = super::authorize(
            &self.engine,
            &req,
            "Heartbeat",
            Access::ActFor(&req.get_ref().agent_id),
        )
        .await?;
        let r = req.into_inner();
        let agent = Id::parse("agent_id", &r.agent_id)?;
        let session = Id::parse_optional("session_id", &r.session_id)?;
        crate::domain::check_map("metadata", r.metadata.iter(), 32)?;
        let operator = super::convert::optional_id("operator", &r.operator)?;
        let status = match pb::PresenceStatus::try_from(r.status) {
            Ok(pb::PresenceStatus::Unspecified) | Ok(pb::PresenceStatus::Live) => {
                PresenceStatus::Live
            }
            Ok(pb::PresenceStatus::Idle) => PresenceStatus::Idle,
            Ok(pb::PresenceStatus::Unresponsive) => PresenceStatus::Unresponsive,
            Err(_) => {
                return Err(ParseError::new(
                    "status",
                    format!("unknown PresenceStatus value {}", r.status),
                )
                .into())
            }
        };
        let halt = self
            .engine
            .heartbeat(
                &who,
                agent.as_str(),
                session.as_ref().map(|s| s.as_str()),
                status,
                operator,
            )
            .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            halted: halt.is_some(),
            halt: halt.map(super::control::halt_pb),
        }))
    }

    async fn delegate(
        &self,
        req: Request<pb::DelegateRequest>,
    ) -> Result<Response<pb::DelegateResponse>, Status> {
        let who = super::authorize(
            &self.engine,
            &req,
            "Delegate",
            Access::ActFor(&req.get_ref().parent_agent_id),
        )
        .await?;
        let input = DelegateInput::try_from(req.into_inner())?;
        let d = self.engine.delegate(&who, input).await?;
        Ok(Response::new(pb::DelegateResponse {
            token: d.token,
            expires_at: Some(super::convert::timestamp(d.grant.exp_ms)),
        }))
    }

    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        super::authorize(&self.engine, &req, "Ping", Access::Roles(ANYONE)).await?;
        Ok(Response::new(pb::PingResponse {}))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let who = super::authorize(&self.engine, &req, "WhoAmI", Access::Roles(ANYONE)).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            roles: who
                .roles
                .iter()
                .map(|r| super::convert::role_pb(*r) as i32)
                .collect(),
            principal: who.name,
            agents: who.agent_patterns,
        }))
    }

    async fn report_tools(
        &self,
        req: Request<pb::ReportToolsRequest>,
    ) -> Result<Response<pb::ReportToolsResponse>, Status> {
        super::tool_pins::report(&self.engine, req).await
    }
}
