//! Every socket the server listens on, bound during `build`, so a taken port, an
//! unsafe exposure or an unreadable secret stops the start before anything serves.

use crate::config::Settings;
use crate::engine::Engine;
use anyhow::Context;
use std::net::SocketAddr;
use tokio::net::TcpListener;

pub(super) struct Listeners {
    pub grpc: TcpListener,
    /// Where `grpc` is bound (the requested port, or the one the OS chose for 0).
    pub addr: SocketAddr,
    pub metrics: Option<TcpListener>,
    pub console: Option<TcpListener>,
    pub mcp_gateway: Option<arbiter_mcp_gateway::HttpGateway>,
}

impl Listeners {
    pub async fn bind(
        requested: SocketAddr,
        settings: &Settings,
        engine: &Engine,
        gateway_config: Option<arbiter_mcp_gateway::config::Config>,
    ) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(requested)
            .await
            .with_context(|| format!("binding {requested}"))?;
        let addr = grpc.local_addr()?;
        // A configured metrics port that cannot be bound stops the start: a missing
        // endpoint would otherwise only show up as a silent gap in monitoring.
        let metrics = match settings.metrics.addr().map_err(anyhow::Error::msg)? {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding metrics.listen {a}"))?,
            ),
            None => None,
        };
        // The console too: an operator who was told the URL must find it there.
        let console = match settings.console.addr().map_err(anyhow::Error::msg)? {
            Some(a) => {
                super::exposure::console_exposure_check(
                    a,
                    engine.auth_required(),
                    &settings.console,
                )
                .map_err(anyhow::Error::msg)?;
                Some(
                    TcpListener::bind(a)
                        .await
                        .with_context(|| format!("binding console.listen {a}"))?,
                )
            }
            None => None,
        };
        // It calls the gRPC listener just bound.
        let mcp_gateway = match (gateway_config, &settings.mcp_gateway.config) {
            (Some(mut config), Some(path)) => {
                // This server's console is where its approvals are decided, unless the
                // gateway's file names another address for it.
                if config.console_url.is_none() {
                    config.console_url = settings.console.public_url.clone();
                }
                Some(crate::mcp_gateway::bind(config, path, addr, &settings.server.tls).await?)
            }
            _ => None,
        };
        Ok(Self {
            grpc,
            addr,
            metrics,
            console,
            mcp_gateway,
        })
    }
}

pub(super) fn addr_of(listener: Option<&TcpListener>) -> Option<SocketAddr> {
    listener.and_then(|l| l.local_addr().ok())
}
