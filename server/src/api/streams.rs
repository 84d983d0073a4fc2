//! Server streams (WatchApproval, TailAudit, ExportAudit) stay bound to the principal
//! that opened them. A stream re-checks its caller whenever the principal directory
//! changes (a revocation here, or one another replica made, applied by the control
//! refresh) and before it hands over each message; once the caller is revoked it ends
//! with UNAUTHENTICATED, once it no longer holds the access the stream needs with
//! PERMISSION_DENIED, and nothing is delivered after the change is applied.
//!
//! Ending a stream writes no audit entry: the change that ended it (`principal.revoke`)
//! is in the log already, and every replica ending its streams would otherwise write one.

use crate::auth::{allows, Access, PrincipalBook};
use crate::domain::{Principal, Role};
use crate::engine::Engine;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use tonic::Status;

pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the caller must keep holding for the stream to go on (an owned `Access`).
pub(super) enum Need {
    Roles(&'static [Role]),
    /// An agent principal bound to this agent, or any of these roles.
    ActForOr(String, &'static [Role]),
}

impl Need {
    fn access(&self) -> Access<'_> {
        match self {
            Self::Roles(roles) => Access::Roles(roles),
            Self::ActForOr(agent, roles) => Access::ActForOr(agent, roles),
        }
    }
}

/// A stream's caller, re-checked against the live principal directory.
pub(super) struct Binding {
    name: String,
    rpc: &'static str,
    need: Need,
    book: Arc<RwLock<PrincipalBook>>,
    changes: watch::Receiver<u64>,
}

impl Binding {
    pub(super) fn new(engine: &Engine, who: &Principal, rpc: &'static str, need: Need) -> Self {
        Self {
            name: who.name.clone(),
            rpc,
            need,
            book: engine.principal_book(),
            changes: engine.principal_changes(),
        }
    }

    /// Whether the caller, as the directory holds it now, may still have the stream.
    pub(super) fn check(&self) -> Result<(), Status> {
        let current = self
            .book
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .current(&self.name);
        let Some(p) = current else {
            return Err(Status::unauthenticated(format!(
                "{}: principal {:?} was revoked; the stream ends",
                self.rpc, self.name
            )));
        };
        allows(&p, &self.need.access()).map_err(|need| {
            Status::permission_denied(format!(
                "{}: principal {:?} no longer holds {need}; the stream ends",
                self.rpc, self.name
            ))
        })
    }

    /// Resolves when the caller has lost the stream, with the status to end it.
    async fn lost(&mut self) -> Status {
        loop {
            self.changes.borrow_and_update();
            if let Err(status) = self.check() {
                return status;
            }
            if self.changes.changed().await.is_err() {
                // The engine is gone; the server is stopping and ends the stream itself.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// `inner`, ended as soon as `binding`'s caller loses it; every message is checked
/// against the directory just before it is handed over.
pub(super) fn bound<T, S>(binding: Binding, inner: S) -> BoxStream<T>
where
    T: Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let state = Some((binding, Box::pin(inner)));
    Box::pin(futures::stream::unfold(state, |state| async move {
        let (mut binding, mut inner) = state?;
        tokio::select! {
            biased;
            status = binding.lost() => Some((Err(status), None)),
            item = inner.next() => {
                let item = item?;
                match binding.check() {
                    Ok(()) => Some((item, Some((binding, inner)))),
                    Err(status) => Some((Err(status), None)),
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PrincipalRow;

    fn row(name: &str, roles: &[Role]) -> PrincipalRow {
        PrincipalRow {
            name: name.into(),
            roles: roles.to_vec(),
            agents: vec!["bot-*".into()],
            key_hash: Some(crate::auth::hash_key(&format!("arb_{name}"))),
            key_prefix: None,
            tls_identity: None,
            created_by: "root".into(),
            created_ms: 0,
            revoked_ms: None,
        }
    }

    fn binding(book: &Arc<RwLock<PrincipalBook>>, name: &str, need: Need) -> Binding {
        Binding {
            name: name.into(),
            rpc: "TailAudit",
            need,
            book: book.clone(),
            changes: watch::Sender::new(0).subscribe(),
        }
    }

    #[test]
    fn a_revoked_caller_is_unauthenticated_and_one_without_the_right_is_denied() {
        const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];
        let book = Arc::new(RwLock::new(PrincipalBook::from_rows(&[
            row("aud", &[Role::Auditor]),
            row("op", &[Role::Operator]),
            row("bot", &[Role::Agent]),
        ])));
        assert!(binding(&book, "aud", Need::Roles(AUDITORS)).check().is_ok());
        let denied = binding(&book, "op", Need::Roles(AUDITORS))
            .check()
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        // An agent principal keeps a watch on its own agents' approvals only.
        let own = Need::ActForOr("bot-1".into(), &[Role::Operator]);
        assert!(binding(&book, "bot", own).check().is_ok());
        let other = Need::ActForOr("other".into(), &[Role::Operator]);
        let denied = binding(&book, "bot", other).check().unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        book.write().unwrap().revoke("aud");
        let gone = binding(&book, "aud", Need::Roles(AUDITORS))
            .check()
            .unwrap_err();
        assert_eq!(gone.code(), tonic::Code::Unauthenticated, "{gone:?}");
        assert!(gone.message().contains("revoked"), "{gone:?}");
    }

    #[test]
    fn the_developer_loses_its_streams_when_the_first_principal_is_created() {
        let book = Arc::new(RwLock::new(PrincipalBook::default()));
        let dev = || binding(&book, "anonymous", Need::Roles(&[Role::Auditor]));
        assert!(dev().check().is_ok());
        book.write().unwrap().add(&row("aud", &[Role::Auditor]));
        assert_eq!(
            dev().check().unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[tokio::test]
    async fn a_bound_stream_ends_when_the_directory_changes_and_delivers_nothing_after() {
        let book = Arc::new(RwLock::new(PrincipalBook::from_rows(&[row(
            "aud",
            &[Role::Auditor],
        )])));
        let changes = watch::Sender::new(0u64);
        let b = Binding {
            name: "aud".into(),
            rpc: "TailAudit",
            need: Need::Roles(&[Role::Auditor]),
            book: book.clone(),
            changes: changes.subscribe(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<u64, Status>>(8);
        let mut out = bound(b, tokio_stream::wrappers::ReceiverStream::new(rx));
        tx.send(Ok(1)).await.unwrap();
        assert_eq!(out.next().await.unwrap().unwrap(), 1);
        // Queued before the revocation, handed over after it: never delivered.
        tx.send(Ok(2)).await.unwrap();
        book.write().unwrap().revoke("aud");
        changes.send_modify(|n| *n += 1);
        let end = out.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unauthenticated);
        assert!(out.next().await.is_none());
        // An idle stream ends on the change alone, without a message to carry it.
        let book = Arc::new(RwLock::new(PrincipalBook::from_rows(&[row(
            "aud",
            &[Role::Auditor],
        )])));
        let b = Binding {
            name: "aud".into(),
            rpc: "TailAudit",
            need: Need::Roles(&[Role::Auditor]),
            book: book.clone(),
            changes: changes.subscribe(),
        };
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<u64, Status>>(8);
        let mut out = bound(b, tokio_stream::wrappers::ReceiverStream::new(rx));
        let waiting = tokio::spawn(async move { out.next().await });
        tokio::task::yield_now().await;
        book.write().unwrap().revoke("aud");
        changes.send_modify(|n| *n += 1);
        let end = waiting.await.unwrap().unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unauthenticated);
    }
}
