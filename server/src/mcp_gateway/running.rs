//! The in-process gateway's task. Its end while the server runs is a failure: the
//! server then shuts down and exits non-zero, so a PDP never keeps serving while the
//! gateway in front of it is silently gone (a restart brings both back).

use futures::future::BoxFuture;
use std::future::Future;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Running {
    /// Dropped (or sent) to ask the gateway to stop.
    stop: Option<oneshot::Sender<()>>,
    /// None once `failed` has seen it end.
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Runs `serve` with the signal that asks it to stop.
    pub fn spawn<S, F>(serve: S) -> Self
    where
        S: FnOnce(BoxFuture<'static, ()>) -> F,
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        // Resolves on a send and when the sender is dropped: dropping `Running` stops it.
        let task = tokio::spawn(serve(Box::pin(async move {
            let _ = stopped.await;
        })));
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Resolves with why the gateway ended, if it ends before `stop`; pending otherwise.
    /// Cancel-safe, for a `select!` against the shutdown signal.
    pub async fn failed(&mut self) -> anyhow::Error {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let ended = task.await;
        self.task = None;
        match ended {
            Ok(Ok(())) => anyhow::anyhow!("it stopped serving"),
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("its task ended abnormally: {e}"),
        }
    }

    /// Stops it: no new MCP requests; those in flight (which still reach the gRPC
    /// listener, stopped after this) get until `grace`, then are cut.
    pub async fn stop(mut self, grace: Duration) {
        drop(self.stop.take());
        let Some(mut task) = self.task.take() else {
            return;
        };
        match tokio::time::timeout(grace, &mut task).await {
            Ok(Ok(Ok(()))) => tracing::info!("shutdown: the MCP gateway stopped"),
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %format!("{e:#}"), "shutdown: the MCP gateway stopped with an error")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shutdown: the MCP gateway's task ended abnormally")
            }
            Err(_) => {
                tracing::warn!("shutdown: grace period over; cutting the MCP requests still open");
                task.abort();
                let _ = task.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_end_before_stop_is_a_failure_and_stop_ends_a_serving_gateway() {
        let mut ended = Running::spawn(|_stop| async { anyhow::bail!("listener gone") });
        assert_eq!(ended.failed().await.to_string(), "listener gone");
        ended.stop(Duration::from_secs(1)).await;

        let mut serving = Running::spawn(|stop| async move {
            stop.await;
            Ok(())
        });
        let quiet = tokio::time::timeout(Duration::from_millis(50), serving.failed()).await;
        assert!(quiet.is_err(), "a serving gateway has not failed");
        tokio::time::timeout(Duration::from_secs(5), serving.stop(Duration::from_secs(1)))
            .await
            .expect("stop ends it");
    }

    #[tokio::test]
    async fn a_gateway_that_ignores_stop_is_cut_after_the_grace() {
        let hung = Running::spawn(|_stop| std::future::pending::<anyhow::Result<()>>());
        tokio::time::timeout(Duration::from_secs(5), hung.stop(Duration::from_millis(20)))
            .await
            .expect("cut after the grace");
    }
}
