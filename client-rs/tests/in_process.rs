//! The client against a tiny in-process DecisionService with canned answers:
//! retries on UNAVAILABLE, deadlines, error details, the API key header and
//! failing closed. End-to-end tests against the real server live in `tests/e2e/`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_client::proto::decision_service_server::{DecisionService, DecisionServiceServer};
use arbiter_client::{proto, CircuitBreakerConfig, CircuitState, Client, ClientBuilder, Error};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// What the canned server should do, and what it saw.
#[derive(Default)]
struct Script {
    /// Answer this many Evaluate/Record calls with UNAVAILABLE first.
    unavailable_first: usize,
    /// Answer every Evaluate with this status instead.
    fail_with: Option<(Code, String, Option<String>)>,
    /// Wait this long before answering Evaluate.
    delay: Duration,
    calls: usize,
    request_ids: Vec<String>,
    authorization: Vec<Option<String>>,
    grpc_timeout: Vec<Option<String>>,
}

#[derive(Clone, Default)]
struct Canned(Arc<Mutex<Script>>);

impl Canned {
    fn with(script: Script) -> Self {
        Self(Arc::new(Mutex::new(script)))
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().unwrap()
    }

    /// Logs one call and says whether to fail it with UNAVAILABLE.
    fn observe<T>(&self, request: &Request<T>, request_id: &str) -> Result<Duration, Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .map(|value| value.to_str().unwrap().to_owned())
        };
        let mut script = self.script();
        script.calls += 1;
        script.request_ids.push(request_id.to_owned());
        script.authorization.push(header("authorization"));
        script.grpc_timeout.push(header("grpc-timeout"));
        if script.unavailable_first > 0 {
            script.unavailable_first -= 1;
            return Err(Status::unavailable("warming up"));
        }
        if let Some((code, message, field)) = script.fail_with.clone() {
            let mut details = ErrorDetails::new();
            if let Some(field) = field {
                details.add_bad_request_violation(field, "bad value");
            }
            return Err(Status::with_error_details(code, message, details));
        }
        Ok(script.delay)
    }
}

#[tonic::async_trait]
impl DecisionService for Canned {
    async fn evaluate(
        &self,
        request: Request<proto::EvaluateRequest>,
    ) -> Result<Response<proto::EvaluateResponse>, Status> {
        let request_id = request.get_ref().request_id.clone();
        let delay = self.observe(&request, &request_id)?;
        tokio::time::sleep(delay).await;
        let allow = request.get_ref().action.as_ref().map(|a| a.tool.as_str()) == Some("safe");
        Ok(Response::new(proto::EvaluateResponse {
            decision: if allow {
                proto::Decision::Allow
            } else {
                proto::Decision::Deny
            } as i32,
            reasons: vec![proto::Reason {
                stage: "scope".into(),
                code: if allow { "ok" } else { "scope.denied" }.into(),
                message: "canned".into(),
                passed: allow,
            }],
            decision_id: format!("d-{request_id}"),
            audit_seq: 7,
            policy_version: "sha256:00".into(),
            ..Default::default()
        }))
    }

    async fn record(
        &self,
        request: Request<proto::RecordRequest>,
    ) -> Result<Response<proto::RecordResponse>, Status> {
        let request_id = request.get_ref().request_id.clone();
        self.observe(&request, &request_id)?;
        Ok(Response::new(proto::RecordResponse {
            audit_seq: 8,
            ..Default::default()
        }))
    }

    async fn filter_tools(
        &self,
        request: Request<proto::FilterToolsRequest>,
    ) -> Result<Response<proto::FilterToolsResponse>, Status> {
        Ok(Response::new(proto::FilterToolsResponse {
            tools: request.into_inner().tools,
        }))
    }

    async fn heartbeat(
        &self,
        _request: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        Ok(Response::new(proto::HeartbeatResponse::default()))
    }

    async fn delegate(
        &self,
        _request: Request<proto::DelegateRequest>,
    ) -> Result<Response<proto::DelegateResponse>, Status> {
        Err(Status::unimplemented("not in the canned server"))
    }

    async fn ping(
        &self,
        request: Request<proto::PingRequest>,
    ) -> Result<Response<proto::PingResponse>, Status> {
        self.observe(&request, "")?;
        Ok(Response::new(proto::PingResponse {}))
    }

    async fn who_am_i(
        &self,
        request: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::WhoAmIResponse>, Status> {
        self.observe(&request, "")?;
        Ok(Response::new(proto::WhoAmIResponse::default()))
    }

    async fn report_tools(
        &self,
        request: Request<proto::ReportToolsRequest>,
    ) -> Result<Response<proto::ReportToolsResponse>, Status> {
        self.observe(&request, "")?;
        Ok(Response::new(proto::ReportToolsResponse::default()))
    }
}

/// Serves `service` on a fresh loopback port until the test's runtime ends.
async fn spawn(service: Canned) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DecisionServiceServer::new(service))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

/// An address on which nothing listens.
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn builder(addr: SocketAddr) -> ClientBuilder {
    Client::builder(addr.to_string()).retry_backoff(Duration::from_millis(1))
}

#[tokio::test]
async fn unavailable_evaluate_is_retried_with_the_same_request_id() {
    let server = Canned::with(Script {
        unavailable_first: 2,
        ..Default::default()
    });
    let client = builder(spawn(server.clone()).await)
        .connect()
        .await
        .unwrap();

    let decision = client.evaluate("agent").tool("safe").send().await.unwrap();

    assert!(decision.allowed());
    let script = server.script();
    assert_eq!(script.calls, 3);
    let first = &script.request_ids[0];
    assert!(uuid::Uuid::parse_str(first).is_ok(), "{first}");
    assert!(script.request_ids.iter().all(|id| id == first));
    assert_eq!(decision.decision_id, format!("d-{first}"));
}

#[tokio::test]
async fn unavailable_record_is_retried_with_the_same_request_id() {
    let server = Canned::with(Script {
        unavailable_first: 1,
        ..Default::default()
    });
    let client = builder(spawn(server.clone()).await)
        .connect()
        .await
        .unwrap();

    let recorded = client
        .record("d-1")
        .request_id("rec-1")
        .send()
        .await
        .unwrap();

    assert_eq!(recorded.audit_seq, 8);
    assert_eq!(server.script().request_ids, vec!["rec-1", "rec-1"]);
}

#[tokio::test]
async fn retries_stop_after_the_configured_count() {
    let server = Canned::with(Script {
        unavailable_first: 10,
        ..Default::default()
    });
    let client = builder(spawn(server.clone()).await)
        .retries(2)
        .disable_circuit_breaker()
        .connect()
        .await
        .unwrap();

    let error = client
        .evaluate("agent")
        .tool("safe")
        .send()
        .await
        .unwrap_err();

    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!(server.script().calls, 3);
}

#[tokio::test]
async fn a_deny_is_a_value_not_an_error() {
    let client = builder(spawn(Canned::default()).await)
        .connect()
        .await
        .unwrap();

    let decision = client.evaluate("agent").tool("rm_rf").send().await.unwrap();

    assert!(decision.is_denied());
    assert!(!decision.synthetic);
    assert_eq!(decision.reason().unwrap().code, "scope.denied");
    assert_eq!(decision.audit_seq, 7);
}

#[tokio::test]
async fn invalid_argument_is_not_retried_and_names_the_field() {
    let server = Canned::with(Script {
        fail_with: Some((
            Code::InvalidArgument,
            "agent_id: must be 1–128 characters, got 0".into(),
            Some("agent_id".into()),
        )),
        ..Default::default()
    });
    let client = builder(spawn(server.clone()).await)
        .connect()
        .await
        .unwrap();

    let error = client.evaluate("").tool("safe").send().await.unwrap_err();

    match &error {
        Error::Status {
            code,
            message,
            field,
            ..
        } => {
            assert_eq!(*code, Code::InvalidArgument);
            assert_eq!(message, "agent_id: must be 1–128 characters, got 0");
            assert_eq!(field.as_deref(), Some("agent_id"));
        }
        other => panic!("expected a Status error, got {other:?}"),
    }
    assert_eq!(server.script().calls, 1);
}

#[tokio::test]
async fn internal_errors_are_not_retried_and_fail_closed() {
    let server = Canned::with(Script {
        fail_with: Some((Code::Internal, "internal error".into(), None)),
        ..Default::default()
    });
    let client = builder(spawn(server.clone()).await)
        .connect()
        .await
        .unwrap();

    let decision = client.evaluate("agent").tool("safe").send_or_deny().await;

    assert!(!decision.allowed());
    assert_eq!(decision.reason().unwrap().code, "client.unavailable");
    assert_eq!(server.script().calls, 1);
}

#[tokio::test]
async fn a_slow_server_times_out_once_and_is_told_the_deadline() {
    let server = Canned::with(Script {
        delay: Duration::from_secs(5),
        ..Default::default()
    });
    let client = builder(spawn(server.clone()).await)
        .timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let error = client
        .evaluate("agent")
        .tool("safe")
        .send()
        .await
        .unwrap_err();

    assert!(error.is_timeout(), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let script = server.script();
    assert_eq!(script.calls, 1, "a timeout is not retried");
    let grpc_timeout = script.grpc_timeout[0]
        .as_deref()
        .expect("grpc-timeout is sent");
    assert!(
        grpc_timeout.ends_with('m') || grpc_timeout.ends_with('u'),
        "{grpc_timeout}"
    );
}

#[tokio::test]
async fn a_per_call_timeout_overrides_the_client_default() {
    let server = Canned::with(Script {
        delay: Duration::from_millis(300),
        ..Default::default()
    });
    let client = builder(spawn(server.clone()).await)
        .timeout(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();

    let decision = client
        .evaluate("agent")
        .tool("safe")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();

    assert!(decision.allowed());
}

#[tokio::test]
async fn the_api_key_is_sent_as_a_bearer_token() {
    let server = Canned::default();
    let client = builder(spawn(server.clone()).await)
        .api_key("ak_test_123")
        .connect()
        .await
        .unwrap();

    client.ping().await.unwrap();
    client.evaluate("agent").tool("safe").send().await.unwrap();

    let script = server.script();
    assert_eq!(
        script.authorization,
        vec![Some("Bearer ak_test_123".to_owned()); 2]
    );
}

#[tokio::test]
async fn connect_fails_with_a_transport_error_when_nothing_listens() {
    let error = Client::connect(dead_addr().await.to_string())
        .await
        .unwrap_err();

    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert!(error.is_unavailable());
}

#[tokio::test]
async fn a_lazy_client_to_a_dead_server_fails_closed() {
    let client = builder(dead_addr().await).connect_lazy().unwrap();

    let error = client
        .evaluate("agent")
        .tool("safe")
        .send()
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(error.to_string().starts_with("UNAVAILABLE"), "{error}");

    let decision = client.evaluate("agent").tool("safe").send_or_deny().await;
    assert!(!decision.allowed());
    assert!(decision.synthetic);
    let reason = decision.reason().unwrap();
    assert_eq!(
        (reason.stage.as_str(), reason.code.as_str()),
        ("client", "client.unavailable")
    );

    let raw = proto::EvaluateRequest {
        agent_id: "agent".into(),
        ..Default::default()
    };
    assert!(!client.evaluate_or_deny(raw).await.allowed());
}

#[tokio::test]
async fn repeated_connection_failures_open_the_circuit() {
    let client = builder(dead_addr().await)
        .retries(0)
        .circuit_breaker(CircuitBreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_secs(60),
        })
        .connect_lazy()
        .unwrap();

    for _ in 0..3 {
        let error = client.ping().await.unwrap_err();
        assert!(error.is_unavailable());
        assert!(!matches!(error, Error::CircuitOpen));
    }
    assert_eq!(client.circuit_state(), Some(CircuitState::Open));

    let error = client.ping().await.unwrap_err();
    assert!(matches!(error, Error::CircuitOpen), "{error:?}");
    let decision = client
        .clone()
        .evaluate("agent")
        .tool("safe")
        .send_or_deny()
        .await;
    assert_eq!(decision.reason().unwrap().code, "client.unavailable");
}

#[tokio::test]
async fn simple_rpcs_pass_generated_types_through() {
    let client = builder(spawn(Canned::default()).await)
        .connect()
        .await
        .unwrap();

    let visible = client
        .filter_tools(proto::FilterToolsRequest {
            agent_id: "agent".into(),
            tools: vec!["a".into(), "b".into()],
        })
        .await
        .unwrap();
    assert_eq!(visible.tools, vec!["a", "b"]);

    let error = client
        .delegate(proto::DelegateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unimplemented);
}
