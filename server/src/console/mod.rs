//! The operator console (docs/console.md): server-rendered pages on their own HTTP
//! listener (`console.listen`), for the humans who approve, halt and audit.
//!
//! Identity works as on the gRPC surface: an API key, checked by the same
//! `PrincipalBook`, is exchanged for a server-side session (`session`); every request
//! looks the principal up again, and every change goes through the same role table
//! (`api::OPERATORS`, `auth::allows`) and the same engine call as the gRPC handler, so
//! it is audited with the signed-in principal and refused exactly as there. A change
//! also needs the session's CSRF token. Every asset is embedded (`assets`); the pages
//! run no inline script, under a strict Content-Security-Policy (`headers`).

// Handlers answer a refusal with the page that explains it: `Result<_, Response>` is
// the axum idiom, built once per request, so its size does not matter here.
#![allow(clippy::result_large_err)]

mod agents;
mod approvals;
mod assets;
mod audit;
mod budgets;
mod events;
mod halts;
mod headers;
mod policy;
mod session;
mod signin;
mod tls;
mod views;

use crate::auth::{self as authn, Access, Refusal};
use crate::config::ConsoleSettings;
use crate::domain::Principal;
use crate::engine::Engine;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use session::{Lifetimes, Session, Sessions, SignInLimiter};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How the console runs (from `console.*` settings).
#[derive(Debug, Clone)]
pub struct Options {
    pub lifetimes: Lifetimes,
    /// Mark the session cookie `Secure` (the console is reached over TLS).
    pub secure: bool,
    /// Serve HTTPS with this configuration (`console.tls`), else plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Options {
    /// `grpc_tls`: the gRPC listener's TLS, which `console.tls` serves with.
    pub fn from_settings(s: &ConsoleSettings, grpc_tls: Option<&rustls::ServerConfig>) -> Self {
        let tls = grpc_tls.filter(|_| s.tls).map(tls::config);
        Self {
            lifetimes: Lifetimes {
                idle: Duration::from_secs(s.idle_timeout_secs),
                max_age: Duration::from_secs(s.max_age_secs),
            },
            secure: tls.is_some()
                || s.public_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://")),
            tls,
        }
    }
}

/// The URL people open: `console.public_url` when set, else the bound address.
pub fn url(s: &ConsoleSettings, addr: SocketAddr) -> String {
    match &s.public_url {
        Some(u) => format!("{}/", u.trim_end_matches('/')),
        None if s.tls => format!("https://{addr}/"),
        None => format!("http://{addr}/"),
    }
}

pub(crate) struct Console {
    engine: Arc<Engine>,
    sessions: Sessions,
    limiter: SignInLimiter,
    views: views::Views,
    secure: bool,
}

type Shared = Arc<Console>;

/// Serves the console until the task is aborted (at shutdown).
pub async fn serve(listener: tokio::net::TcpListener, engine: Arc<Engine>, options: Options) {
    let console = Arc::new(Console {
        engine,
        sessions: Sessions::new(options.lifetimes),
        limiter: SignInLimiter::new(),
        views: views::Views::new(),
        secure: options.secure,
    });
    let app = router(console);
    if let Some(config) = options.tls {
        return tls::serve(listener, app, config).await;
    }
    if let Err(e) = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    {
        tracing::error!(error = %e, "the operator console stopped");
    }
}

fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/approvals") }))
        .route("/login", get(signin::page).post(signin::submit))
        .route("/login/certificate", post(signin::certificate))
        .route("/logout", post(signin::logout))
        .route("/approvals", get(approvals::page))
        .route("/approvals/list", get(approvals::list))
        .route("/approvals/{id}", get(approvals::link))
        .route("/approvals/{id}/decide", post(approvals::decide))
        .route("/halts", get(halts::page).post(halts::change))
        .route("/agents", get(agents::page))
        .route("/agents/{id}", get(agents::detail).post(agents::change))
        .route("/budgets", get(budgets::page))
        .route("/policy", get(policy::page))
        .route("/audit", get(audit::page))
        .route("/audit/list", get(audit::list))
        .route("/audit/verify", post(audit::verify))
        .route("/audit/entry/{seq}", get(audit::entry))
        .route("/audit/entry/{seq}/receipt", get(audit::receipt))
        .route("/events/approvals", get(events::approvals))
        .route("/events/audit", get(events::audit))
        .route("/assets/{name}", get(assets::serve))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(axum::middleware::from_fn(headers::secure))
        .with_state(console)
}

/// The signed-in caller of one request.
pub(crate) struct Caller {
    pub session_id: String,
    pub session: Session,
    pub principal: Principal,
    /// Development mode: no principals exist (the page shows a banner).
    pub dev: bool,
}

impl Caller {
    /// Whether the caller may change state (approve, halt, resume): the gRPC table.
    pub fn operates(&self) -> bool {
        authn::allows(&self.principal, &Access::Roles(crate::api::OPERATORS)).is_ok()
    }
}

impl Console {
    /// The caller, or the response that sends them to sign in.
    fn caller(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<Caller, Response> {
        let cookie =
            session::cookie_value(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()));
        let required = self.engine.auth_required();
        if !required && !peer.ip().is_loopback() {
            // Development mode is for this machine only (startup refuses a non-loopback
            // console then; this holds even behind a forwarding proxy on loopback).
            return Err(self.error_page(
                StatusCode::FORBIDDEN,
                "development mode (no principals) serves the console on loopback only",
            ));
        }
        let found = cookie
            .as_deref()
            .and_then(|id| Some((id.to_owned(), self.sessions.touch(id)?)));
        let Some((session_id, session)) = found else {
            return Err(self.to_sign_in(required));
        };
        let book = self.engine.principal_book();
        let principal = book
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .current(&session.principal);
        let Some(principal) = principal.filter(readable) else {
            // Revoked (or development mode ended): the session ends with it.
            self.sessions.remove(&session_id);
            return Err(self.to_sign_in(required));
        };
        Ok(Caller {
            session_id,
            session,
            principal,
            dev: !required,
        })
    }

    /// Where a caller without a session goes: the sign-in page, or, in development
    /// mode, a fresh session for the anonymous developer.
    fn to_sign_in(&self, required: bool) -> Response {
        if required {
            return Redirect::to("/login").into_response();
        }
        let id = self.sessions.create(&Principal::anonymous().name);
        (
            [(header::SET_COOKIE, session::set_cookie(&id, self.secure))],
            Redirect::to("/approvals"),
        )
            .into_response()
    }

    /// Checks a state change: the CSRF token, then the role. A refusal is audited
    /// before it is answered and changes nothing else.
    async fn may_change(
        &self,
        caller: &Caller,
        rpc: &'static str,
        csrf: &str,
    ) -> Result<(), Response> {
        let reason = if !caller.session.csrf_matches(csrf) {
            format!("{rpc}: the form's CSRF token is missing or wrong; reload the page and retry")
        } else if let Err(need) =
            authn::allows(&caller.principal, &Access::Roles(crate::api::OPERATORS))
        {
            format!(
                "{rpc} requires {need}; {} may only read",
                caller.principal.name
            )
        } else {
            return Ok(());
        };
        self.engine
            .record_refusal(Refusal {
                principal: caller.principal.name.clone(),
                rpc,
                reason: reason.clone(),
            })
            .await;
        Err(self.error_page(StatusCode::FORBIDDEN, &reason))
    }

    /// Checks that the caller may govern `agent` (`None`: a global target): a principal
    /// never lifts its own agent's halt, raises its trust or grants it consent
    /// (`Principal::governs`, as `api::refuse_self_governance`). A refusal is audited.
    async fn may_govern(
        &self,
        caller: &Caller,
        rpc: &'static str,
        agent: Option<&str>,
    ) -> Result<(), Response> {
        if caller.principal.governs(agent) {
            return Ok(());
        }
        let reason = match agent {
            Some(a) => format!(
                "{rpc}: {} acts for agent {a} and cannot govern it",
                caller.principal.name
            ),
            None => format!(
                "{rpc}: {} holds the agent role and cannot lift a global halt",
                caller.principal.name
            ),
        };
        self.engine
            .record_refusal(Refusal {
                principal: caller.principal.name.clone(),
                rpc,
                reason: reason.clone(),
            })
            .await;
        Err(self.error_page(StatusCode::FORBIDDEN, &reason))
    }

    fn error_page(&self, status: StatusCode, message: &str) -> Response {
        (status, self.views.error(message)).into_response()
    }
}

/// Roles that may use the console at all (an agent key cannot sign in).
fn readable(p: &Principal) -> bool {
    authn::allows(p, &Access::Roles(crate::api::READERS)).is_ok()
}

/// The client address axum hands every handler.
pub(crate) type Peer = ConnectInfo<SocketAddr>;

/// The connection's verified client certificate; absent on plain HTTP.
pub(crate) type Certificate = Option<axum::Extension<tls::ClientCertificate>>;
