//! The downstream Streamable HTTP endpoint: rmcp's `StreamableHttpService` (Host and
//! Origin validation, body limit, legacy sessions and stateless 2026-07-28 requests)
//! behind a layer that authenticates every request with the client's Arbiter key.

use crate::config::{HooksConfig, ListenConfig};
use crate::gateway::Gateway;
use crate::identity::{AuthError, Identities};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub fn router(
    listen: &ListenConfig,
    hooks: &HooksConfig,
    gateway: Gateway,
    ids: Arc<Identities>,
    stop: CancellationToken,
) -> Router {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(listen.allowed_hosts.clone())
        .with_allowed_origins(listen.allowed_origins.clone())
        // An empty list then refuses every request that carries an Origin.
        .enforce_origin_validation()
        .with_max_request_body_bytes(listen.max_request_bytes)
        .with_cancellation_token(stop);
    let gateway_for_hooks = gateway.clone();
    let docker =
        crate::docker::Interceptors::new(gateway.clone(), ids.clone(), hooks.docker.prices.clone());
    let service = StreamableHttpService::new(
        move || Ok(gateway.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let claude_code = Arc::new(crate::hooks::ClaudeCode::new(
        gateway_for_hooks,
        hooks.claude_code.prices.clone(),
    ));
    Router::new()
        .route_service(&listen.path, service)
        .route(
            "/hooks/claude-code",
            axum::routing::post(crate::hooks::claude_code).with_state(claude_code),
        )
        .layer(middleware::from_fn_with_state(ids, authenticate))
        // After the layer: Docker sends no Authorization, so these authenticate by the
        // key in their path (docker.rs).
        .merge(docker_routes(docker, listen.max_request_bytes))
}

fn docker_routes(hooks: crate::docker::Interceptors, max_body: usize) -> Router {
    Router::new()
        .route(
            "/hooks/docker/{key}/before",
            axum::routing::post(crate::docker::before),
        )
        .route(
            "/hooks/docker/{key}/after",
            axum::routing::post(crate::docker::after),
        )
        .with_state(hooks)
        // Larger bodies get 413; Docker cannot parse that as a result, so the call fails.
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
}

/// Every request, before rmcp sees it: the key names the caller or the request ends here.
async fn authenticate(
    State(ids): State<Arc<Identities>>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match ids.for_header(header).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => refusal(e),
    }
}

fn refusal(e: AuthError) -> Response {
    let status = match e {
        AuthError::Missing | AuthError::Refused => StatusCode::UNAUTHORIZED,
        AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
        AuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = (status, e.to_string()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}
