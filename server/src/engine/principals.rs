//! Principals (API keys or client-certificate identities, with roles) and the audit
//! trail of refused calls.

use super::{Engine, EngineError};
use crate::audit::EntryDraft;
use crate::auth::{hash_key, new_key, PrincipalBook, Refusal, KEY_PREFIX};
use crate::domain::{ParseError, Principal, Role, TlsIdentity};
use crate::store::{PrincipalRow, StateOp};
use serde_json::json;
use std::sync::{Arc, RwLock};

impl Engine {
    /// The live principal directory the authenticator reads.
    pub fn principal_book(&self) -> Arc<RwLock<PrincipalBook>> {
        self.principals.clone()
    }

    /// Fires after every change to the principal directory (here, or applied from the
    /// shared store), so an open stream re-checks its caller (`api::streams`).
    pub fn principal_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.principal_changes.subscribe()
    }

    /// Wakes every open stream to re-check its caller against the changed directory.
    pub(super) fn principals_changed(&self) {
        self.principal_changes.send_modify(|n| *n += 1);
    }

    /// True once any principal exists: from then on every call needs a key.
    pub fn auth_required(&self) -> bool {
        self.principals
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .required()
    }

    /// (an active principal has an API key, an active principal is bound to a
    /// client-certificate identity), for the start-up exposure checks.
    pub fn credential_kinds(&self) -> (bool, bool) {
        let book = self.principals.read().unwrap_or_else(|p| p.into_inner());
        (book.has_key_principals(), book.has_tls_principals())
    }

    /// Creates a principal. With a certificate identity it authenticates only by
    /// that certificate and the returned key is empty; otherwise it gets an API key,
    /// returned this once.
    pub async fn create_principal(
        &self,
        who: &Principal,
        name: String,
        roles: Vec<Role>,
        agents: Vec<String>,
        tls_identity: Option<TlsIdentity>,
    ) -> Result<(PrincipalRow, String, u64), EngineError> {
        Principal::new(name.clone(), roles.clone(), agents.clone())
            .map_err(|e| ParseError::new("agents", e))?;
        if name == "anonymous" || name == "watchdog" {
            return Err(EngineError::Invalid(ParseError::new(
                "name",
                format!("{name:?} is reserved (development mode and the watchdog use it)"),
            )));
        }
        let existing = self.store.principals().await?;
        if existing.iter().any(|p| p.name == name) {
            return Err(EngineError::Invalid(ParseError::new(
                "name",
                format!("principal {name:?} already exists (names are never reused, even after revocation)"),
            )));
        }
        if let Some(id) = &tls_identity {
            if let Some(holder) = existing
                .iter()
                .find(|p| p.revoked_ms.is_none() && p.tls_identity.as_ref() == Some(id))
            {
                return Err(EngineError::Invalid(ParseError::new(
                    "tls_identity",
                    format!(
                        "{id} is already bound to principal {:?}; revoke it first",
                        holder.name
                    ),
                )));
            }
        }
        // A certificate principal gets no key at all, so nothing but the certificate
        // can ever speak for it.
        let key = match tls_identity {
            Some(_) => String::new(),
            None => new_key(),
        };
        let row = PrincipalRow {
            name: name.clone(),
            roles: roles.clone(),
            agents: agents.clone(),
            key_hash: (!key.is_empty()).then(|| hash_key(&key)),
            key_prefix: (!key.is_empty()).then(|| key[..KEY_PREFIX.len() + 6].to_owned()),
            tls_identity: tls_identity.clone(),
            created_by: who.name.clone(),
            created_ms: self.now_ms(),
            revoked_ms: None,
        };
        let mut body = json!({
            "name": name,
            "roles": roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
            "agents": agents,
            "principal": who.name,
        });
        // Exactly one credential: the key's prefix (never the key) or the identity.
        match (&row.key_prefix, &row.tls_identity) {
            (_, Some(id)) => body["tls_identity"] = json!(id.to_string()),
            (prefix, None) => body["key_prefix"] = json!(prefix),
        }
        let draft = EntryDraft {
            ts_ms: row.created_ms,
            kind: "principal.create".into(),
            agent_id: String::new(),
            session_id: String::new(),
            outcome: String::new(),
            body: body.into(),
        };
        let seq = self
            .append(draft, vec![StateOp::CreatePrincipal(row.clone())])
            .await?;
        self.principals
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(&row);
        self.principals_changed();
        Ok((row, key, seq))
    }

    pub async fn revoke_principal(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<(PrincipalRow, u64), EngineError> {
        let mut row = self
            .store
            .principals()
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| EngineError::NotFound(format!("no principal named {name:?}")))?;
        if row.revoked_ms.is_some() {
            return Err(EngineError::NotFound(format!(
                "principal {name:?} is already revoked"
            )));
        }
        let now = self.now_ms();
        let draft = EntryDraft {
            ts_ms: now,
            kind: "principal.revoke".into(),
            agent_id: String::new(),
            session_id: String::new(),
            outcome: String::new(),
            body: json!({"name": name, "principal": who.name}).into(),
        };
        let op = StateOp::RevokePrincipal {
            name: name.to_owned(),
            revoked_ms: now,
        };
        let seq = self.append(draft, vec![op]).await?;
        self.principals
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .revoke(name);
        self.principals_changed();
        row.revoked_ms = Some(now);
        Ok((row, seq))
    }

    pub async fn list_principals(&self) -> Result<Vec<PrincipalRow>, EngineError> {
        Ok(self.store.principals().await?)
    }

    /// Audits a refused call. Refusals never change state, so a failure to write one is
    /// logged, not returned.
    pub async fn record_refusal(&self, r: Refusal) {
        let draft = EntryDraft {
            ts_ms: self.now_ms(),
            kind: "auth.denied".into(),
            agent_id: String::new(),
            session_id: String::new(),
            outcome: "denied".into(),
            body: json!({"principal": r.principal, "rpc": r.rpc, "reason": r.reason}).into(),
        };
        if let Err(e) = self.append(draft, Vec::new()).await {
            tracing::error!(error = %e, "could not audit a refused call");
        }
    }

    /// Audits `dropped` unauthenticated refusals that found the refusal queue full, as
    /// one `auth.denied` entry whose `dropped` says how many it stands for.
    pub async fn record_dropped_refusals(&self, dropped: u64) {
        tracing::warn!(
            dropped,
            "refusal queue full: unauthenticated refusals audited as one summary entry"
        );
        let draft = EntryDraft {
            ts_ms: self.now_ms(),
            kind: "auth.denied".into(),
            agent_id: String::new(),
            session_id: String::new(),
            outcome: "denied".into(),
            body: json!({
                "principal": "unauthenticated",
                "rpc": "*",
                "reason": format!(
                    "{dropped} unauthenticated calls were refused while the refusal queue was full; this entry stands for all of them"
                ),
                "dropped": dropped,
            }).into(),
        };
        if let Err(e) = self.append(draft, Vec::new()).await {
            tracing::error!(error = %e, dropped, "could not audit dropped refusals");
        }
    }
}
