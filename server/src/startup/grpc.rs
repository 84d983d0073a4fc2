//! The gRPC server: the four API services behind authentication, health, reflection
//! (v1 and v1alpha), the per-RPC span and metrics layer, and TLS when configured.

use crate::api::{admin::AdminApi, audit::AuditApi, control::ControlApi, decision::DecisionApi};
use crate::auth::Authenticator;
use crate::engine::Engine;
use crate::metrics::Metrics;
use anyhow::Context;
use arbiter_proto::v1::{
    admin_service_server::AdminServiceServer, audit_service_server::AuditServiceServer,
    control_service_server::ControlServiceServer, decision_service_server::DecisionServiceServer,
};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService as Authed;

/// What the API services are built from.
pub(super) struct Services {
    pub engine: Arc<Engine>,
    pub metrics: Metrics,
    pub auth: Authenticator,
    pub max_message_bytes: usize,
}

/// Serves every service on `listener` until `stop_accepting` resolves, then waits for
/// the open connections (the caller bounds that wait).
pub(super) fn serve(
    services: Services,
    tls: Option<crate::tls::ServerTls>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    listener: TcpListener,
    stop_accepting: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = Result<(), tonic::transport::Error>>> {
    let Services {
        engine,
        metrics,
        auth,
        max_message_bytes: max,
    } = services;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(arbiter_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(arbiter_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut server = tonic::transport::Server::builder()
        .trace_fn(crate::telemetry::rpc_span)
        .layer(crate::metrics::RpcLayer(metrics.clone()));
    if let Some(tls) = tls {
        server = server
            .tls_config(tls.config)
            .context("server.tls: building the TLS acceptor")?;
    }
    Ok(server
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(Authed::new(
            DecisionServiceServer::new(DecisionApi {
                engine: engine.clone(),
                metrics,
            })
            .max_decoding_message_size(max),
            auth.clone(),
        ))
        .add_service(Authed::new(
            ControlServiceServer::new(ControlApi {
                engine: engine.clone(),
            })
            .max_decoding_message_size(max),
            auth.clone(),
        ))
        .add_service(Authed::new(
            AdminServiceServer::new(AdminApi {
                engine: engine.clone(),
            })
            .max_decoding_message_size(max),
            auth.clone(),
        ))
        .add_service(Authed::new(
            AuditServiceServer::new(AuditApi { engine }).max_decoding_message_size(max),
            auth,
        ))
        .serve_with_incoming_shutdown(
            // A reply's trailers go out in a second small write; without TCP_NODELAY
            // Nagle's algorithm holds it for the client's delayed ACK (~40 ms).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop_accepting,
        ))
}
