//! Which policy bundle is served. A bundle loaded here (at start or on a file change)
//! is recorded with its bytes; on a shared database that record is the publication,
//! and every other replica adopts the newest published bundle within a second
//! (`refresh_control`), so one file change reaches all of them.

use super::{Engine, EngineError};
use crate::audit::EntryDraft;
use crate::policy::{compile, CompiledPolicy};
use crate::store::{PublishedPolicy, StateOp, StoreError};
use serde_json::json;
use std::sync::Arc;

/// What adopting the newest published bundle did.
#[derive(Debug, PartialEq, Eq)]
pub enum Adoption {
    /// This replica already serves it (or nothing is published).
    Current,
    /// Now serving this version.
    Adopted(String),
    /// It did not compile here (a newer server's bundle?); the current one keeps serving.
    Refused(String),
}

impl Engine {
    /// Serves a new bundle and records that it was loaded. A loaded file is recorded
    /// with its bytes (its publication to other replicas); the built-in empty policy is
    /// not, so a replica started without a bundle never turns the others to deny-all.
    pub async fn install_policy(&self, policy: Arc<CompiledPolicy>) -> Result<u64, EngineError> {
        let now = self.now_ms();
        let draft = EntryDraft {
            ts_ms: now,
            kind: "policy.load".into(),
            agent_id: String::new(),
            session_id: String::new(),
            outcome: "accepted".into(),
            body: json!({"version": policy.version, "source": policy.source, "name": policy.name})
                .into(),
        };
        let op = StateOp::PolicyLoad {
            version: policy.version.clone(),
            source: policy.source.clone(),
            loaded_ms: now,
            accepted: true,
            error: String::new(),
            bundle: (!policy.is_builtin()).then(|| policy.bundle.clone()),
        };
        let seq = self.append(draft, vec![op]).await?;
        self.policy.store(policy);
        Ok(seq)
    }

    /// Records a bundle that failed validation; the current one keeps serving.
    pub async fn reject_policy(
        &self,
        source: &str,
        version: &str,
        error: &str,
    ) -> Result<u64, EngineError> {
        let now = self.now_ms();
        let draft = EntryDraft {
            ts_ms: now,
            kind: "policy.rejected".into(),
            agent_id: String::new(),
            session_id: String::new(),
            outcome: "rejected".into(),
            body: json!({"version": version, "source": source, "error": error, "serving": self.policy().version}).into(),
        };
        let op = StateOp::PolicyLoad {
            version: version.to_owned(),
            source: source.to_owned(),
            loaded_ms: now,
            accepted: false,
            error: error.to_owned(),
            bundle: None,
        };
        self.append(draft, vec![op]).await
    }

    /// Serves the newest bundle published on the shared database if it differs from
    /// the one served now. Writes no audit entry: the publication is the record, and
    /// every decision names the version it was made under.
    pub(super) async fn adopt_published_policy(&self) -> Result<Adoption, StoreError> {
        let serving = self.policy.load_full();
        let Some(published) = self.store.published_policy().await? else {
            return Ok(Adoption::Current);
        };
        if published.version == serving.version {
            return Ok(Adoption::Current);
        }
        let refused = self
            .refused_policy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if refused.as_deref() == Some(published.version.as_str()) {
            // Already reported; recompiling every second would only repeat the error.
            return Ok(Adoption::Refused(published.version));
        }
        match compile_published(&published) {
            Ok(policy) => {
                let version = policy.version.clone();
                // Only over the bundle compared above: a load that landed meanwhile on
                // this replica is newer than what was read, and wins.
                let prev = self.policy.compare_and_swap(&serving, Arc::new(policy));
                Ok(if Arc::ptr_eq(&prev, &serving) {
                    Adoption::Adopted(version)
                } else {
                    Adoption::Current
                })
            }
            Err(e) => {
                tracing::error!(
                    version = %published.version,
                    source = %published.source,
                    error = %e,
                    serving = %serving.version,
                    "the policy bundle published by another replica does not compile here; \
                     the current one keeps serving"
                );
                *self
                    .refused_policy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(published.version.clone());
                Ok(Adoption::Refused(published.version))
            }
        }
    }
}

/// Compiles a stored bundle. Its version is the hash of the same bytes, so it matches
/// the version the publishing replica recorded.
pub fn compile_published(
    p: &PublishedPolicy,
) -> Result<CompiledPolicy, crate::policy::PolicyError> {
    compile(&p.bundle, &p.source)
}
