//! The in-process gateway's configuration: its `gateway.yaml`, checked as for
//! `arbiter mcp-gateway` and against this server's TLS, then pointed at this server.

use crate::config::{ClientAuth, TlsSettings};
use crate::domain::TlsIdentity;
use anyhow::{anyhow, bail};
use arbiter_mcp_gateway::config::{ArbiterConfig, Config, Placement};
use arbiter_mcp_gateway::HttpGateway;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// Reads `path` (`mcp_gateway.config`) and checks that its `arbiter` section fits how
/// this server serves gRPC. Every error names the setting, the file and the field, and
/// stops the start: the server never runs with half a gateway.
pub fn load(path: &Path, tls: &TlsSettings) -> anyhow::Result<Config> {
    let config = Config::load_for(path, Placement::InServer)
        .map_err(|e| anyhow!("mcp_gateway.config: {e}"))?;
    let client_auth = if tls.enabled() {
        Some(tls.client_auth().map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let problems = tls_problems(&config.arbiter, client_auth);
    if !problems.is_empty() {
        bail!(
            "mcp_gateway.config: {}: {}",
            path.display(),
            problems.join("; ")
        );
    }
    Ok(config)
}

/// What the loopback connection needs given `server_tls` (None: TLS off). A TLS setting
/// the connection would not use is refused too, so the file says what really happens.
fn tls_problems(a: &ArbiterConfig, server_tls: Option<ClientAuth>) -> Vec<String> {
    let Some(client_auth) = server_tls else {
        return [
            (a.tls_ca.is_some(), "arbiter.tls_ca"),
            (a.tls_domain.is_some(), "arbiter.tls_domain"),
            (a.tls_cert.is_some(), "arbiter.tls_cert"),
        ]
        .into_iter()
        .filter(|(set, _)| *set)
        .map(|(_, field)| {
            format!(
                "{field}: server.tls is off, so the gateway calls this server in plaintext on \
                 loopback; remove it"
            )
        })
        .collect();
    };
    let mut out = Vec::new();
    if a.tls_ca.is_none() {
        out.push(
            "arbiter.tls_ca: needed because server.tls is on: the CA that signed \
             server.tls.cert_file (the gateway calls this server over TLS on loopback)"
                .to_owned(),
        );
    }
    if client_auth == ClientAuth::Required && a.tls_cert.is_none() {
        out.push(
            "arbiter.tls_cert: needed because server.tls.client_auth is required: a client \
             certificate from server.tls.client_ca_file's CA, bound to no principal"
                .to_owned(),
        );
    }
    out
}

/// Points the gateway at this server's gRPC listener `grpc` and binds its own
/// listeners, before the server announces itself.
pub async fn bind(
    mut config: Config,
    path: &Path,
    grpc: SocketAddr,
    tls: &TlsSettings,
) -> anyhow::Result<HttpGateway> {
    let scheme = if tls.enabled() { "https" } else { "http" };
    config.arbiter.endpoint = Some(format!("{scheme}://{}", loopback(grpc)));
    let named = async {
        if let (Some(cert), None) = (&tls.cert_file, &config.arbiter.tls_domain) {
            config.arbiter.tls_domain = Some(certificate_name(cert)?);
        }
        HttpGateway::bind(config).await
    };
    named
        .await
        .map_err(|e| anyhow!("mcp_gateway.config: {}: {e:#}", path.display()))
}

/// Where a connection from inside this process reaches `addr`: loopback when the server
/// listens on every address, else the one address it listens on.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The name the loopback TLS connection verifies when the file names none: the first
/// DNS name of the server's own certificate (the endpoint's host is an IP address).
fn certificate_name(cert_file: &Path) -> anyhow::Result<String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let leaf = CertificateDer::pem_file_iter(cert_file)
        .ok()
        .and_then(|mut certs| certs.next())
        .and_then(Result::ok)
        .ok_or_else(|| {
            anyhow!(
                "server.tls.cert_file: {} holds no certificate",
                cert_file.display()
            )
        })?;
    let ids = crate::auth::certificate_identities(leaf.as_ref()).map_err(anyhow::Error::msg)?;
    ids.into_iter()
        .find_map(|id| match id {
            TlsIdentity::Dns(name) => Some(name),
            _ => None,
        })
        .ok_or_else(|| {
            anyhow!(
                "arbiter.tls_domain: needed because server.tls.cert_file {} names no DNS host \
                 (wildcards do not count) for the loopback connection to verify; set a name \
                 the certificate covers",
                cert_file.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arbiter(yaml: &str) -> ArbiterConfig {
        let text = format!("arbiter: {yaml}\nupstreams: [{{name: a, stdio: {{command: x}}}}]\n");
        Config::parse_for(&text, Placement::InServer)
            .unwrap()
            .arbiter
    }

    #[test]
    fn plaintext_refuses_tls_pieces_and_tls_asks_for_its_ca_and_client_certificate() {
        let err = tls_problems(&arbiter("{tls_ca: ca.pem, tls_domain: a}"), None).join("; ");
        assert!(err.contains("arbiter.tls_ca: server.tls is off"), "{err}");
        assert!(
            err.contains("arbiter.tls_domain: server.tls is off"),
            "{err}"
        );
        assert!(tls_problems(&arbiter("{}"), None).is_empty());

        let err = tls_problems(&arbiter("{}"), Some(ClientAuth::Required)).join("; ");
        assert!(
            err.contains("arbiter.tls_ca: needed because server.tls is on"),
            "{err}"
        );
        assert!(err.contains("arbiter.tls_cert: needed because"), "{err}");
        let optional = tls_problems(&arbiter("{tls_ca: ca.pem}"), Some(ClientAuth::Optional));
        assert!(optional.is_empty(), "{optional:?}");
    }

    #[test]
    fn every_address_is_reached_on_loopback_and_one_address_as_itself() {
        let at = |s: &str| loopback(s.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:50051"), "127.0.0.1:50051");
        assert_eq!(at("[::]:50051"), "[::1]:50051");
        assert_eq!(at("10.1.2.3:7"), "10.1.2.3:7");
    }
}
