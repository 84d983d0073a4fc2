//! Server TLS: reads and checks the certificate, key and client CA named in
//! `server.tls`, before anything is served. Every problem names the setting and the
//! file, and any problem stops the start: a server configured for TLS never falls
//! back to plaintext.

use crate::config::{ClientAuth, TlsSettings};
use anyhow::{anyhow, bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// A handshake that takes longer is dropped, so half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The checked TLS setup, ready for tonic.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: ServerTlsConfig,
    pub client_auth: ClientAuth,
    /// The same setup as a rustls config, for the console's listener (`console.tls`).
    pub rustls: Arc<ServerConfig>,
}

/// `None` when TLS is off (no `server.tls.cert_file`).
pub fn load(settings: &TlsSettings) -> anyhow::Result<Option<ServerTls>> {
    let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
        // Settings::validate refuses one without the other.
        return Ok(None);
    };
    let client_auth = settings.client_auth().map_err(anyhow::Error::msg)?;
    let cert_pem = read("server.tls.cert_file", cert_file)?;
    let key_pem = read("server.tls.key_file", key_file)?;
    let chain = certificates("server.tls.cert_file", cert_file, &cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow!(
            "server.tls.key_file: {} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            key_file.display()
        )
    })?;

    // tonic builds its own rustls config from the same PEM; building one here first
    // turns a mismatched key or a useless CA into a start-up error with names in it.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(&cert_pem, &key_pem))
        .timeout(HANDSHAKE_TIMEOUT);
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let ca_file = settings.client_ca_file.as_ref().ok_or_else(|| {
                anyhow!("server.tls.client_ca_file: needed when server.tls.client_auth is {client_auth}")
            })?;
            let ca_pem = read("server.tls.client_ca_file", ca_file)?;
            let mut roots = RootCertStore::empty();
            for (i, ca) in certificates("server.tls.client_ca_file", ca_file, &ca_pem)?
                .into_iter()
                .enumerate()
            {
                roots.add(ca).map_err(|e| {
                    anyhow!(
                        "server.tls.client_ca_file: {} certificate {} is not a usable CA certificate: {e}",
                        ca_file.display(),
                        i + 1
                    )
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| anyhow!("server.tls.client_ca_file: {}: {e}", ca_file.display()))?;
            config = config
                .client_ca_root(Certificate::from_pem(&ca_pem))
                .client_auth_optional(client_auth == ClientAuth::Optional);
            builder.with_client_cert_verifier(verifier)
        }
    };
    let rustls = builder.with_single_cert(chain, key).map_err(|e| {
        anyhow!(
            "server.tls.key_file: {} does not fit the certificate in server.tls.cert_file {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(Some(ServerTls {
        config,
        client_auth,
        rustls: Arc::new(rustls),
    }))
}

fn read(field: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow!("{field}: cannot read {}: {e}", path.display()))
}

fn certificates(
    field: &str,
    path: &Path,
    pem: &[u8],
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{field}: {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{field}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    for (i, der) in certs.iter().enumerate() {
        // rustls checks the chain only at handshake time; a broken certificate should
        // stop the start instead.
        use x509_cert::der::Decode;
        x509_cert::Certificate::from_der(der.as_ref()).map_err(|e| {
            anyhow!(
                "{field}: {} certificate {} is not a valid X.509 certificate: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(certs)
}
