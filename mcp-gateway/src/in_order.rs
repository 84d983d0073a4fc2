//! An upstream's log messages and progress reports, handed on in the order the upstream
//! sent them.
//!
//! rmcp runs every incoming notification's handler on a task of its own, so two
//! messages read one after the other can reach `ClientHandler` in either order: a
//! client saw an upstream's "waiting" before its "starting", and progress could appear
//! to go backwards (MCP requires it to increase). The transport's `receive` is the one
//! place messages are still in order (rmcp calls it sequentially), so this wrapper
//! takes them there: a log message is routed at once (`LogRoutes::dispatch` does not
//! wait) and not passed on; a progress report is queued for one forwarding task, which
//! delivers reports one at a time, and still passed on, because rmcp's request timeouts
//! restart on progress.

use crate::logs::LogRoutes;
use rmcp::handler::client::progress::ProgressDispatcher;
use rmcp::model::{JsonRpcMessage, ProgressNotificationParam, ServerNotification};
use rmcp::service::{RoleClient, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Progress reports waiting for the forwarder before further ones are dropped (a
/// report is advisory; a slow client must not stall the upstream's other replies).
const PROGRESS_QUEUE: usize = 256;

/// Where an upstream connection's ordered notifications go; one per upstream, shared
/// by its successive connections.
#[derive(Clone)]
pub struct Ordered {
    logs: Arc<LogRoutes>,
    progress: mpsc::Sender<ProgressNotificationParam>,
}

impl Ordered {
    /// Starts the progress forwarder, which lives as long as any `Ordered` clone does.
    pub fn new(logs: Arc<LogRoutes>, progress: ProgressDispatcher) -> Self {
        let (tx, mut rx) = mpsc::channel::<ProgressNotificationParam>(PROGRESS_QUEUE);
        tokio::spawn(async move {
            while let Some(report) = rx.recv().await {
                progress.handle_notification(report).await;
            }
        });
        Self { logs, progress: tx }
    }

    /// `transport`, with its log messages and progress reports taken in order.
    pub fn wrap<T: Transport<RoleClient>>(&self, transport: T) -> InOrder<T> {
        InOrder {
            inner: transport,
            ordered: self.clone(),
        }
    }

    /// Whether rmcp should still see `message`.
    fn take(&self, message: &RxJsonRpcMessage<RoleClient>) -> bool {
        let JsonRpcMessage::Notification(n) = message else {
            return true;
        };
        match &n.notification {
            #[allow(deprecated)] // logging: see logs.rs
            ServerNotification::LoggingMessageNotification(log) => {
                self.logs.dispatch(log.params.clone());
                false
            }
            ServerNotification::ProgressNotification(report) => {
                if self.progress.try_send(report.params.clone()).is_err() {
                    tracing::debug!("progress report queue full; report dropped");
                }
                true
            }
            _ => true,
        }
    }
}

/// A client transport whose ordered notifications `Ordered` takes as they are read.
pub struct InOrder<T> {
    inner: T,
    ordered: Ordered,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for InOrder<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            let message = self.inner.receive().await?;
            if self.ordered.take(&message) {
                return Some(message);
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
