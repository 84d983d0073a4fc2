//! OpenTelemetry traces: the real binary exports OTLP/gRPC to a real receiver (an
//! in-test TraceService server), one span per RPC with the pipeline stages and the
//! audit commit as children, the caller's W3C trace context honoured, the spans
//! flushed at shutdown, and the trace id in the JSON log.

use std::sync::{Arc, Mutex};

use arbiter_client::proto as pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::harness::{spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
agents:
  - id: traced-bot
    tools: {allow: ["read"]}
"#;

/// Everything the receiver was sent: (service.name of the resource, span).
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                got.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
}

#[tokio::test]
async fn evaluate_exports_an_rpc_span_with_stage_children_flushed_at_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = listener.local_addr().unwrap();
    let received = Received::default();
    let receiver = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let mut server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &format!("http://{receiver_addr}"),
            )
            .env("OTEL_SERVICE_NAME", "arbiter-e2e")
            // Nothing is sent before shutdown: the spans arrive only if the exit flushes.
            .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
            .env("ARBITER_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,sqlx=warn,arbiter_server::api=debug"),
    )
    .await;

    // The caller's trace: the RPC span must join it as a child of the caller's span.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut decisions = pb::decision_service_client::DecisionServiceClient::new(channel);
    let mut req = tonic::Request::new(pb::EvaluateRequest {
        agent_id: "traced-bot".into(),
        action: Some(pb::Action {
            tool: "read".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{caller_trace}-{caller_span}-01")
            .parse()
            .unwrap(),
    );
    let resp = decisions.evaluate(req).await.unwrap().into_inner();
    assert_eq!(resp.decision, pb::Decision::Allow as i32, "{resp:?}");
    drop(decisions);
    assert!(
        received.0.lock().unwrap().is_empty(),
        "spans arrived before shutdown despite the long schedule delay"
    );

    server.stop().await;
    let spans = received.0.lock().unwrap().clone();
    receiver.abort();

    let trace_id = hex::decode(caller_trace).unwrap();
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|(_, s)| s.trace_id == trace_id)
        .map(|(_, s)| s)
        .collect();
    let names: Vec<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
    let one = |name: &str| -> &Span {
        let found: Vec<&&Span> = in_trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(
            found.len(),
            1,
            "one {name:?} span in the caller's trace: {names:?}"
        );
        found[0]
    };
    let rpc = one("arbiter.v1.DecisionService/Evaluate");
    assert_eq!(rpc.parent_span_id, hex::decode(caller_span).unwrap());
    assert_eq!(attr(rpc, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attr(rpc, "rpc.method").as_deref(), Some("Evaluate"));
    let handler = one("Evaluate");
    assert_eq!(
        handler.parent_span_id, rpc.span_id,
        "Evaluate is inside the RPC span"
    );
    assert_eq!(
        attr(handler, "arbiter.agent_id").as_deref(),
        Some("traced-bot")
    );
    assert_eq!(attr(handler, "arbiter.decision").as_deref(), Some("allow"));
    for stage in ["halt", "trust", "budget", "consent", "scope", "approval"] {
        let s = one(stage);
        assert_eq!(
            s.parent_span_id, handler.span_id,
            "{stage} is a child of Evaluate"
        );
        assert_eq!(attr(s, "arbiter.stage").as_deref(), Some(stage));
    }
    assert_eq!(one("audit.commit").parent_span_id, handler.span_id);
    assert!(
        spans.iter().all(|(service, _)| service == "arbiter-e2e"),
        "OTEL_SERVICE_NAME names the resource"
    );

    // The JSON log line written inside the request carries the same trace id.
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"decided\""))
        .unwrap_or_else(|| panic!("no \"decided\" log line\n{}", server.log_tail()));
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(json["trace_id"], caller_trace, "{line}");
    assert_eq!(json["span_id"], hex::encode(&handler.span_id), "{line}");
}

#[tokio::test]
async fn an_http_otlp_protocol_stops_the_start_with_a_clear_error() {
    let out = crate::harness::arbiter_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/nonexistent/never-created",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    )
    .await;
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("OTLP/gRPC only"), "{out}");
}
