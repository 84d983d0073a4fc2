//! Malformed input is refused with INVALID_ARGUMENT naming the field, before anything
//! is decided, reserved or audited.

use std::collections::HashMap;

use arbiter_client::proto::{
    self, Action, ApiCall, Cost, EvaluateRequest, GetBudgetsRequest, RecordRequest, SetTrustRequest,
};
use tonic::Code;

use crate::harness::{audit_head, budgets, spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: ["*"]}
    apis: {allow: ["* https://api.example.com/**"]}
budgets:
  - {name: cap, scope: global, period: lifetime, max_usd: "10.00"}
"#;

/// A request that would be allowed; each case breaks one thing in it.
fn valid() -> EvaluateRequest {
    EvaluateRequest {
        agent_id: "agent".into(),
        session_id: "s".into(),
        action: Some(Action {
            tool: "t".into(),
            estimate: Some(Cost {
                micro_usd: 1_000,
                tokens: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_action(change: impl FnOnce(&mut Action)) -> EvaluateRequest {
    let mut r = valid();
    change(r.action.as_mut().unwrap());
    r
}

fn with(change: impl FnOnce(&mut EvaluateRequest)) -> EvaluateRequest {
    let mut r = valid();
    change(&mut r);
    r
}

fn cases() -> Vec<(&'static str, EvaluateRequest, &'static str)> {
    vec![
        ("empty agent_id", with(|r| r.agent_id.clear()), "agent_id"),
        (
            "129-char agent_id",
            with(|r| r.agent_id = "a".repeat(129)),
            "agent_id",
        ),
        (
            "agent_id with a space",
            with(|r| r.agent_id = "a b".into()),
            "agent_id",
        ),
        (
            "bad session_id",
            with(|r| r.session_id = "s\n".into()),
            "session_id",
        ),
        (
            "33 context entries",
            with(|r| r.context = (0..33).map(|i| (format!("k{i}"), "v".into())).collect()),
            "context",
        ),
        (
            "1025-char context value",
            with(|r| r.context = HashMap::from([("k".into(), "v".repeat(1025))])),
            "context[k]",
        ),
        (
            "negative micro_usd",
            with_action(|a| a.estimate.as_mut().unwrap().micro_usd = -1),
            "action.estimate.micro_usd",
        ),
        (
            "micro_usd over 10^15",
            with_action(|a| a.estimate.as_mut().unwrap().micro_usd = 1_000_000_000_000_001),
            "action.estimate.micro_usd",
        ),
        (
            "negative tokens",
            with_action(|a| a.estimate.as_mut().unwrap().tokens = -5),
            "action.estimate.tokens",
        ),
        (
            "unknown min_trust value",
            with(|r| r.min_trust = 99),
            "min_trust",
        ),
        ("no action", with(|r| r.action = None), "action"),
        (
            "an action with nothing in it",
            with(|r| r.action = Some(Action::default())),
            "action",
        ),
        (
            "API URL that is not http(s)",
            with_action(|a| {
                a.api = Some(ApiCall {
                    method: "GET".into(),
                    url: "ftp://api.example.com/x".into(),
                })
            }),
            "action.api.url",
        ),
        (
            "API URL with a space",
            with_action(|a| {
                a.api = Some(ApiCall {
                    method: "GET".into(),
                    url: "https://api.example.com/a b".into(),
                })
            }),
            "action.api.url",
        ),
        (
            "API method that is not a word",
            with_action(|a| {
                a.api = Some(ApiCall {
                    method: "G3T".into(),
                    url: "https://api.example.com/x".into(),
                })
            }),
            "action.api.method",
        ),
        (
            "tool with whitespace",
            with_action(|a| a.tool = "send email".into()),
            "action.tool",
        ),
        (
            "33 data accesses",
            with_action(|a| {
                a.data = (0..33)
                    .map(|i| proto::DataAccess {
                        data_type: format!("d{i}"),
                        purpose: String::new(),
                    })
                    .collect()
            }),
            "action.data",
        ),
        (
            "129-char request_id",
            with(|r| r.request_id = "r".repeat(129)),
            "request_id",
        ),
        (
            "backslash in a URL (clients read it as /)",
            with_action(|a| a.api = Some(api("https://api.example.com\\admin/users"))),
            "action.api.url",
        ),
        (
            "user info in a URL",
            with_action(|a| a.api = Some(api("https://u:p@api.example.com/x"))),
            "action.api.url",
        ),
        (
            "encoded slash in a URL path",
            with_action(|a| a.api = Some(api("https://api.example.com/a%2F..%2Fadmin"))),
            "action.api.url",
        ),
        (
            "ESC in a URL",
            with_action(|a| a.api = Some(api("https://api.example.com/\u{1b}[2J"))),
            "action.api.url",
        ),
        (
            "bidi override in a tool name",
            with_action(|a| a.tool = "resu_\u{202e}eteled".into()),
            "action.tool",
        ),
        (
            "zero-width space in a model name",
            with_action(|a| a.model = "gpt\u{200b}-4o".into()),
            "action.model",
        ),
        (
            "not-NFC data type",
            with_action(|a| {
                a.data = vec![proto::DataAccess {
                    data_type: "caf\u{65}\u{301}".into(),
                    purpose: String::new(),
                }]
            }),
            "action.data[0].data_type",
        ),
        (
            "arguments nested 17 deep",
            with_action(|a| a.arguments = Some(nested(17))),
            "action.arguments",
        ),
        (
            "1,025 argument keys",
            with_action(|a| {
                a.arguments = Some(arguments(
                    (0..1025).map(|i| (format!("k{i}"), number(i as f64))),
                ))
            }),
            "action.arguments",
        ),
        (
            "65,537 bytes of arguments",
            with_action(|a| {
                a.arguments = Some(arguments([("k".to_owned(), text(&"x".repeat(65_537)))]))
            }),
            "action.arguments",
        ),
        (
            "NaN argument",
            with_action(|a| {
                a.arguments = Some(arguments([("amount".to_owned(), number(f64::NAN))]))
            }),
            "action.arguments",
        ),
        (
            "argument key with ESC",
            with_action(|a| {
                a.arguments = Some(arguments([("a\u{1b}[2J".to_owned(), number(1.0))]))
            }),
            "action.arguments",
        ),
    ]
}

fn api(url: &str) -> ApiCall {
    ApiCall {
        method: "GET".into(),
        url: url.into(),
    }
}

fn arguments(
    fields: impl IntoIterator<Item = (String, prost_types::Value)>,
) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields.into_iter().collect(),
    }
}

fn number(n: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::NumberValue(n)),
    }
}

fn text(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.into())),
    }
}

/// An arguments object with `depth` levels of objects (the outermost is level 1).
fn nested(depth: usize) -> prost_types::Struct {
    let mut s = arguments([("leaf".to_owned(), number(1.0))]);
    for _ in 1..depth {
        s = arguments([(
            "k".to_owned(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StructValue(s)),
            },
        )]);
    }
    s
}

#[tokio::test]
async fn malformed_evaluates_are_invalid_argument_naming_the_field_and_change_nothing() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();

    // Some state to compare against: one open reservation.
    let d = client.evaluate_request(valid()).await.unwrap();
    assert!(d.allowed(), "the base request is valid: {:?}", d.reasons);
    let head = audit_head(&client).await;
    let before = budgets(&client, "agent", "s").await;

    let mut failures = Vec::new();
    for (name, request, field) in cases() {
        match client.evaluate_request(request).await {
            Ok(d) => failures.push(format!("{name}: answered {:?} {:?}", d.outcome, d.reasons)),
            Err(e) if e.code() != Code::InvalidArgument || e.field() != Some(field) => failures
                .push(format!(
                    "{name}: expected INVALID_ARGUMENT naming {field}, got {e}"
                )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    assert_eq!(audit_head(&client).await, head, "nothing was audited");
    assert_eq!(
        budgets(&client, "agent", "s").await,
        before,
        "nothing was reserved"
    );
}

#[tokio::test]
async fn malformed_record_and_admin_requests_name_the_field() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let d = client.evaluate_request(valid()).await.unwrap();
    let head = audit_head(&client).await;

    let record = |change: fn(&mut RecordRequest)| {
        let mut r = RecordRequest {
            decision_id: d.decision_id.clone(),
            outcome: proto::ActionOutcome::Success as i32,
            usage: Some(proto::Usage {
                micro_usd: Some(10),
                ..Default::default()
            }),
            ..Default::default()
        };
        change(&mut r);
        r
    };
    let record_cases: Vec<(&str, RecordRequest, &str)> = vec![
        (
            "empty decision_id",
            record(|r| r.decision_id.clear()),
            "decision_id",
        ),
        ("no outcome", record(|r| r.outcome = 0), "outcome"),
        ("unknown outcome", record(|r| r.outcome = 42), "outcome"),
        (
            "negative usage",
            record(|r| r.usage.as_mut().unwrap().micro_usd = Some(-1)),
            "usage.micro_usd",
        ),
        (
            "negative duration",
            record(|r| r.duration_ms = -1),
            "duration_ms",
        ),
    ];
    for (name, request, field) in record_cases {
        let err = client.record_request(request).await.expect_err(name);
        assert_eq!(
            (err.code(), err.field()),
            (Code::InvalidArgument, Some(field)),
            "{name}: {err}"
        );
    }

    let err = client
        .set_trust(SetTrustRequest {
            agent_id: "a".into(),
            level: 0,
            scope: String::new(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.field()),
        (Code::InvalidArgument, Some("level")),
        "{err}"
    );
    let err = client
        .get_budgets(GetBudgetsRequest {
            agent_id: "bad agent".into(),
            session_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("agent_id"), "{err}");

    assert_eq!(audit_head(&client).await, head, "nothing was audited");
}

/// Error messages quote what the caller sent, and they travel in HTTP/2 headers: a long
/// field quoted back whole once made the reply larger than the client accepts, and the
/// client saw an HTTP/2 protocol error (INTERNAL) instead of a refusal naming the field.
#[tokio::test]
async fn a_long_value_quoted_in_an_error_still_comes_back_as_invalid_argument_naming_its_field() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    for tls_identity in ["x".repeat(5_000), "é".repeat(20_000)] {
        let err = client
            .create_principal(proto::CreatePrincipalRequest {
                name: "ops".into(),
                roles: vec![proto::Role::Admin as i32],
                agents: Vec::new(),
                tls_identity,
            })
            .await
            .expect_err("not a certificate identity");
        match err {
            arbiter_client::Error::Status { code, message, .. } => {
                assert_eq!(code, Code::InvalidArgument, "{message}");
                assert!(message.starts_with("tls_identity: "), "{message}");
                assert!(message.len() <= 1024, "{}", message.len());
            }
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }
}
