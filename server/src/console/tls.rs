//! The console over TLS (`console.tls`): the gRPC listener's certificate and client-CA
//! rules (`server.tls`), so a principal bound to a client certificate signs in with it
//! (`signin::certificate`) exactly as it authenticates on gRPC. Each connection is
//! handshaken here and served by hyper; the verified certificate's identities ride on
//! every request of that connection as a [`ClientCertificate`] extension.

use crate::auth::certificate_identities;
use crate::domain::TlsIdentity;
use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A handshake that takes longer is dropped, so half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the TLS layer verified about the client: `None` without a certificate; the
/// identities of a certificate that chains to `server.tls.client_ca_file`, or why
/// they could not be read.
#[derive(Clone, Debug)]
pub struct ClientCertificate(pub Option<Result<Vec<TlsIdentity>, String>>);

/// The rustls configuration for the console: gRPC's, speaking HTTP/1.1 and HTTP/2.
pub fn config(grpc: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut config = grpc.clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves `app` over TLS until the task is aborted.
pub async fn serve(listener: TcpListener, app: Router, config: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait, never spin.
                tracing::warn!(error = %e, "the console cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "console TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| certificate_identities(leaf.as_ref()));
            let app = app
                .layer(Extension(ClientCertificate(certificate)))
                .layer(Extension(ConnectInfo(peer)));
            let service = TowerToHyperService::new(app);
            if let Err(e) = Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "console connection ended");
            }
        });
    }
}
