//! The gRPC-level random-input run (issue 14): generated requests over every RPC and
//! every role, against the real binary. The server never crashes, never answers
//! INTERNAL or UNKNOWN for a caller's fault, and a refused request (any non-OK answer)
//! leaves state and the log exactly as they were, except for the `auth.denied` entries
//! that record refusals by design (ARCHITECTURE.md, `api/`).
//!
//! Bounded by default; `ARBITER_RANDOM_REQUESTS` (default 1200) sets the size and
//! `ARBITER_RANDOM_SEED` replays a run (the seed is printed and named in every failure).
//! Malformed protobuf on every method is checked in `malformed_protobuf_*`.

use std::time::Duration;

use arbiter_client::proto as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::audit_service_client::AuditServiceClient;
use pb::control_service_client::ControlServiceClient;
use pb::decision_service_client::DecisionServiceClient;
use prost::bytes::{Buf, BufMut, Bytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::harness::{create_principal, keyed, spawn_server, ServerOptions, TestServer};

const POLICY: &str = r#"
version: 1
defaults:
  reservation_ttl: 1h
  approval_ttl: 1h
actions:
  - match: {tool: "pay_*"}
    approval: always
  - match: {tool: escalate_to_human}
    critical: true
    approval: never
agents:
  - id: "bot-*"
    tools: {allow: ["*"], deny: ["rm_*"]}
    apis:
      allow: ["* https://**"]
      deny: ["* https://api.example.com/admin/**"]
    models: ["*"]
budgets:
  - {name: daily, scope: agent, period: day, max_usd: "5.00"}
"#;

/// Every method of arbiter.v1 with whether it streams its response.
const METHODS: &[(&str, bool)] = &[
    ("/arbiter.v1.DecisionService/Evaluate", false),
    ("/arbiter.v1.DecisionService/Record", false),
    ("/arbiter.v1.DecisionService/FilterTools", false),
    ("/arbiter.v1.DecisionService/Heartbeat", false),
    ("/arbiter.v1.DecisionService/Delegate", false),
    ("/arbiter.v1.DecisionService/Ping", false),
    ("/arbiter.v1.DecisionService/WhoAmI", false),
    ("/arbiter.v1.ControlService/Approve", false),
    ("/arbiter.v1.ControlService/GetApproval", false),
    ("/arbiter.v1.ControlService/ListApprovals", false),
    ("/arbiter.v1.ControlService/WatchApproval", true),
    ("/arbiter.v1.ControlService/Halt", false),
    ("/arbiter.v1.ControlService/Resume", false),
    ("/arbiter.v1.ControlService/ListHalts", false),
    ("/arbiter.v1.AdminService/SetTrust", false),
    ("/arbiter.v1.AdminService/GetTrust", false),
    ("/arbiter.v1.AdminService/ListTrust", false),
    ("/arbiter.v1.AdminService/GrantConsent", false),
    ("/arbiter.v1.AdminService/RevokeConsent", false),
    ("/arbiter.v1.AdminService/ListConsents", false),
    ("/arbiter.v1.AdminService/GetBudgets", false),
    ("/arbiter.v1.AdminService/ListAgents", false),
    ("/arbiter.v1.AdminService/GetPolicy", false),
    ("/arbiter.v1.AdminService/CreatePrincipal", false),
    ("/arbiter.v1.AdminService/ListPrincipals", false),
    ("/arbiter.v1.AdminService/RevokePrincipal", false),
    ("/arbiter.v1.AuditService/QueryAudit", false),
    ("/arbiter.v1.AuditService/TailAudit", true),
    ("/arbiter.v1.AuditService/VerifyAudit", false),
    ("/arbiter.v1.AuditService/ExportAudit", true),
    ("/arbiter.v1.AuditService/GetCheckpoint", false),
    ("/arbiter.v1.AuditService/GetInclusionProof", false),
    ("/arbiter.v1.AuditService/GetConsistencyProof", false),
];

/// Sends and receives message bodies as raw bytes, so a test can put anything on the
/// wire.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.url())
        .unwrap()
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .expect("connect")
}

/// Sends `body` as the request of `method` and returns the status code (a stream's
/// code is that of its first message or its end).
async fn raw_call(
    ch: &Channel,
    key: Option<&str>,
    method: &'static str,
    streaming: bool,
    body: Vec<u8>,
) -> Code {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.expect("channel ready");
    let mut req = Request::new(Bytes::from(body));
    if let Some(k) = key {
        req.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {k}")).unwrap(),
        );
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    if streaming {
        match grpc.server_streaming(req, path, RawCodec).await {
            Err(s) => s.code(),
            Ok(resp) => {
                let mut stream = resp.into_inner();
                match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
                    Ok(Err(s)) => s.code(),
                    _ => Code::Ok,
                }
            }
        }
    } else {
        match grpc.unary(req, path, RawCodec).await {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
    }
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_on_every_method() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let ch = channel(&server).await;
    // Bytes no message of the contract decodes: an invalid wire type, a length past the
    // end, a truncated varint, a group end without a start.
    let malformed: [&[u8]; 4] = [&[0x0f], &[0x0a, 0x05, 0x01], &[0x08, 0xff, 0xff], &[0x0c]];
    for (method, streaming) in METHODS {
        for body in malformed {
            let code = raw_call(&ch, None, method, *streaming, body.to_vec()).await;
            assert_eq!(code, Code::InvalidArgument, "{method} with {body:02x?}");
        }
    }
    // Random bytes (which sometimes decode) are never the server's fault.
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..300 {
        let (method, streaming) = METHODS[rng.gen_range(0..METHODS.len())];
        let body: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
        let code = raw_call(&ch, None, method, streaming, body.clone()).await;
        assert!(
            !matches!(code, Code::Internal | Code::Unknown),
            "seed {seed}: {method} with {body:02x?} answered {code:?}"
        );
    }
    assert_serving(&server, seed).await;
}

fn seed() -> u64 {
    let seed = std::env::var("ARBITER_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("random input seed: {seed} (replay with ARBITER_RANDOM_SEED={seed})");
    seed
}

async fn assert_serving(server: &TestServer, seed: u64) {
    let ping = server.client().ping().await;
    let alive =
        ping.is_ok() || matches!(&ping, Err(e) if format!("{e:?}").contains("Unauthenticated"));
    assert!(
        alive,
        "seed {seed}: the server stopped answering: {ping:?}\n{}",
        server.log()
    );
}

/// Strings a caller might send, valid or not.
fn text(rng: &mut StdRng) -> String {
    match rng.gen_range(0..14) {
        0 => String::new(),
        1 | 2 => format!("bot-{}", rng.gen_range(0..3)),
        3 => "x".repeat(rng.gen_range(120..5000)),
        4 => "bücher-ñandú-例え".into(),
        5 => "a\u{1b}[2Jb".into(),
        6 => "del\u{202e}ete\u{200b}".into(),
        7 => "'; DROP TABLE audit_entries; --".into(),
        8 => "*".into(),
        9 => "https://api.example.com:443/admin/users".into(),
        10 => "e\u{301}".into(),
        11 => "\u{0}".into(),
        12 => format!("read_{}", rng.gen_range(0..5)),
        _ => (0..rng.gen_range(1..12))
            .map(|_| rng.gen::<char>())
            .collect(),
    }
}

fn int(rng: &mut StdRng) -> i64 {
    match rng.gen_range(0..8) {
        0 => -1,
        1 => i64::MIN,
        2 => i64::MAX,
        3 => 0,
        4 => 1_000_000_000_000_001,
        5 => rng.gen(),
        _ => rng.gen_range(0..2_000_000),
    }
}

fn enum_value(rng: &mut StdRng, max: i32) -> i32 {
    match rng.gen_range(0..6) {
        0 => -1,
        1 => max + 1 + rng.gen_range(0..100),
        _ => rng.gen_range(0..=max),
    }
}

fn seq(rng: &mut StdRng) -> u64 {
    match rng.gen_range(0..4) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.gen(),
        _ => rng.gen_range(1..200),
    }
}

fn struct_value(rng: &mut StdRng, depth: u32) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match rng.gen_range(0..if depth == 0 { 4 } else { 6 }) {
        0 => Kind::NumberValue(
            *[-1.5, 1e300, f64::NAN, 100.0, -0.0]
                .get(rng.gen_range(0..5))
                .unwrap(),
        ),
        1 => Kind::StringValue(text(rng)),
        2 => Kind::BoolValue(rng.gen()),
        3 => Kind::NullValue(0),
        4 => Kind::ListValue(prost_types::ListValue {
            values: (0..rng.gen_range(0..4))
                .map(|_| struct_value(rng, depth - 1))
                .collect(),
        }),
        _ => Kind::StructValue(arguments(rng, depth - 1)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn arguments(rng: &mut StdRng, depth: u32) -> prost_types::Struct {
    prost_types::Struct {
        fields: (0..rng.gen_range(0..4))
            .map(|_| (text(rng), struct_value(rng, depth)))
            .collect(),
    }
}

fn action(rng: &mut StdRng) -> pb::Action {
    let tools = ["read_x", "pay_invoice", "rm_rf", "escalate_to_human", ""];
    let urls = [
        "https://api.example.com/v1/x",
        "HTTPS://API.EXAMPLE.COM:443/admin/users",
        "https://api.example.com./admin/x",
        "https://api.example.com\\admin/users",
        "https://u:p@api.example.com/x",
    ];
    pb::Action {
        tool: if rng.gen_bool(0.7) {
            tools[rng.gen_range(0..tools.len())].into()
        } else {
            text(rng)
        },
        api: rng.gen_bool(0.3).then(|| pb::ApiCall {
            method: ["GET", "post", "DELETE", "", "G E T"][rng.gen_range(0..5)].into(),
            url: if rng.gen_bool(0.7) {
                urls[rng.gen_range(0..urls.len())].into()
            } else {
                text(rng)
            },
        }),
        model: if rng.gen_bool(0.2) {
            text(rng)
        } else {
            String::new()
        },
        max_tokens: if rng.gen_bool(0.8) { 0 } else { int(rng) },
        estimate: rng.gen_bool(0.6).then(|| pb::Cost {
            micro_usd: int(rng),
            tokens: int(rng),
        }),
        data: (0..rng.gen_range(0..3))
            .map(|_| pb::DataAccess {
                data_type: text(rng),
                purpose: text(rng),
            })
            .collect(),
        category: if rng.gen_bool(0.2) {
            text(rng)
        } else {
            String::new()
        },
        budget: if rng.gen_bool(0.2) {
            text(rng)
        } else {
            String::new()
        },
        arguments: rng.gen_bool(0.3).then(|| {
            let depth = rng.gen_range(0..4);
            arguments(rng, depth)
        }),
    }
}

fn target(rng: &mut StdRng) -> Option<pb::HaltTarget> {
    rng.gen_bool(0.9).then(|| pb::HaltTarget {
        scope: enum_value(rng, 3),
        agent_id: text(rng),
        session_id: if rng.gen_bool(0.3) {
            text(rng)
        } else {
            String::new()
        },
    })
}

fn filter(rng: &mut StdRng) -> Option<pb::AuditFilter> {
    rng.gen_bool(0.7).then(|| pb::AuditFilter {
        agent_id: text(rng),
        session_id: String::new(),
        kinds: (0..rng.gen_range(0..3)).map(|_| text(rng)).collect(),
        outcome: text(rng),
        since: rng.gen_bool(0.3).then(|| prost_types::Timestamp {
            seconds: int(rng),
            nanos: rng.gen(),
        }),
        until: None,
    })
}

/// One caller: a name for failure messages and the API key it sends, if any.
#[derive(Clone)]
struct Caller {
    name: &'static str,
    key: Option<String>,
}

type Auth = InterceptedService<
    Channel,
    Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send + Sync>,
>;

fn auth(ch: &Channel, caller: &Caller) -> Auth {
    let header = caller
        .key
        .as_ref()
        .map(|k| MetadataValue::try_from(format!("Bearer {k}")).unwrap());
    InterceptedService::new(
        ch.clone(),
        Box::new(move |mut r: Request<()>| {
            if let Some(h) = &header {
                r.metadata_mut().insert("authorization", h.clone());
            }
            Ok(r)
        }),
    )
}

/// Sends one generated request for method number `m`; returns its code.
async fn random_call(
    ch: &Channel,
    who: &Caller,
    m: usize,
    rng: &mut StdRng,
    open: &[String],
) -> (String, Code) {
    let d = || DecisionServiceClient::new(auth(ch, who));
    let c = || ControlServiceClient::new(auth(ch, who));
    let a = || AdminServiceClient::new(auth(ch, who));
    let au = || AuditServiceClient::new(auth(ch, who));
    let known = |rng: &mut StdRng| {
        if !open.is_empty() && rng.gen_bool(0.5) {
            open[rng.gen_range(0..open.len())].clone()
        } else {
            text(rng)
        }
    };
    let code = |r: Result<(), Status>| r.map_or_else(|s| s.code(), |_| Code::Ok);
    macro_rules! unary {
        ($client:expr, $method:ident, $req:expr) => {{
            let req = $req;
            let shown = format!("{req:?}");
            let shown: String = shown.chars().take(600).collect();
            (shown, code($client.$method(req).await.map(|_| ())))
        }};
    }
    macro_rules! stream {
        ($client:expr, $method:ident, $req:expr) => {{
            let req = $req;
            let shown: String = format!("{req:?}").chars().take(600).collect();
            let r = match $client.$method(req).await {
                Err(s) => Err(s),
                Ok(resp) => {
                    let mut s = resp.into_inner();
                    match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
                        Ok(Err(st)) => Err(st),
                        _ => Ok(()),
                    }
                }
            };
            (shown, code(r))
        }};
    }
    match m {
        0 => unary!(
            d(),
            evaluate,
            pb::EvaluateRequest {
                agent_id: if rng.gen_bool(0.7) {
                    format!("bot-{}", rng.gen_range(0..3))
                } else {
                    text(rng)
                },
                session_id: if rng.gen_bool(0.5) {
                    "s1".into()
                } else {
                    text(rng)
                },
                action: rng.gen_bool(0.95).then(|| action(rng)),
                request_id: if rng.gen_bool(0.5) {
                    String::new()
                } else {
                    text(rng)
                },
                explain: rng.gen(),
                receipt: rng.gen(),
                min_trust: enum_value(rng, 6),
                approval_id: if rng.gen_bool(0.8) {
                    String::new()
                } else {
                    known(rng)
                },
                delegation_token: if rng.gen_bool(0.9) {
                    String::new()
                } else {
                    format!("arbiter-dt1.{}", text(rng))
                },
                context: (0..rng.gen_range(0..3))
                    .map(|_| (text(rng), text(rng)))
                    .collect(),
            }
        ),
        1 => unary!(
            d(),
            record,
            pb::RecordRequest {
                decision_id: known(rng),
                outcome: enum_value(rng, 3),
                usage: rng.gen_bool(0.5).then(|| pb::Usage {
                    model: text(rng),
                    input_tokens: int(rng),
                    output_tokens: int(rng),
                    micro_usd: rng.gen_bool(0.5).then(|| int(rng)),
                }),
                duration_ms: int(rng),
                output_digest: text(rng),
                metadata: (0..rng.gen_range(0..3))
                    .map(|_| (text(rng), text(rng)))
                    .collect(),
                request_id: text(rng),
            }
        ),
        2 => unary!(
            d(),
            filter_tools,
            pb::FilterToolsRequest {
                agent_id: text(rng),
                tools: (0..rng.gen_range(0..5)).map(|_| text(rng)).collect(),
            }
        ),
        3 => unary!(
            d(),
            heartbeat,
            pb::HeartbeatRequest {
                agent_id: text(rng),
                session_id: text(rng),
                metadata: (0..rng.gen_range(0..3))
                    .map(|_| (text(rng), text(rng)))
                    .collect(),
                operator: if rng.gen_bool(0.7) {
                    String::new()
                } else {
                    text(rng)
                },
                ..Default::default()
            }
        ),
        4 => unary!(
            d(),
            delegate,
            pb::DelegateRequest {
                parent_agent_id: text(rng),
                subject_agent_id: text(rng),
                tools: (0..rng.gen_range(0..3)).map(|_| text(rng)).collect(),
                apis: (0..rng.gen_range(0..2))
                    .map(|_| format!("GET {}", text(rng)))
                    .collect(),
                ttl_seconds: int(rng),
                max_depth: rng.gen_range(-2..12),
                parent_token: String::new(),
            }
        ),
        5 => unary!(d(), ping, pb::PingRequest {}),
        6 => unary!(
            c(),
            approve,
            pb::ApproveRequest {
                approval_id: known(rng),
                grant: rng.gen(),
                reason: text(rng)
            }
        ),
        7 => unary!(
            c(),
            get_approval,
            pb::GetApprovalRequest {
                approval_id: known(rng)
            }
        ),
        8 => unary!(
            c(),
            list_approvals,
            pb::ListApprovalsRequest {
                agent_id: text(rng),
                state: enum_value(rng, 5),
                page_size: int(rng) as i32,
                page_token: text(rng),
            }
        ),
        9 => stream!(
            c(),
            watch_approval,
            pb::WatchApprovalRequest {
                approval_id: known(rng)
            }
        ),
        10 => unary!(
            c(),
            halt,
            pb::HaltRequest {
                target: target(rng),
                mode: enum_value(rng, 3),
                reason: text(rng)
            }
        ),
        11 => unary!(
            c(),
            resume,
            pb::ResumeRequest {
                target: target(rng),
                reason: text(rng)
            }
        ),
        12 => unary!(c(), list_halts, pb::ListHaltsRequest {}),
        13 => unary!(
            a(),
            set_trust,
            pb::SetTrustRequest {
                agent_id: text(rng),
                level: enum_value(rng, 6),
                scope: if rng.gen_bool(0.6) {
                    String::new()
                } else {
                    text(rng)
                },
                reason: text(rng),
            }
        ),
        14 => unary!(
            a(),
            get_trust,
            pb::GetTrustRequest {
                agent_id: text(rng),
                scope: text(rng)
            }
        ),
        15 => unary!(
            a(),
            list_trust,
            pb::ListTrustRequest {
                agent_id: text(rng)
            }
        ),
        16 => unary!(
            a(),
            grant_consent,
            pb::GrantConsentRequest {
                agent_id: text(rng),
                data_type: text(rng),
                purpose: text(rng),
                expires_at: rng.gen_bool(0.5).then(|| prost_types::Timestamp {
                    seconds: int(rng),
                    nanos: rng.gen()
                }),
            }
        ),
        17 => unary!(
            a(),
            revoke_consent,
            pb::RevokeConsentRequest {
                agent_id: text(rng),
                data_type: text(rng),
                purpose: text(rng)
            }
        ),
        18 => unary!(
            a(),
            list_consents,
            pb::ListConsentsRequest {
                agent_id: text(rng)
            }
        ),
        19 => unary!(
            a(),
            get_budgets,
            pb::GetBudgetsRequest {
                agent_id: text(rng),
                session_id: text(rng)
            }
        ),
        20 => unary!(a(), list_agents, pb::ListAgentsRequest {}),
        21 => unary!(a(), get_policy, pb::GetPolicyRequest {}),
        22 => unary!(
            a(),
            create_principal,
            pb::CreatePrincipalRequest {
                name: text(rng),
                roles: (0..rng.gen_range(0..3))
                    .map(|_| enum_value(rng, 4))
                    .collect(),
                agents: (0..rng.gen_range(0..2)).map(|_| text(rng)).collect(),
                tls_identity: if rng.gen_bool(0.8) {
                    String::new()
                } else {
                    text(rng)
                },
            }
        ),
        23 => unary!(a(), list_principals, pb::ListPrincipalsRequest {}),
        24 => unary!(
            a(),
            revoke_principal,
            pb::RevokePrincipalRequest {
                // Never the run's own callers: revoking them would end the run, not test it.
                name: format!("x{}", text(rng)),
            }
        ),
        25 => unary!(
            au(),
            query_audit,
            pb::QueryAuditRequest {
                filter: filter(rng),
                page_size: int(rng) as i32,
                page_token: text(rng)
            }
        ),
        26 => stream!(
            au(),
            tail_audit,
            pb::TailAuditRequest {
                filter: filter(rng),
                from_seq: seq(rng)
            }
        ),
        27 => unary!(
            au(),
            verify_audit,
            pb::VerifyAuditRequest {
                from_seq: seq(rng),
                to_seq: seq(rng)
            }
        ),
        28 => stream!(
            au(),
            export_audit,
            pb::ExportAuditRequest {
                from_seq: seq(rng),
                to_seq: seq(rng)
            }
        ),
        29 => unary!(au(), get_checkpoint, pb::GetCheckpointRequest {}),
        30 => unary!(
            au(),
            get_inclusion_proof,
            pb::GetInclusionProofRequest {
                seq: seq(rng),
                tree_size: seq(rng)
            }
        ),
        _ => unary!(
            au(),
            get_consistency_proof,
            pb::GetConsistencyProofRequest {
                from_size: seq(rng),
                to_size: seq(rng)
            }
        ),
    }
}

/// What a refused request must not change: the state reads and the log after `from`.
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: Vec<String>,
    head: u64,
}

async fn snapshot(ch: &Channel, admin: &Caller) -> Snapshot {
    let c = || ControlServiceClient::new(auth(ch, admin));
    let a = || AdminServiceClient::new(auth(ch, admin));
    let show = |r: Result<String, Status>| r.unwrap_or_else(|s| format!("{:?}", s.code()));
    let mut state = vec![
        show(
            c().list_halts(pb::ListHaltsRequest {})
                .await
                .map(|r| format!("{:?}", r.into_inner())),
        ),
        show(
            c().list_approvals(pb::ListApprovalsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .map(|r| format!("{:?}", r.into_inner())),
        ),
        show(
            a().list_principals(pb::ListPrincipalsRequest {})
                .await
                .map(|r| format!("{:?}", r.into_inner())),
        ),
    ];
    for agent in ["bot-0", "bot-1", "bot-2"] {
        let agent = agent.to_owned();
        state.push(show(
            a().list_trust(pb::ListTrustRequest {
                agent_id: agent.clone(),
            })
            .await
            .map(|r| format!("{:?}", r.into_inner())),
        ));
        state.push(show(
            a().list_consents(pb::ListConsentsRequest {
                agent_id: agent.clone(),
            })
            .await
            .map(|r| format!("{:?}", r.into_inner())),
        ));
        state.push(show(
            a().get_budgets(pb::GetBudgetsRequest {
                agent_id: agent,
                session_id: String::new(),
            })
            .await
            .map(|r| format!("{:?}", r.into_inner())),
        ));
    }
    // The batch's checkpoint commits with its entries, so its size is the log's head.
    let head = AuditServiceClient::new(auth(ch, admin))
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner()
        .tree_size;
    Snapshot { state, head }
}

/// The log's entries after `after` as (seq, kind).
async fn export(ch: &Channel, admin: &Caller, after: u64) -> Vec<(u64, String)> {
    let from = after + 1;
    let mut s = AuditServiceClient::new(auth(ch, admin))
        .export_audit(pb::ExportAuditRequest {
            from_seq: from,
            to_seq: 0,
        })
        .await
        .expect("export")
        .into_inner();
    let mut out = Vec::new();
    while let Some(page) = s.message().await.expect("export page") {
        for line in page.lines {
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSONL");
            out.push((
                v["entry"]["seq"].as_u64().unwrap(),
                v["entry"]["kind"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn random_requests_never_crash_never_blame_the_server_and_refusals_change_nothing() {
    let seed = seed();
    let total: usize = std::env::var("ARBITER_RANDOM_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1200);
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let root = create_principal(&server.client(), "root", &[pb::Role::Admin], &[]).await;
    let rc = keyed(&server, &root);
    let mut callers = vec![Caller {
        name: "admin",
        key: Some(root),
    }];
    for (name, roles, agents) in [
        ("agent", &[pb::Role::Agent][..], &["bot-*"][..]),
        ("operator", &[pb::Role::Operator], &[]),
        ("auditor", &[pb::Role::Auditor], &[]),
        (
            "agent-operator",
            &[pb::Role::Agent, pb::Role::Operator],
            &["bot-1"],
        ),
    ] {
        let key = create_principal(&rc, name, roles, agents).await;
        callers.push(Caller {
            name,
            key: Some(key),
        });
    }
    callers.push(Caller {
        name: "none",
        key: None,
    });
    callers.push(Caller {
        name: "garbage",
        key: Some("arb_not-a-real-key".into()),
    });
    let admin = callers[0].clone();
    let ch = channel(&server).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut open: Vec<String> = Vec::new();
    let (mut sent, mut refused_batches, mut codes) =
        (0usize, 0usize, std::collections::BTreeMap::new());
    while sent < total {
        let before = snapshot(&ch, &admin).await;
        let mut batch = Vec::new();
        for _ in 0..4 {
            let who = callers[rng.gen_range(0..callers.len())].clone();
            let m = rng.gen_range(0..METHODS.len());
            let (req, code) = random_call(&ch, &who, m, &mut rng, &open).await;
            sent += 1;
            *codes.entry(format!("{code:?}")).or_insert(0usize) += 1;
            assert!(
                !matches!(code, Code::Internal | Code::Unknown | Code::DataLoss),
                "seed {seed}: {} as {} answered {code:?} to {req}\n{}",
                METHODS[m].0,
                who.name,
                server.log()
            );
            batch.push((METHODS[m].0, who.name, code, req));
        }
        if batch.iter().all(|b| b.2 != Code::Ok) {
            refused_batches += 1;
            let after = snapshot(&ch, &admin).await;
            assert_eq!(
                after.state, before.state,
                "seed {seed}: refused requests changed state: {batch:#?}"
            );
            let added = export(&ch, &admin, before.head).await;
            let unexpected: Vec<_> = added.iter().filter(|e| e.1 != "auth.denied").collect();
            assert!(
                unexpected.is_empty(),
                "seed {seed}: refused requests wrote {unexpected:?}: {batch:#?}"
            );
        }
        // Ids the next requests can refer to: approvals that exist.
        if rng.gen_bool(0.2) {
            open = pending_ids(&ch, &admin).await;
        }
    }
    assert_serving(&server, seed).await;
    eprintln!("random input: {sent} requests, {refused_batches} all-refused batches checked, codes {codes:?}");
    assert!(
        refused_batches > total / 16,
        "seed {seed}: too few all-refused batches to check ({refused_batches})"
    );
    let verify = AuditServiceClient::new(auth(&ch, &admin))
        .verify_audit(pb::VerifyAuditRequest {
            from_seq: 0,
            to_seq: 0,
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(verify.ok, "seed {seed}: {verify:?}");
}

async fn pending_ids(ch: &Channel, admin: &Caller) -> Vec<String> {
    let list = ControlServiceClient::new(auth(ch, admin))
        .list_approvals(pb::ListApprovalsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
        .unwrap_or_default();
    list.approvals.into_iter().map(|a| a.approval_id).collect()
}
