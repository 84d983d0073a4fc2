//! MCP tool pins on the wire: `DecisionService.ReportTools` (a gateway, with the
//! agent's key) and `AdminService.{List,Approve,Reject}ToolPin(s)` (people). The
//! service files delegate here so the checks of these messages live in one place.

use super::convert::timestamp;
use super::{OPERATORS, READERS};
use crate::auth::Access;
use crate::domain::{check_len, Id, ParseError};
use crate::engine::{Engine, PinDecision, ReportedTool, ToolAnswer};
use crate::state::{CandidateState, ToolPin, Verdict};
use arbiter_proto::v1 as pb;
use std::collections::HashSet;
use tonic::{Request, Response, Status};

/// Most definitions per report (as FilterTools takes at most 1024 names).
const MAX_TOOLS: usize = 1024;
/// Largest definition accepted, in bytes of JSON.
const MAX_DEFINITION_BYTES: usize = 65_536;

/// An upstream server's name: what gateway.yaml allows for `upstreams[].name`.
fn server_name(field: &str, value: &str, optional: bool) -> Result<(), ParseError> {
    if optional && value.is_empty() {
        return Ok(());
    }
    check_len(field, value, 1, 64)?;
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ParseError::new(field, "must be chars of [A-Za-z0-9_-]"));
    }
    Ok(())
}

fn digest(field: &str, value: &str) -> Result<(), ParseError> {
    let hex = value.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ParseError::new(
            field,
            "must be sha256: and 64 lowercase hex digits",
        ));
    }
    Ok(())
}

fn reported(tools: Vec<pb::ToolDefinition>) -> Result<Vec<ReportedTool>, ParseError> {
    if tools.len() > MAX_TOOLS {
        return Err(ParseError::new(
            "tools",
            format!("must have at most {MAX_TOOLS} entries, got {}", tools.len()),
        ));
    }
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.into_iter().enumerate() {
        check_len(&format!("tools[{i}].name"), &t.name, 1, 128)?;
        if !names.insert(t.name.clone()) {
            return Err(ParseError::new(
                format!("tools[{i}].name"),
                format!("{:?} is reported twice", t.name),
            ));
        }
        let field = format!("tools[{i}].definition_json");
        if t.definition_json.len() > MAX_DEFINITION_BYTES {
            return Err(ParseError::new(
                field,
                format!(
                    "must be at most {MAX_DEFINITION_BYTES} bytes, got {}",
                    t.definition_json.len()
                ),
            ));
        }
        let definition: serde_json::Value = serde_json::from_str(&t.definition_json)
            .map_err(|e| ParseError::new(&field, format!("is not JSON: {e}")))?;
        if !definition.is_object() {
            return Err(ParseError::new(field, "must be a JSON object"));
        }
        out.push(ReportedTool {
            name: t.name,
            definition,
        });
    }
    Ok(out)
}

fn verdict_pb(v: Verdict) -> pb::ToolPinState {
    match v {
        Verdict::Trusted => pb::ToolPinState::Trusted,
        Verdict::Pending => pb::ToolPinState::Pending,
        Verdict::Rejected => pb::ToolPinState::Rejected,
    }
}

fn verdict(a: ToolAnswer) -> pb::ToolVerdict {
    pb::ToolVerdict {
        name: a.name,
        digest: a.digest,
        state: verdict_pb(a.verdict) as i32,
        trusted_digest: a.trusted_digest.unwrap_or_default(),
    }
}

pub(super) fn pin_pb(p: ToolPin) -> pb::ToolPin {
    let mut out = pb::ToolPin {
        server: p.server,
        tool: p.tool,
        ..Default::default()
    };
    if let Some(t) = p.trusted {
        out.trusted_digest = t.digest;
        out.trusted_definition = t.definition;
        out.trusted_by = t.by;
        out.trusted_at = Some(timestamp(t.at_ms));
    }
    if let Some((c, state)) = p.candidate {
        out.candidate_digest = c.digest;
        out.candidate_definition = c.definition;
        out.candidate_seen_by = c.by;
        out.candidate_at = Some(timestamp(c.at_ms));
        out.candidate_state = match state {
            CandidateState::Pending => pb::ToolPinState::Pending,
            CandidateState::Rejected => pb::ToolPinState::Rejected,
        } as i32;
    }
    out
}

pub(super) async fn report(
    engine: &Engine,
    req: Request<pb::ReportToolsRequest>,
) -> Result<Response<pb::ReportToolsResponse>, Status> {
    super::authorize(
        engine,
        &req,
        "ReportTools",
        Access::ActForOr(&req.get_ref().agent_id, OPERATORS),
    )
    .await?;
    let r = req.into_inner();
    let agent = Id::parse("agent_id", &r.agent_id)?;
    server_name("server", &r.server, false)?;
    let tools = reported(r.tools)?;
    let answers = engine.report_tools(&agent, &r.server, tools).await?;
    Ok(Response::new(pb::ReportToolsResponse {
        tools: answers.into_iter().map(verdict).collect(),
    }))
}

pub(super) async fn list(
    engine: &Engine,
    req: Request<pb::ListToolPinsRequest>,
) -> Result<Response<pb::ListToolPinsResponse>, Status> {
    super::authorize(engine, &req, "ListToolPins", Access::Roles(READERS)).await?;
    let r = req.into_inner();
    server_name("server", &r.server, true)?;
    let server = (!r.server.is_empty()).then_some(r.server.as_str());
    Ok(Response::new(pb::ListToolPinsResponse {
        pins: engine
            .list_tool_pins(server, r.pending_only)
            .into_iter()
            .map(pin_pb)
            .collect(),
    }))
}

/// Approve or reject: the same checks, another decision.
pub(super) async fn decide<T>(
    engine: &Engine,
    req: Request<T>,
    rpc: &'static str,
    decision: PinDecision,
    fields: impl FnOnce(T) -> (String, String, String, String),
) -> Result<(pb::ToolPin, u64), Status> {
    let who = super::authorize(engine, &req, rpc, Access::Roles(OPERATORS)).await?;
    // Pins are shared by every agent: a principal that also acts for an agent governs
    // none of them here (SPEC §5, as for global halts).
    if !who.governs(None) {
        let reason = format!(
            "{rpc}: {} holds the agent role and cannot trust tools",
            who.name
        );
        engine
            .record_refusal(crate::auth::Refusal {
                principal: who.name.clone(),
                rpc,
                reason: reason.clone(),
            })
            .await;
        return Err(Status::permission_denied(reason));
    }
    let (server, tool, sha, reason) = fields(req.into_inner());
    server_name("server", &server, false)?;
    check_len("tool", &tool, 1, 128)?;
    digest("digest", &sha)?;
    let reason = super::convert::plain_text("reason", reason, 1024)?.unwrap_or_default();
    let (pin, seq) = engine
        .decide_tool_pin(&who, &server, &tool, &sha, decision, reason)
        .await?;
    Ok((pin_pb(pin), seq))
}
