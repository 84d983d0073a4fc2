//! Who may reach this server, checked before anything listens, and said in the log:
//! off loopback every caller must be authenticated.

use crate::config::ClientAuth;
use crate::engine::Engine;
use crate::tls::ServerTls;
use std::net::SocketAddr;

/// Whether this server may listen on `addr`. Off loopback every caller must be
/// authenticated: principals must exist, and if none of them holds an API key, callers
/// can only be told apart by client certificates, so those must be required.
pub(super) fn exposure_check(
    addr: SocketAddr,
    auth_required: bool,
    key_principals: bool,
    client_auth: ClientAuth,
) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !auth_required {
        return Err(format!(
            "refusing to serve on {addr} without authentication: no principals exist yet. Start on \
             127.0.0.1, create an admin with `arbiter principals create NAME --role admin` (or bind one \
             to a client certificate with --tls-identity), then restart on {addr}."
        ));
    }
    if !key_principals && client_auth != ClientAuth::Required {
        return Err(format!(
            "refusing to serve on {addr}: no active principal has an API key, so callers can only be \
             identified by client certificates, but server.tls.client_auth is {client_auth}. Set it to \
             \"required\" (with server.tls.client_ca_file), or create an API-key principal."
        ));
    }
    Ok(())
}

/// The console accepts API keys in a form: off loopback it needs principals (there is
/// no development mode off this machine) and should sit behind TLS.
pub(super) fn console_exposure_check(
    addr: SocketAddr,
    auth_required: bool,
    console: &crate::config::ConsoleSettings,
) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !auth_required {
        return Err(format!(
            "refusing to serve the console on {addr} without authentication: no principals exist \
             yet. Keep console.listen on 127.0.0.1 or create principals first."
        ));
    }
    if !console.tls
        && !console
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    {
        tracing::warn!(
            "the console on {addr} is plain HTTP: API keys typed into the sign-in form cross the \
             network in clear. Put a TLS proxy in front and set console.public_url to its https:// URL."
        );
    }
    Ok(())
}

/// Checks the gRPC address against the engine's principals, then says in the log how
/// callers are authenticated and whether their traffic is encrypted.
pub(super) fn check_and_announce(
    requested: SocketAddr,
    engine: &Engine,
    tls: Option<&ServerTls>,
) -> anyhow::Result<()> {
    let client_auth = tls.map_or(ClientAuth::None, |t| t.client_auth);
    let (key_principals, tls_principals) = engine.credential_kinds();
    exposure_check(
        requested,
        engine.auth_required(),
        key_principals,
        client_auth,
    )
    .map_err(anyhow::Error::msg)?;
    if engine.auth_required() {
        tracing::info!(
            "authentication on: every call needs an API key (`authorization: Bearer <key>`) \
             or a client certificate bound to a principal"
        );
    } else {
        tracing::warn!(
            "DEVELOPMENT MODE: no principals exist, so every caller on this loopback address has every role. \
             Create one with `arbiter principals create NAME --role admin` to switch authentication on."
        );
    }
    if tls_principals && client_auth == ClientAuth::None {
        tracing::warn!(
            "principals bound to client certificates cannot authenticate: server.tls.client_auth is none"
        );
    }
    match tls {
        Some(t) => tracing::info!(client_auth = %t.client_auth, "TLS on"),
        None if !requested.ip().is_loopback() => tracing::warn!(
            "TLS is off on {requested}: API keys and decisions cross the network in clear. \
             Set server.tls.cert_file and server.tls.key_file."
        ),
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_serving_needs_principals_and_keys_or_required_mtls() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        // Loopback: always, development mode included.
        assert!(exposure_check(lo, false, false, ClientAuth::None).is_ok());
        // No principals at all: never off loopback, whatever TLS says.
        let err = exposure_check(any, false, false, ClientAuth::Required).unwrap_err();
        assert!(err.contains("without authentication"), "{err}");
        // API-key principals: allowed with or without mTLS.
        assert!(exposure_check(any, true, true, ClientAuth::None).is_ok());
        // Certificate principals only: mTLS must be required.
        assert!(exposure_check(any, true, false, ClientAuth::Required).is_ok());
        for mode in [ClientAuth::None, ClientAuth::Optional] {
            let err = exposure_check(any, true, false, mode).unwrap_err();
            assert!(err.contains("server.tls.client_auth is"), "{err}");
        }
    }
}
