//! Follows the policy file: a valid change is installed (and audited), an invalid one
//! is rejected (and audited) while the previous bundle keeps serving. It lives at the
//! edge because it bridges the file system and the metrics to the engine.

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::policy::loader;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

pub(super) fn spawn(
    engine: Arc<Engine>,
    path: std::path::PathBuf,
    version: String,
    poll: Duration,
    metrics: Metrics,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = loader::watch(path.clone(), version, poll);
        while let Some(change) = changes.recv().await {
            match change {
                loader::Reload::Valid(policy) => {
                    let version = policy.version.clone();
                    if version == engine.policy().version {
                        // Already adopted from another replica's publication.
                        tracing::info!(%version, "policy file changed to the bundle already served");
                        continue;
                    }
                    match engine.install_policy(Arc::from(policy)).await {
                        Ok(seq) => {
                            metrics.record_policy_reload(true);
                            tracing::info!(%version, audit_seq = seq, "policy reloaded")
                        }
                        Err(e) => {
                            // Not serving the new bundle: for operators that is a rejection.
                            metrics.record_policy_reload(false);
                            tracing::error!(error = %e, "policy reload could not be recorded; the old policy keeps serving")
                        }
                    }
                }
                loader::Reload::Invalid { version, error } => {
                    metrics.record_policy_reload(false);
                    tracing::error!(%version, error = %error, "policy change rejected; the previous policy keeps serving");
                    if let Err(e) = engine
                        .reject_policy(&path.display().to_string(), &version, &error.to_string())
                        .await
                    {
                        tracing::error!(error = %e, "could not record the policy rejection");
                    }
                }
            }
        }
    })
}
