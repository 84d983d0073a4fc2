//! Proto → domain through `TryFrom` (validation names the field and the limit);
//! domain → proto written out by hand.

use crate::domain::{
    canonical_url, check_len, check_map, text, Action, ApiCall, ApiPattern, Arguments, DataAccess,
    Estimate, GlobList, Id, MicroUsd, ParseError, TrustLevel, MAX_TOKENS,
};
use crate::engine::{
    DelegateInput, EvaluateInput, EvaluateResult, RecordInput, RecordOutcome, RecordResult,
};
use crate::pipeline::{Reason, Verdict};
use crate::state::Amounts;
use arbiter_proto::v1 as pb;
use std::collections::BTreeMap;

pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn timestamp_ms(field: &str, t: &prost_types::Timestamp) -> Result<i64, ParseError> {
    if !(0..1_000_000_000).contains(&t.nanos) || t.seconds < 0 || t.seconds > 253_402_300_799 {
        return Err(ParseError::new(
            field,
            "must be a valid timestamp between 1970 and 9999",
        ));
    }
    Ok(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

fn optional_text(field: &str, v: String, max: usize) -> Result<Option<String>, ParseError> {
    check_len(field, &v, 0, max)?;
    if v.chars().any(char::is_control) {
        return Err(ParseError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok((!v.is_empty()).then_some(v))
}

fn count(field: &str, v: i64, max: i64) -> Result<u64, ParseError> {
    if !(0..=max).contains(&v) {
        return Err(ParseError::new(field, format!("must be 0–{max}, got {v}")));
    }
    Ok(v as u64)
}

pub fn trust_level(field: &str, v: i32) -> Result<Option<TrustLevel>, ParseError> {
    match pb::TrustLevel::try_from(v) {
        Ok(pb::TrustLevel::Unspecified) => Ok(None),
        Ok(l) => Ok(TrustLevel::from_rank((l as i32 - 1) as u8)),
        Err(_) => Err(ParseError::new(
            field,
            format!("unknown TrustLevel value {v}"),
        )),
    }
}

pub fn trust_to_pb(l: TrustLevel) -> pb::TrustLevel {
    pb::TrustLevel::try_from(i32::from(l.rank()) + 1).unwrap_or(pb::TrustLevel::Unspecified)
}

/// A name a person reads (tool, model, data type, purpose, category, budget): the
/// length limit, then the character set of `domain::text::check_name`.
fn optional_name(
    field: &str,
    v: String,
    max: usize,
    allow_spaces: bool,
) -> Result<Option<String>, ParseError> {
    check_len(field, &v, 0, max)?;
    text::check_name(field, &v, allow_spaces)?;
    Ok((!v.is_empty()).then_some(v))
}

fn action(a: pb::Action) -> Result<Action, ParseError> {
    let tool = optional_name("action.tool", a.tool, 256, false)?;
    let api = match a.api {
        None => None,
        Some(api) => {
            let method = api.method.to_ascii_uppercase();
            if method.is_empty()
                || method.len() > 16
                || !method.bytes().all(|b| b.is_ascii_uppercase())
            {
                return Err(ParseError::new(
                    "action.api.method",
                    "must be 1–16 letters, e.g. GET or POST",
                ));
            }
            Some(ApiCall {
                method,
                url: canonical_url("action.api.url", &api.url)?,
            })
        }
    };
    let model = optional_name("action.model", a.model, 128, false)?;
    if tool.is_none() && api.is_none() && model.is_none() {
        return Err(ParseError::new(
            "action",
            "must name a tool, an api or a model",
        ));
    }
    let estimate = a.estimate.unwrap_or_default();
    if a.data.len() > 32 {
        return Err(ParseError::new(
            "action.data",
            format!("must have at most 32 entries, got {}", a.data.len()),
        ));
    }
    let data = a
        .data
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let field = format!("action.data[{i}].data_type");
            check_len(&field, &d.data_type, 1, 128)?;
            text::check_name(&field, &d.data_type, false)?;
            Ok(DataAccess {
                data_type: d.data_type,
                purpose: optional_name(&format!("action.data[{i}].purpose"), d.purpose, 128, true)?,
            })
        })
        .collect::<Result<Vec<_>, ParseError>>()?;
    Ok(Action {
        tool,
        api,
        model,
        max_tokens: count("action.max_tokens", a.max_tokens, 1_000_000_000)?,
        estimate: Estimate {
            micro_usd: MicroUsd::from_wire("action.estimate.micro_usd", estimate.micro_usd)?,
            tokens: count("action.estimate.tokens", estimate.tokens, MAX_TOKENS)?,
        },
        data,
        category: optional_name("action.category", a.category, 128, false)?,
        budget: optional_name("action.budget", a.budget, 128, false)?,
        arguments: match a.arguments {
            None => None,
            Some(s) => Arguments::parse("action.arguments", struct_to_json(s)?)?,
        },
    })
}

/// `google.protobuf.Struct` → JSON. Integral numbers within ±(2^53 − 1) become JSON integers
/// (so `100` and `100.0` are one value in the digest); NaN and infinities have no JSON
/// form and are refused. The nesting depth is bounded by prost's decoder (100) and
/// checked against the documented limit by `Arguments::parse`.
fn struct_to_json(
    s: prost_types::Struct,
) -> Result<serde_json::Map<String, serde_json::Value>, ParseError> {
    s.fields
        .into_iter()
        .map(|(k, v)| Ok((k, value_to_json(v)?)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> Result<serde_json::Value, ParseError> {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    Ok(match v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(b),
        Some(Kind::StringValue(s)) => J::String(s),
        Some(Kind::NumberValue(n)) => {
            // The largest integers the audit log holds as integers (beyond them a double
            // stands for several integers); larger ones stay numbers and are logged as
            // their RFC 8785 text, so no request is refused for the log's sake.
            #[allow(clippy::cast_precision_loss)] // 2^53 - 1 is exact as a double
            const EXACT: f64 = crate::jcs::MAX_EXACT as f64;
            if n.fract() == 0.0 && n.abs() <= EXACT {
                J::from(n as i64)
            } else {
                J::from(serde_json::Number::from_f64(n).ok_or_else(|| {
                    ParseError::new(
                        "action.arguments",
                        "numbers must be finite (no NaN or infinity)",
                    )
                })?)
            }
        }
        Some(Kind::ListValue(l)) => J::Array(
            l.values
                .into_iter()
                .map(value_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => J::Object(struct_to_json(s)?),
    })
}

impl TryFrom<pb::EvaluateRequest> for EvaluateInput {
    type Error = ParseError;

    fn try_from(r: pb::EvaluateRequest) -> Result<Self, ParseError> {
        let agent_id = Id::parse("agent_id", &r.agent_id)?;
        let session_id = Id::parse_optional("session_id", &r.session_id)?;
        let action = action(
            r.action
                .ok_or_else(|| ParseError::new("action", "is required"))?,
        )?;
        check_map("context", r.context.iter(), 32)?;
        Ok(Self {
            agent_id,
            session_id,
            action,
            request_id: optional_text("request_id", r.request_id, 128)?,
            explain: r.explain,
            receipt: r.receipt,
            min_trust: trust_level("min_trust", r.min_trust)?,
            approval_id: optional_text("approval_id", r.approval_id, 64)?,
            delegation_token: optional_text("delegation_token", r.delegation_token, 4096)?,
            context: r.context.into_iter().collect(),
        })
    }
}

impl TryFrom<pb::DelegateRequest> for DelegateInput {
    type Error = ParseError;

    fn try_from(r: pb::DelegateRequest) -> Result<Self, ParseError> {
        let parent = Id::parse("parent_agent_id", &r.parent_agent_id)?;
        let subject = Id::parse("subject_agent_id", &r.subject_agent_id)?;
        if parent == subject {
            return Err(ParseError::new(
                "subject_agent_id",
                "must differ from parent_agent_id (an agent cannot delegate to itself)",
            ));
        }
        if r.tools.len() > 64 || r.apis.len() > 64 {
            return Err(ParseError::new(
                if r.tools.len() > 64 { "tools" } else { "apis" },
                "at most 64 patterns",
            ));
        }
        if r.tools.is_empty() && r.apis.is_empty() {
            return Err(ParseError::new(
                "tools",
                "a token must grant at least one tool or API pattern",
            ));
        }
        for (i, t) in r.tools.iter().enumerate() {
            let field = format!("tools[{i}]");
            check_len(&field, t, 1, 256)?;
            GlobList::new(std::slice::from_ref(t), false)
                .map_err(|e| ParseError::new(&field, e))?;
        }
        for (i, a) in r.apis.iter().enumerate() {
            let field = format!("apis[{i}]");
            check_len(&field, a, 1, 1024)?;
            ApiPattern::parse(a).map_err(|e| ParseError::new(&field, e))?;
        }
        if !(1..=86_400).contains(&r.ttl_seconds) {
            return Err(ParseError::new(
                "ttl_seconds",
                format!("must be 1–86400, got {}", r.ttl_seconds),
            ));
        }
        if !(0..=8).contains(&r.max_depth) {
            return Err(ParseError::new(
                "max_depth",
                format!("must be 0–8, got {}", r.max_depth),
            ));
        }
        Ok(Self {
            parent,
            subject,
            tools: r.tools,
            apis: r.apis,
            ttl_ms: r.ttl_seconds * 1000,
            max_depth: r.max_depth as u32,
            parent_token: optional_text("parent_token", r.parent_token, 4096)?,
        })
    }
}

fn cost(a: Amounts) -> pb::Cost {
    pb::Cost {
        micro_usd: a.micro_usd as i64,
        tokens: a.tokens as i64,
    }
}

fn reason(r: Reason) -> pb::Reason {
    pb::Reason {
        stage: r.stage,
        code: r.code,
        message: r.message,
        passed: r.passed,
    }
}

pub fn evaluate_response(r: EvaluateResult) -> pb::EvaluateResponse {
    pb::EvaluateResponse {
        decision: match r.verdict {
            Verdict::Allow => pb::Decision::Allow,
            Verdict::Deny => pb::Decision::Deny,
            Verdict::PendingApproval => pb::Decision::PendingApproval,
        } as i32,
        reasons: r.reasons.into_iter().map(reason).collect(),
        decision_id: r.decision_id,
        approval_id: r.approval_id.unwrap_or_default(),
        audit_seq: r.audit_seq,
        policy_version: r.policy_version,
        action_digest: r.action_digest,
        reservation_id: r.reservation_id.unwrap_or_default(),
        reservation_expires_at: r.reservation_expires_ms.map(timestamp),
        reserved: Some(cost(r.reserved)),
        receipt: None,
        replayed: r.replayed,
    }
}

impl TryFrom<pb::RecordRequest> for RecordInput {
    type Error = ParseError;

    fn try_from(r: pb::RecordRequest) -> Result<Self, ParseError> {
        check_len("decision_id", &r.decision_id, 1, 64)?;
        let outcome = match pb::ActionOutcome::try_from(r.outcome) {
            Ok(pb::ActionOutcome::Success) => RecordOutcome::Success,
            Ok(pb::ActionOutcome::Failure) => RecordOutcome::Failure,
            Ok(pb::ActionOutcome::Error) => RecordOutcome::Error,
            Ok(pb::ActionOutcome::Unspecified) => {
                return Err(ParseError::new(
                    "outcome",
                    "is required: SUCCESS, FAILURE or ERROR",
                ))
            }
            Err(_) => {
                return Err(ParseError::new(
                    "outcome",
                    format!("unknown ActionOutcome value {}", r.outcome),
                ))
            }
        };
        let usage = r.usage.unwrap_or_default();
        check_map("metadata", r.metadata.iter(), 32)?;
        Ok(Self {
            decision_id: r.decision_id,
            outcome,
            model: optional_text("usage.model", usage.model, 128)?,
            input_tokens: count("usage.input_tokens", usage.input_tokens, MAX_TOKENS)?,
            output_tokens: count("usage.output_tokens", usage.output_tokens, MAX_TOKENS)?,
            micro_usd: usage
                .micro_usd
                .map(|m| MicroUsd::from_wire("usage.micro_usd", m))
                .transpose()?,
            duration_ms: count("duration_ms", r.duration_ms, 10_000_000_000)?,
            output_digest: optional_text("output_digest", r.output_digest, 128)?,
            metadata: r.metadata.into_iter().collect::<BTreeMap<_, _>>(),
        })
    }
}

pub fn record_response(r: RecordResult) -> pb::RecordResponse {
    pb::RecordResponse {
        audit_seq: r.audit_seq,
        actual: Some(cost(r.actual)),
        reserved: Some(cost(r.reserved)),
        overspend: r.overspend,
        duplicate: r.duplicate,
        reservation_expired: r.reservation_expired,
    }
}

pub fn optional_id(field: &str, v: &str) -> Result<Option<String>, ParseError> {
    Ok(Id::parse_optional(field, v)?.map(|i| i.to_string()))
}

pub fn plain_text(field: &str, v: String, max: usize) -> Result<Option<String>, ParseError> {
    optional_text(field, v, max)
}

pub(super) fn role_pb(role: crate::domain::Role) -> pb::Role {
    use crate::domain::Role;
    match role {
        Role::Agent => pb::Role::Agent,
        Role::Operator => pb::Role::Operator,
        Role::Admin => pb::Role::Admin,
        Role::Auditor => pb::Role::Auditor,
    }
}

#[cfg(test)]
mod tests {
    use super::action;
    use arbiter_proto::v1 as pb;

    fn api(url: &str) -> pb::Action {
        pb::Action {
            api: Some(pb::ApiCall {
                method: "post".into(),
                url: url.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_spelling_of_a_url_is_one_action_with_one_digest() {
        let want = action(api("https://api.example.com/pay/charge")).unwrap();
        assert_eq!(
            want.api.as_ref().unwrap().url,
            "https://api.example.com/pay/charge"
        );
        for spelling in [
            "https://api.example.com:443/pay/charge",
            "https://api.example.com./pay/charge",
            "HTTPS://API.EXAMPLE.COM/pay/charge",
            "https://api.example.com/pay/x/../charge",
            "https://api.example.com/pay/%63harge#top",
        ] {
            let got = action(api(spelling)).unwrap();
            assert_eq!(got.digest(), want.digest(), "{spelling}");
        }
    }

    #[test]
    fn names_refuse_spoofing_characters_naming_the_field() {
        let with_tool = |t: &str| {
            action(pb::Action {
                tool: t.into(),
                ..Default::default()
            })
        };
        for bad in [
            "delete\u{202e}resu",
            "send\u{200b}email",
            "a\u{1b}[2J",
            "two words",
        ] {
            assert_eq!(with_tool(bad).unwrap_err().field, "action.tool", "{bad:?}");
        }
        let e = action(api("https://api.example.com\\admin")).unwrap_err();
        assert_eq!(e.field, "action.api.url");
    }
}
