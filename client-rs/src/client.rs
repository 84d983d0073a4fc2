//! [`Client`], its [`ClientBuilder`], and the plumbing every RPC shares.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitState, SystemClock};
use crate::call::{self, CallPolicy, ResultStream, Retry};
use crate::Error;

/// Default deadline of one call, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on setting up a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of retries after `UNAVAILABLE`.
pub const DEFAULT_RETRIES: u32 = 2;
/// Default pause before the first retry (doubled for each further one).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// Configures and connects a [`Client`].
///
/// ```no_run
/// # async fn example() -> Result<(), arbiter_client::Error> {
/// use std::time::Duration;
///
/// let client = arbiter_client::Client::builder("127.0.0.1:50051")
///     .timeout(Duration::from_millis(500))
///     .api_key("arb_...")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    endpoint: String,
    timeout: Duration,
    connect_timeout: Duration,
    api_key: Option<String>,
    retries: u32,
    retry_backoff: Duration,
    breaker: Option<CircuitBreakerConfig>,
    tls: Option<Tls>,
}

/// TLS settings: the CA that signed the server's certificate, and for mTLS the
/// client's own certificate and key. No system roots are trusted: a deployment
/// names its CA explicitly.
#[derive(Clone, Default)]
struct Tls {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain_name: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("client_certificate", &self.identity.is_some())
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("breaker", &self.breaker)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ClientBuilder {
    /// Starts a builder for `endpoint`: a URI such as `"http://127.0.0.1:50051"`,
    /// or `"host:port"`, to which `http://` is added.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            api_key: None,
            retries: DEFAULT_RETRIES,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            breaker: Some(CircuitBreakerConfig::default()),
            tls: None,
        }
    }

    /// Deadline of each call, retries and pauses included (default 5 s). It
    /// is also sent to the server as the gRPC deadline. For streaming calls it
    /// bounds only the time to open the stream.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limit on setting up a TCP/HTTP2 connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// API key sent on every call as the `authorization: Bearer <key>` header.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Connects over TLS and trusts only server certificates signed by this CA
    /// (PEM, one or more certificates). An endpoint without a scheme then gets
    /// `https://`; an `http://` endpoint is refused rather than sent in clear.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.get_or_insert_with(Tls::default).ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate and private key (PEM) for mTLS. The
    /// server maps the certificate's identity to a principal. Needs
    /// [`tls_ca_pem`](Self::tls_ca_pem).
    pub fn tls_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls.get_or_insert_with(Tls::default).identity = Some((cert.into(), key.into()));
        self
    }

    /// The name the server's certificate must carry, when it differs from the
    /// endpoint's host (for example connecting to an IP address, or through a
    /// tunnel). Needs [`tls_ca_pem`](Self::tls_ca_pem).
    pub fn tls_domain_name(mut self, name: impl Into<String>) -> Self {
        self.tls.get_or_insert_with(Tls::default).domain_name = Some(name.into());
        self
    }

    /// How many times a call that failed with `UNAVAILABLE` is sent again
    /// (default 2; 0 disables retries). Only calls that are safe to repeat are
    /// retried: Evaluate and Record (which carry a `request_id`) and reads.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Pause before the first retry, doubled for each further one up to 1 s
    /// (default 50 ms).
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Replaces the circuit breaker settings (the breaker is on by default:
    /// 5 consecutive outages open it for 2 s).
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// Turns the circuit breaker off: every call is sent, however many failed before.
    pub fn disable_circuit_breaker(mut self) -> Self {
        self.breaker = None;
        self
    }

    /// Connects now, failing with [`Error::Transport`] if the server cannot be reached.
    pub async fn connect(self) -> Result<Client, Error> {
        let channel = self.endpoint()?.connect().await?;
        self.build_with_channel(channel)
    }

    /// Returns a client at once and connects on the first call. A server that
    /// is down then shows up as `UNAVAILABLE` on calls, not here.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let channel = self.endpoint()?.connect_lazy();
        self.build_with_channel(channel)
    }

    /// Builds a client over a channel made elsewhere (custom TLS, an
    /// in-process transport). The endpoint and connect timeout are ignored.
    pub fn build_with_channel(self, channel: Channel) -> Result<Client, Error> {
        let authorization = self
            .api_key
            .as_deref()
            .map(|key| {
                MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| {
                    Error::InvalidConfig(
                        "api_key: must be printable ASCII without line breaks".to_owned(),
                    )
                })
            })
            .transpose()?;
        let breaker = self
            .breaker
            .map(|config| Arc::new(CircuitBreaker::new(config, Arc::new(SystemClock))));
        Ok(Client {
            channel,
            inner: Arc::new(Inner {
                endpoint: self.endpoint,
                timeout: self.timeout,
                retries: self.retries,
                retry_backoff: self.retry_backoff,
                authorization,
                trace: Vec::new(),
                breaker,
            }),
        })
    }

    fn endpoint(&self) -> Result<Endpoint, Error> {
        let uri = if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else if self.tls.is_some() {
            format!("https://{}", self.endpoint)
        } else {
            format!("http://{}", self.endpoint)
        };
        let endpoint = Endpoint::from_shared(uri.clone())?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("arbiter-client-rs/", env!("CARGO_PKG_VERSION")))?;
        let https = uri.starts_with("https://");
        match (&self.tls, https) {
            (None, false) => Ok(endpoint),
            (None, true) => Err(Error::InvalidConfig(format!(
                "{uri}: an https:// endpoint needs tls_ca_pem (no system roots are trusted)"
            ))),
            // tonic would quietly talk plaintext to an http:// URI despite the TLS config.
            (Some(_), false) => Err(Error::InvalidConfig(format!(
                "{uri}: TLS is configured, so the endpoint must be https:// (or have no scheme)"
            ))),
            (Some(tls), true) => endpoint.tls_config(tls.client_config()?).map_err(|e| {
                Error::InvalidConfig(format!("tls: {}", crate::error::source_chain(&e)))
            }),
        }
    }
}

impl Tls {
    fn client_config(&self) -> Result<ClientTlsConfig, Error> {
        let Some(ca) = &self.ca_pem else {
            return Err(Error::InvalidConfig(
                "tls: a client certificate or domain name needs tls_ca_pem too".to_owned(),
            ));
        };
        // tonic skips unparsable CA entries; an empty trust store would then fail
        // every handshake with a vague error, so say so here.
        if !contains_pem(ca, "CERTIFICATE") {
            return Err(Error::InvalidConfig(
                "tls_ca_pem: no PEM certificate (-----BEGIN CERTIFICATE-----) found".to_owned(),
            ));
        }
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = &self.identity {
            if !contains_pem(cert, "CERTIFICATE") {
                return Err(Error::InvalidConfig(
                    "tls_identity_pem: no PEM certificate found in the certificate".to_owned(),
                ));
            }
            if !contains_pem(key, "PRIVATE KEY") {
                return Err(Error::InvalidConfig(
                    "tls_identity_pem: no PEM private key found in the key".to_owned(),
                ));
            }
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

/// Whether `pem` has a block whose label ends with `label` ("PRIVATE KEY" covers
/// PKCS#8, "EC PRIVATE KEY" and "RSA PRIVATE KEY").
fn contains_pem(pem: &[u8], label: &str) -> bool {
    String::from_utf8_lossy(pem).lines().any(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|l| l.ends_with(label))
    })
}

/// A connection to an Arbiter server.
///
/// Cloning is cheap and clones share the connection and the circuit breaker,
/// so one `Client` can serve a whole process. It is `Send + Sync`.
///
/// Methods are grouped by service: decisions ([`evaluate`](Client::evaluate),
/// [`record`](Client::record), ...), admin ([`set_trust`](Client::set_trust), ...),
/// control ([`approve`](Client::approve), [`halt`](Client::halt), ...) and audit
/// ([`query_audit`](Client::query_audit), ...).
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    endpoint: String,
    timeout: Duration,
    retries: u32,
    retry_backoff: Duration,
    authorization: Option<MetadataValue<Ascii>>,
    /// W3C trace context headers (`traceparent`, `tracestate`) sent on every call.
    trace: Vec<(&'static str, MetadataValue<Ascii>)>,
    breaker: Option<Arc<CircuitBreaker>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint)
            .field("timeout", &self.inner.timeout)
            .field("retries", &self.inner.retries)
            .field(
                "authorization",
                &self.inner.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("breaker", &self.inner.breaker)
            .finish()
    }
}

impl Client {
    /// Connects to `endpoint` with default settings; see [`ClientBuilder`] for the others.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client, Error> {
        ClientBuilder::new(endpoint).connect().await
    }

    /// Starts configuring a client for `endpoint`.
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint)
    }

    /// The endpoint this client was built for, as given.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The circuit breaker's state, or `None` when the breaker is disabled.
    pub fn circuit_state(&self) -> Option<CircuitState> {
        self.inner.breaker.as_deref().map(CircuitBreaker::state)
    }

    /// A clone of this client with another default deadline, sharing the
    /// connection and the circuit breaker. Useful for slow calls such as
    /// verifying a long audit log.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        let mut inner = Inner::clone(&self.inner);
        inner.timeout = timeout;
        Client {
            channel: self.channel.clone(),
            inner: Arc::new(inner),
        }
    }

    /// A clone of this client that authenticates with another API key, sharing the
    /// connection and the circuit breaker. A gateway uses it to call Arbiter with
    /// each of its clients' own keys over one channel.
    pub fn with_api_key(&self, key: &str) -> Result<Client, Error> {
        let value = MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| {
            Error::InvalidConfig("api_key: must be printable ASCII without line breaks".to_owned())
        })?;
        let mut inner = Inner::clone(&self.inner);
        inner.authorization = Some(value);
        Ok(Client {
            channel: self.channel.clone(),
            inner: Arc::new(inner),
        })
    }

    /// A clone of this client that sends a W3C trace context (`traceparent`, and
    /// `tracestate` when given) on every call, sharing the connection and the circuit
    /// breaker, so the server's spans for those calls are children of the caller's
    /// span. A gateway makes one per request it traces; the values are the caller's to
    /// choose, and the server only uses them to place its spans.
    pub fn with_trace_context(
        &self,
        traceparent: &str,
        tracestate: Option<&str>,
    ) -> Result<Client, Error> {
        let value = |field: &str, v: &str| {
            MetadataValue::try_from(v)
                .map_err(|_| Error::InvalidConfig(format!("{field}: must be printable ASCII")))
        };
        let mut trace = vec![("traceparent", value("traceparent", traceparent)?)];
        if let Some(ts) = tracestate {
            trace.push(("tracestate", value("tracestate", ts)?));
        }
        let mut inner = Inner::clone(&self.inner);
        inner.trace = trace;
        Ok(Client {
            channel: self.channel.clone(),
            inner: Arc::new(inner),
        })
    }

    /// The client's default deadline for one call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Sends one unary RPC. `rpc` performs one attempt on a fresh service
    /// client over the shared channel.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        request: Req,
        retry: Retry,
        timeout: Option<Duration>,
        rpc: F,
    ) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let policy = self.policy(retry, timeout);
        call::run(
            policy,
            self.inner.breaker.as_deref(),
            request,
            |message, remaining| {
                let mut request = self.request(message);
                request.set_timeout(remaining);
                rpc(self.channel.clone(), request)
            },
        )
        .await
        .map(tonic::Response::into_inner)
    }

    /// Opens a server stream. The deadline bounds only the opening, so it is
    /// not sent to the server (which would cut the stream off).
    pub(crate) async fn server_stream<Req, Msg, Item, F, Fut, M>(
        &self,
        request: Req,
        rpc: F,
        mut map: M,
    ) -> Result<ResultStream<Item>, Error>
    where
        Req: Clone,
        Msg: Send + 'static,
        Item: Send + 'static,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<tonic::codec::Streaming<Msg>>, tonic::Status>>,
        M: FnMut(Msg) -> Option<Item> + Send + 'static,
    {
        use futures::StreamExt;

        let policy = self.policy(Retry::OnUnavailable, None);
        let streaming = call::run(
            policy,
            self.inner.breaker.as_deref(),
            request,
            |message, _remaining| rpc(self.channel.clone(), self.request(message)),
        )
        .await?
        .into_inner();
        Ok(streaming
            .filter_map(move |message| {
                std::future::ready(match message {
                    Ok(message) => map(message).map(Ok),
                    Err(status) => Some(Err(Error::from(status))),
                })
            })
            .boxed())
    }

    fn policy(&self, retry: Retry, timeout: Option<Duration>) -> CallPolicy {
        CallPolicy {
            timeout: timeout.unwrap_or(self.inner.timeout),
            retries: match retry {
                Retry::OnUnavailable => self.inner.retries,
                Retry::Never => 0,
            },
            backoff: self.inner.retry_backoff,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.inner.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        for (key, value) in &self.inner.trace {
            request.metadata_mut().insert(*key, value.clone());
        }
        request
    }
}

/// Defines `Client` methods that pass a generated request straight to one
/// unary RPC and return its generated response.
macro_rules! unary_rpcs {
    (
        $service:ident;
        $( $(#[$doc:meta])* $method:ident($request:ident) -> $response:ident, $retry:ident; )*
    ) => {
        impl $crate::Client {
            $(
                $(#[$doc])*
                pub async fn $method(
                    &self,
                    request: $crate::proto::$request,
                ) -> Result<$crate::proto::$response, $crate::Error> {
                    self.unary(
                        request,
                        $crate::call::Retry::$retry,
                        None,
                        |channel, request| async move { $service::new(channel).$method(request).await },
                    )
                    .await
                }
            )*
        }
    };
}
pub(crate) use unary_rpcs;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn client_is_send_sync_and_clone() {
        assert_send_sync::<Client>();
        assert_send_sync::<ClientBuilder>();
    }

    #[test]
    fn an_endpoint_without_scheme_gets_http() {
        let endpoint = ClientBuilder::new("127.0.0.1:50051").endpoint().unwrap();
        assert_eq!(endpoint.uri().to_string(), "http://127.0.0.1:50051/");
        let endpoint = ClientBuilder::new("http://localhost:7").endpoint().unwrap();
        assert_eq!(endpoint.uri().to_string(), "http://localhost:7/");
    }

    #[test]
    fn a_malformed_endpoint_is_a_transport_error() {
        let err = ClientBuilder::new("http://exa mple:1")
            .endpoint()
            .unwrap_err();
        assert!(matches!(err, Error::Transport(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_api_key_with_a_line_break_is_refused() {
        let err = ClientBuilder::new("127.0.0.1:1")
            .api_key("abc\ndef")
            .connect_lazy()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    }

    #[tokio::test]
    async fn the_api_key_is_sent_as_a_bearer_token_and_hidden_from_debug() {
        let client = ClientBuilder::new("127.0.0.1:1")
            .api_key("sekrit")
            .connect_lazy()
            .unwrap();
        let request = client.request(());
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer sekrit"
        );
        assert!(!format!("{client:?}").contains("sekrit"));
        let builder = ClientBuilder::new("127.0.0.1:1").api_key("sekrit");
        assert!(!format!("{builder:?}").contains("sekrit"));
    }

    #[tokio::test]
    async fn without_an_api_key_no_authorization_header_is_sent() {
        let client = ClientBuilder::new("127.0.0.1:1").connect_lazy().unwrap();
        assert!(client.request(()).metadata().get("authorization").is_none());
    }

    #[tokio::test]
    async fn a_trace_context_is_sent_on_every_call_of_its_clone_only() {
        let client = ClientBuilder::new("127.0.0.1:1").connect_lazy().unwrap();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let traced = client.with_trace_context(tp, Some("k=v")).unwrap();
        let request = traced.request(());
        assert_eq!(request.metadata().get("traceparent").unwrap(), tp);
        assert_eq!(request.metadata().get("tracestate").unwrap(), "k=v");
        assert!(client.request(()).metadata().get("traceparent").is_none());
        assert!(client.with_trace_context("a\nb", None).is_err());
    }

    #[tokio::test]
    async fn mutations_are_never_retried_and_reads_use_the_configured_count() {
        let client = ClientBuilder::new("127.0.0.1:1")
            .retries(4)
            .timeout(Duration::from_millis(250))
            .connect_lazy()
            .unwrap();
        assert_eq!(client.policy(Retry::Never, None).retries, 0);
        let read = client.policy(Retry::OnUnavailable, None);
        assert_eq!(read.retries, 4);
        assert_eq!(read.timeout, Duration::from_millis(250));
        let overridden = client.policy(Retry::OnUnavailable, Some(Duration::from_secs(1)));
        assert_eq!(overridden.timeout, Duration::from_secs(1));
    }

    #[test]
    fn tls_makes_a_bare_endpoint_https_and_refuses_http() {
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let tls = ClientBuilder::new("127.0.0.1:50051").tls_ca_pem(ca);
        // The CA is not a real certificate, so building the connector may fail, but
        // never by falling back to http.
        match tls.endpoint() {
            Ok(e) => assert_eq!(e.uri().scheme_str(), Some("https")),
            Err(e) => assert!(e.to_string().contains("tls"), "{e}"),
        }
        let err = ClientBuilder::new("http://127.0.0.1:1")
            .tls_ca_pem(ca)
            .endpoint()
            .unwrap_err();
        assert!(err.to_string().contains("must be https://"), "{err}");
        let err = ClientBuilder::new("https://127.0.0.1:1")
            .endpoint()
            .unwrap_err();
        assert!(err.to_string().contains("needs tls_ca_pem"), "{err}");
    }

    #[test]
    fn tls_options_without_a_ca_or_with_empty_pem_are_refused() {
        let err = ClientBuilder::new("127.0.0.1:1")
            .tls_domain_name("arbiter.internal")
            .endpoint()
            .unwrap_err();
        assert!(err.to_string().contains("needs tls_ca_pem"), "{err}");
        let err = ClientBuilder::new("127.0.0.1:1")
            .tls_ca_pem("not pem")
            .endpoint()
            .unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let builder = ClientBuilder::new("127.0.0.1:1")
            .tls_ca_pem("-----BEGIN CERTIFICATE-----\n")
            .tls_identity_pem("-----BEGIN CERTIFICATE-----\n", "sekrit key");
        assert!(!format!("{builder:?}").contains("sekrit"));
        let err = builder.endpoint().unwrap_err();
        assert!(err.to_string().contains("no PEM private key"), "{err}");
    }

    #[tokio::test]
    async fn the_breaker_can_be_disabled() {
        let on = ClientBuilder::new("127.0.0.1:1").connect_lazy().unwrap();
        assert_eq!(on.circuit_state(), Some(CircuitState::Closed));
        let off = ClientBuilder::new("127.0.0.1:1")
            .disable_circuit_breaker()
            .connect_lazy()
            .unwrap();
        assert_eq!(off.circuit_state(), None);
    }
}
