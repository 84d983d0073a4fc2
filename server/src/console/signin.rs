//! Sign-in with an API key (operator, admin or auditor), and logout. The key is checked
//! by the same `PrincipalBook` as a gRPC call and never stored: the browser gets a fresh
//! random session id instead. Failed attempts are limited per client address and
//! audited like the gRPC interceptor's refusals.

use super::{session, Certificate, Peer, Shared};
use crate::auth::{CertificateMatch, Refusal};
use crate::domain::Principal;
use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;

use serde::Deserialize;

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    key: String,
}

#[derive(Deserialize)]
pub struct Logout {
    #[serde(default)]
    csrf: String,
}

fn login_page(
    c: &Shared,
    status: StatusCode,
    error: Option<&str>,
    certificate: Option<&str>,
) -> Response {
    (
        status,
        c.views.render(
            "login.html",
            context! { error => error, certificate => certificate, signed_in => false, dev => false, nav => "", flash => false },
        ),
    )
        .into_response()
}

/// The principal the connection's verified client certificate is bound to, or why
/// it cannot sign in; `Ok(None)` when no certificate was presented.
fn certificate_principal(c: &Shared, cert: &Certificate) -> Result<Option<Principal>, String> {
    let Some(ids) = cert.as_ref().and_then(|e| e.0 .0.clone()) else {
        return Ok(None);
    };
    let ids = ids.map_err(|e| format!("the client certificate cannot be read: {e}"))?;
    let book = c.engine.principal_book();
    let found = book
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .lookup_certificate(&ids);
    match found {
        CertificateMatch::Principal(p) if super::readable(&p) => Ok(Some(p)),
        CertificateMatch::Principal(p) => Err(format!(
            "console sign-in requires one of the roles operator, admin, auditor; {} has {}",
            p.name,
            p.roles
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        CertificateMatch::Unknown(id) => Err(format!(
            "no active principal is bound to the client certificate{}",
            id.map(|i| format!(" ({i})")).unwrap_or_default()
        )),
        CertificateMatch::Ambiguous(names) => Err(format!(
            "the client certificate's identities are bound to several principals: {}",
            names.join(", ")
        )),
    }
}

pub async fn page(
    State(c): State<Shared>,
    peer: Peer,
    cert: Certificate,
    headers: HeaderMap,
) -> Response {
    match c.caller(&headers, peer.0) {
        Ok(_) => Redirect::to("/approvals").into_response(),
        Err(_) if !c.engine.auth_required() => c.to_sign_in(false),
        Err(_) => {
            let by_cert = certificate_principal(&c, &cert).ok().flatten();
            login_page(
                &c,
                StatusCode::OK,
                None,
                by_cert.as_ref().map(|p| p.name.as_str()),
            )
        }
    }
}

/// `POST /login/certificate`: signs in the principal bound to the connection's
/// verified client certificate (`console.tls` with `server.tls.client_auth`), with no
/// key; refused, audited and rate-limited like a wrong key otherwise.
pub async fn certificate(State(c): State<Shared>, peer: Peer, cert: Certificate) -> Response {
    let ip = peer.0.ip();
    if !c.engine.auth_required() {
        return c.to_sign_in(false);
    }
    if !c.limiter.allowed(ip) {
        return login_page(
            &c,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed sign-ins from this address; wait a minute and retry."),
            None,
        );
    }
    let p = match certificate_principal(&c, &cert) {
        Ok(Some(p)) => p,
        outcome => {
            let reason = outcome
                .err()
                .unwrap_or_else(|| "no client certificate was presented on this connection".into());
            c.limiter.failed(ip);
            c.engine
                .record_refusal(Refusal {
                    principal: "unauthenticated".to_owned(),
                    rpc: "Console.SignIn",
                    reason: reason.clone(),
                })
                .await;
            return login_page(&c, StatusCode::UNAUTHORIZED, Some(&reason), None);
        }
    };
    let id = c.sessions.create(&p.name);
    tracing::info!(principal = %p.name, %ip, "console sign-in with a client certificate");
    (
        [(header::SET_COOKIE, session::set_cookie(&id, c.secure))],
        Redirect::to("/approvals"),
    )
        .into_response()
}

pub async fn submit(State(c): State<Shared>, peer: Peer, Form(f): Form<SignIn>) -> Response {
    let ip = peer.0.ip();
    if !c.engine.auth_required() {
        return c.to_sign_in(false);
    }
    if !c.limiter.allowed(ip) {
        return login_page(
            &c,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed sign-ins from this address; wait a minute and retry."),
            None,
        );
    }
    let key = f.key.trim();
    let found = {
        let book = c.engine.principal_book();
        let book = book.read().unwrap_or_else(|p| p.into_inner());
        (!key.is_empty() && key.len() <= 256)
            .then(|| book.lookup(key))
            .flatten()
    };
    let refusal =
        match &found {
            None => Some((
                "unauthenticated".to_owned(),
                "unknown or revoked API key".to_owned(),
            )),
            Some(p) if !super::readable(p) => {
                Some((
                    p.name.clone(),
                    format!(
                "console sign-in requires one of the roles operator, admin, auditor; {} has {}",
                p.name,
                p.roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
            ),
                ))
            }
            Some(_) => None,
        };
    if let Some((principal, reason)) = refusal {
        c.limiter.failed(ip);
        c.engine
            .record_refusal(Refusal {
                principal,
                rpc: "Console.SignIn",
                reason: reason.clone(),
            })
            .await;
        return login_page(&c, StatusCode::UNAUTHORIZED, Some(&reason), None);
    }
    let p = found.expect("checked above");
    let id = c.sessions.create(&p.name);
    tracing::info!(principal = %p.name, %ip, "console sign-in");
    (
        [(header::SET_COOKIE, session::set_cookie(&id, c.secure))],
        Redirect::to("/approvals"),
    )
        .into_response()
}

/// Ends the session (CSRF-checked, so another site cannot sign a user out).
pub async fn logout(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<Logout>,
) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    if !caller.session.csrf_matches(&f.csrf) {
        return c.error_page(
            StatusCode::FORBIDDEN,
            "logout: the form's CSRF token is missing or wrong",
        );
    }
    c.sessions.remove(&caller.session_id);
    tracing::info!(principal = %caller.principal.name, "console sign-out");
    (
        [(header::SET_COOKIE, session::clear_cookie(c.secure))],
        Redirect::to("/login"),
    )
        .into_response()
}
