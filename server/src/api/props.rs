//! Property tests for the request conversions of `convert`: any message, built field
//! by field or decoded from arbitrary bytes, converts or is refused with a
//! `ParseError` that names a field of that message, which `status` answers as
//! INVALID_ARGUMENT carrying the same field (issue 14). `PROPTEST_CASES` sets the count.

use super::convert::{optional_id, plain_text, timestamp_ms, trust_level};
use crate::domain::ParseError;
use crate::engine::{DelegateInput, EvaluateInput, RecordInput};
use arbiter_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;
use std::collections::HashMap;
use tonic_types::StatusExt;

/// Strings a caller might send: plain names, boundary lengths, Unicode, control,
/// format and bidi characters, URL-ish text.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z][a-z0-9_.-]{0,20}",
        1 => Just(String::new()),
        1 => "\\PC{0,40}",
        1 => "[a-z]{0,5}[\u{0}-\u{1f}\u{7f}\u{200b}\u{202e}\u{2028}\u{feff}\u{301}]{1,3}[a-z]{0,5}",
        1 => (1usize..3000).prop_map(|n| "x".repeat(n)),
        1 => "(HTTPS?|https?|ftp)://[a-zA-Z0-9.:@\\\\%/?#-]{0,40}",
    ]
    .boxed()
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        -2i64..1_000,
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1),
        Just(1_000_000_000),
        Just(1_000_000_001),
        any::<i64>(),
    ]
}

fn value(depth: u32) -> BoxedStrategy<prost_types::Value> {
    use prost_types::value::Kind;
    let leaf = prop_oneof![
        Just(None),
        Just(Some(Kind::NullValue(0))),
        any::<bool>().prop_map(|b| Some(Kind::BoolValue(b))),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(1e300),
            Just(-0.0)
        ]
        .prop_map(|n| Some(Kind::NumberValue(n))),
        text().prop_map(|s| Some(Kind::StringValue(s))),
    ];
    let kind = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![
            3 => leaf,
            1 => prop::collection::vec(value(depth - 1), 0..4)
                .prop_map(|values| Some(Kind::ListValue(prost_types::ListValue { values }))),
            1 => structure(depth - 1).prop_map(|s| Some(Kind::StructValue(s))),
        ]
        .boxed()
    };
    kind.prop_map(|kind| prost_types::Value { kind }).boxed()
}

fn structure(depth: u32) -> BoxedStrategy<prost_types::Struct> {
    prop::collection::btree_map(text(), value(depth), 0..4)
        .prop_map(|fields| prost_types::Struct { fields })
        .boxed()
}

fn context() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(text(), text(), 0..4)
}

fn action() -> BoxedStrategy<pb::Action> {
    (
        (text(), text(), int()),
        prop::option::of((text(), text())),
        prop::option::of((int(), int())),
        prop::collection::vec((text(), text()), 0..3),
        (text(), text()),
        prop::option::of(structure(2)),
    )
        .prop_map(
            |((tool, model, max_tokens), api, estimate, data, (category, budget), arguments)| {
                pb::Action {
                    tool,
                    api: api.map(|(method, url)| pb::ApiCall { method, url }),
                    model,
                    max_tokens,
                    estimate: estimate.map(|(micro_usd, tokens)| pb::Cost { micro_usd, tokens }),
                    data: data
                        .into_iter()
                        .map(|(data_type, purpose)| pb::DataAccess { data_type, purpose })
                        .collect(),
                    category,
                    budget,
                    arguments,
                }
            },
        )
        .boxed()
}

fn evaluate() -> impl Strategy<Value = pb::EvaluateRequest> {
    (
        (text(), text(), prop::option::of(action())),
        (
            text(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![0..8i32, any::<i32>()],
        ),
        (text(), text(), context()),
    )
        .prop_map(
            |(
                (agent_id, session_id, action),
                (request_id, explain, receipt, min_trust),
                (approval_id, delegation_token, context),
            )| {
                pb::EvaluateRequest {
                    agent_id,
                    session_id,
                    action,
                    request_id,
                    explain,
                    receipt,
                    min_trust,
                    approval_id,
                    delegation_token,
                    context,
                }
            },
        )
}

fn record() -> impl Strategy<Value = pb::RecordRequest> {
    (
        (text(), prop_oneof![-1i32..5, any::<i32>()]),
        prop::option::of((text(), int(), int(), prop::option::of(int()))),
        (int(), text(), context(), text()),
    )
        .prop_map(
            |(
                (decision_id, outcome),
                usage,
                (duration_ms, output_digest, metadata, request_id),
            )| pb::RecordRequest {
                decision_id,
                outcome,
                usage: usage.map(
                    |(model, input_tokens, output_tokens, micro_usd)| pb::Usage {
                        model,
                        input_tokens,
                        output_tokens,
                        micro_usd,
                    },
                ),
                duration_ms,
                output_digest,
                metadata,
                request_id,
            },
        )
}

fn delegate() -> impl Strategy<Value = pb::DelegateRequest> {
    let pattern = prop_oneof![
        text(),
        "(GET|\\*|post) (https?|HTTPS)://[a-z.*]{1,12}(:443)?/[a-z*/.%]{0,12}",
        "[a-z_*?\\[\\]{},]{1,12}",
    ];
    (
        (text(), text()),
        prop::collection::vec(pattern.clone(), 0..4),
        prop::collection::vec(pattern, 0..4),
        (int(), prop_oneof![-1i32..10, any::<i32>()], text()),
    )
        .prop_map(
            |(
                (parent_agent_id, subject_agent_id),
                tools,
                apis,
                (ttl_seconds, max_depth, parent_token),
            )| pb::DelegateRequest {
                parent_agent_id,
                subject_agent_id,
                tools,
                apis,
                ttl_seconds,
                max_depth,
                parent_token,
            },
        )
}

/// The refusal names one of the message's fields and becomes INVALID_ARGUMENT with
/// that field in its BadRequest details.
fn check_refusal(e: ParseError, roots: &[&str]) -> Result<(), TestCaseError> {
    let root = e.field.split(['.', '[']).next().unwrap_or("");
    prop_assert!(
        roots.contains(&root),
        "field {:?} is not one of {:?}",
        e.field,
        roots
    );
    prop_assert!(!e.problem.is_empty());
    let status = super::status::invalid(&e);
    prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let violations = status.get_details_bad_request().map(|b| b.field_violations);
    prop_assert_eq!(
        violations.and_then(|v| v.first().map(|f| f.field.clone())),
        Some(e.field.clone())
    );
    Ok(())
}

const EVALUATE: &[&str] = &[
    "agent_id",
    "session_id",
    "action",
    "context",
    "request_id",
    "min_trust",
    "approval_id",
    "delegation_token",
];
const RECORD: &[&str] = &[
    "decision_id",
    "outcome",
    "usage",
    "duration_ms",
    "output_digest",
    "metadata",
];
const DELEGATE: &[&str] = &[
    "parent_agent_id",
    "subject_agent_id",
    "tools",
    "apis",
    "ttl_seconds",
    "max_depth",
    "parent_token",
];

proptest! {
    #[test]
    fn any_evaluate_request_converts_or_names_its_field(r in evaluate()) {
        if let Err(e) = EvaluateInput::try_from(r) {
            check_refusal(e, EVALUATE)?;
        }
    }

    #[test]
    fn an_accepted_action_has_a_canonical_url_and_clean_names(r in evaluate()) {
        if let Ok(input) = EvaluateInput::try_from(r) {
            if let Some(api) = &input.action.api {
                let again = crate::domain::canonical_url("action.api.url", &api.url);
                prop_assert_eq!(again.as_deref(), Ok(api.url.as_str()));
            }
            for n in [&input.action.tool, &input.action.model, &input.action.category].into_iter().flatten() {
                prop_assert!(crate::domain::text::check_name("x", n, false).is_ok());
            }
        }
    }

    #[test]
    fn any_record_request_converts_or_names_its_field(r in record()) {
        if let Err(e) = RecordInput::try_from(r) {
            check_refusal(e, RECORD)?;
        }
    }

    #[test]
    fn any_delegate_request_converts_or_names_its_field(r in delegate()) {
        if let Err(e) = DelegateInput::try_from(r) {
            check_refusal(e, DELEGATE)?;
        }
    }

    #[test]
    fn arbitrary_bytes_decode_and_convert_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(r) = pb::EvaluateRequest::decode(bytes.as_slice()) {
            if let Err(e) = EvaluateInput::try_from(r) {
                check_refusal(e, EVALUATE)?;
            }
        }
        if let Ok(r) = pb::RecordRequest::decode(bytes.as_slice()) {
            if let Err(e) = RecordInput::try_from(r) {
                check_refusal(e, RECORD)?;
            }
        }
        if let Ok(r) = pb::DelegateRequest::decode(bytes.as_slice()) {
            if let Err(e) = DelegateInput::try_from(r) {
                check_refusal(e, DELEGATE)?;
            }
        }
    }

    #[test]
    fn mutated_valid_requests_convert_or_name_their_field(
        r in evaluate(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = r.encode_to_vec();
        for (at, b) in flips {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] ^= b;
            }
        }
        if let Ok(r) = pb::EvaluateRequest::decode(bytes.as_slice()) {
            if let Err(e) = EvaluateInput::try_from(r) {
                check_refusal(e, EVALUATE)?;
            }
        }
    }

    #[test]
    fn scalar_conversions_refuse_naming_their_field(
        seconds in int(), nanos in any::<i32>(), level in any::<i32>(), s in text(),
    ) {
        let t = prost_types::Timestamp { seconds, nanos };
        if let Err(e) = timestamp_ms("at", &t) { check_refusal(e, &["at"])?; }
        if let Err(e) = trust_level("level", level) { check_refusal(e, &["level"])?; }
        if let Err(e) = optional_id("id", &s) { check_refusal(e, &["id"])?; }
        if let Err(e) = plain_text("note", s, 256) { check_refusal(e, &["note"])?; }
    }
}
