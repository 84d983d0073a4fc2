//! Caller identity. An interceptor turns what the transport proves about the caller
//! (an API key, or a verified client certificate under mTLS) into a `Principal`
//! request extension; handlers read identity only there (never from a request field)
//! and check roles with `authorize`.
//!
//! Development mode: while no principal has ever been created, every caller is the
//! anonymous developer with all roles, and `startup` refuses non-loopback addresses.
//! Creating the first principal switches authentication on for good.
//!
//! Precedence (docs/security.md, "Identity from the transport"):
//! - an API key, when presented, names the principal; if the connection also carries
//!   a client certificate bound to a *different* principal the call is refused, and a
//!   certificate bound to no principal is transport security only;
//! - without a key, the verified client certificate names the principal; a
//!   certificate bound to nobody is refused exactly like an unknown key.

mod keys;
mod tls;

pub use keys::{hash_key, new_key, KEY_PREFIX};
pub use tls::certificate_identities;

use crate::domain::{Principal, Role, TlsIdentity};
use crate::store::PrincipalRow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tonic::{Request, Status};

/// Active principals, found by key hash or by client-certificate identity.
#[derive(Debug, Default)]
pub struct PrincipalBook {
    by_name: HashMap<String, Principal>,
    /// Key hash → principal name.
    by_hash: HashMap<String, String>,
    /// Certificate identity → principal name.
    by_identity: HashMap<TlsIdentity, String>,
    /// True once any principal exists (revoked ones count).
    required: bool,
}

/// What a client certificate resolves to.
#[derive(Debug)]
pub enum CertificateMatch {
    /// One active principal is bound to the certificate's identities.
    Principal(Principal),
    /// No active principal is bound to any of them (the first is named in refusals).
    Unknown(Option<TlsIdentity>),
    /// Identities of the one certificate are bound to different principals.
    Ambiguous(Vec<String>),
}

impl PrincipalBook {
    pub fn from_rows(rows: &[PrincipalRow]) -> Self {
        let mut book = Self::default();
        for r in rows {
            book.add(r);
        }
        book
    }

    pub fn add(&mut self, r: &PrincipalRow) {
        self.required = true;
        if r.revoked_ms.is_some() {
            // By name: a revoked principal's identity may already belong to a newer one.
            self.revoke(&r.name);
            return;
        }
        match Principal::new(r.name.clone(), r.roles.clone(), r.agents.clone()) {
            Ok(p) => {
                if let Some(hash) = &r.key_hash {
                    self.by_hash.insert(hash.clone(), r.name.clone());
                }
                if let Some(id) = &r.tls_identity {
                    self.by_identity.insert(id.clone(), r.name.clone());
                }
                self.by_name.insert(r.name.clone(), p);
            }
            Err(e) => {
                tracing::error!(principal = %r.name, error = %e, "principal has an invalid agent pattern; it cannot authenticate")
            }
        }
    }

    pub fn revoke(&mut self, name: &str) {
        self.by_name.remove(name);
        self.by_hash.retain(|_, n| n != name);
        self.by_identity.retain(|_, n| n != name);
    }

    /// An active principal by name.
    pub fn by_name(&self, name: &str) -> Option<&Principal> {
        self.by_name.get(name)
    }

    /// The principal named `name` as it stands now: an active one, or the anonymous
    /// developer while the server is still in development mode. None once it is revoked
    /// (or, for the developer, once the first principal exists).
    pub fn current(&self, name: &str) -> Option<Principal> {
        if !self.required && name == Principal::anonymous().name {
            return Some(Principal::anonymous());
        }
        self.by_name.get(name).cloned()
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// Whether any active principal authenticates with an API key.
    pub fn has_key_principals(&self) -> bool {
        !self.by_hash.is_empty()
    }

    /// Whether any active principal is bound to a certificate identity.
    pub fn has_tls_principals(&self) -> bool {
        !self.by_identity.is_empty()
    }

    /// The principal for an API key, if it is active.
    pub fn lookup(&self, key: &str) -> Option<Principal> {
        // The key is hashed first, so the map lookup compares hashes, not secrets.
        let name = self.by_hash.get(&hash_key(key))?;
        self.by_name.get(name).cloned()
    }

    /// The principal a verified client certificate names. Every identity is looked
    /// up (URI SANs, then DNS SANs, then subject CNs); all that match must name the
    /// same principal.
    pub fn lookup_certificate(&self, identities: &[TlsIdentity]) -> CertificateMatch {
        let mut names: Vec<&String> = Vec::new();
        for id in identities {
            if let Some(name) = self.by_identity.get(id) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        match names.as_slice() {
            [] => CertificateMatch::Unknown(identities.first().cloned()),
            [one] => match self.by_name.get(*one) {
                Some(p) => CertificateMatch::Principal(p.clone()),
                None => CertificateMatch::Unknown(identities.first().cloned()),
            },
            many => CertificateMatch::Ambiguous(many.iter().map(|n| n.to_string()).collect()),
        }
    }
}

/// Why a call was refused, for the audit log.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub principal: String,
    pub rpc: &'static str,
    pub reason: String,
}

/// The interceptor's refusals on their way to the audit log, off the request path. The
/// queue is bounded; a refusal that finds it full is not queued but counted (in
/// `arbiter_auth_refusals_dropped_total` and in a tally the consumer audits as one
/// summary `auth.denied` entry with `dropped`), so under a flood every refusal is still
/// accounted for in the log, one by one or in a summary.
#[derive(Clone)]
pub struct RefusalQueue {
    tx: mpsc::Sender<Refusal>,
    shared: Arc<DropTally>,
    dropped_total: prometheus::IntCounter,
}

/// Refusals dropped since the consumer last took the count.
#[derive(Default)]
struct DropTally {
    dropped: AtomicU64,
    wake: tokio::sync::Notify,
}

/// What the consumer audits next.
#[derive(Debug)]
pub enum Queued {
    /// One refusal, audited as it is.
    Refusal(Refusal),
    /// This many refusals found the queue full; audited as one summary entry.
    Dropped(u64),
}

impl RefusalQueue {
    /// A queue of `capacity` refusals and its one consumer.
    pub fn new(capacity: usize, dropped_total: prometheus::IntCounter) -> (Self, RefusalDrain) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(DropTally::default());
        let drain = RefusalDrain {
            rx,
            shared: shared.clone(),
        };
        (
            Self {
                tx,
                shared,
                dropped_total,
            },
            drain,
        )
    }

    /// Queues a refusal, never waiting: a full (or closed) queue counts it instead.
    pub fn push(&self, refusal: Refusal) {
        if self.tx.try_send(refusal).is_err() {
            self.dropped_total.inc();
            self.shared.dropped.fetch_add(1, Ordering::AcqRel);
            self.shared.wake.notify_one();
        }
    }
}

/// The consumer's end of a `RefusalQueue`.
pub struct RefusalDrain {
    rx: mpsc::Receiver<Refusal>,
    shared: Arc<DropTally>,
}

impl RefusalDrain {
    /// The next thing to audit: the count of refusals dropped since the last call, if
    /// any, else the next queued refusal. None once every sender is gone, the queue is
    /// empty and nothing is left uncounted.
    pub async fn next(&mut self) -> Option<Queued> {
        loop {
            let dropped = self.shared.dropped.swap(0, Ordering::AcqRel);
            if dropped > 0 {
                return Some(Queued::Dropped(dropped));
            }
            tokio::select! {
                biased;
                r = self.rx.recv() => match r {
                    Some(r) => return Some(Queued::Refusal(r)),
                    None => {
                        let dropped = self.shared.dropped.swap(0, Ordering::AcqRel);
                        return (dropped > 0).then_some(Queued::Dropped(dropped));
                    }
                },
                () = self.shared.wake.notified() => {}
            }
        }
    }
}

/// Reads the key from `authorization: Bearer <key>` (or `x-api-key`).
fn presented_key<T>(req: &Request<T>) -> Option<String> {
    let md = req.metadata();
    if let Some(v) = md.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        return Some(
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim()
                .to_owned(),
        );
    }
    md.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

/// The identities of the verified client certificate, if the connection has one.
/// The TLS layer only hands over certificates that chain to the configured client
/// CA, so the identities can be trusted as far as that CA is.
fn presented_certificate<T>(req: &Request<T>) -> Option<Result<Vec<TlsIdentity>, String>> {
    let chain = req.peer_certs()?;
    let leaf = chain.first()?;
    Some(certificate_identities(leaf.as_ref()))
}

/// Who the transport says the caller is, or why it says nothing usable.
fn identify(
    book: &PrincipalBook,
    key: Option<&str>,
    certificate: Option<Result<Vec<TlsIdentity>, String>>,
) -> Result<Principal, String> {
    let by_certificate = certificate.map(|ids| match ids {
        Ok(ids) => book.lookup_certificate(&ids),
        Err(e) => {
            tracing::warn!(error = %e, "a verified client certificate could not be read");
            CertificateMatch::Unknown(None)
        }
    });
    match (key, by_certificate) {
        (Some(key), certificate) => {
            let p = book
                .lookup(key)
                .ok_or_else(|| "unknown or revoked API key".to_owned())?;
            match certificate {
                Some(CertificateMatch::Principal(c)) if c.name != p.name => Err(format!(
                    "the API key belongs to principal {:?} but the client certificate to {:?}; \
                     present one credential or matching ones",
                    p.name, c.name
                )),
                Some(CertificateMatch::Ambiguous(names)) => Err(ambiguous(&names)),
                _ => Ok(p),
            }
        }
        (None, Some(CertificateMatch::Principal(p))) => Ok(p),
        (None, Some(CertificateMatch::Unknown(Some(id)))) => Err(format!(
            "unknown or revoked client certificate identity {id}"
        )),
        (None, Some(CertificateMatch::Unknown(None))) => Err(
            "the client certificate carries no usable identity (URI SAN, DNS SAN or subject CN)"
                .to_owned(),
        ),
        (None, Some(CertificateMatch::Ambiguous(names))) => Err(ambiguous(&names)),
        (None, None) => Err("no API key or client certificate presented".to_owned()),
    }
}

fn ambiguous(names: &[String]) -> String {
    format!(
        "the client certificate's identities are bound to different principals ({}); \
         refusing to choose",
        names.join(", ")
    )
}

/// The tonic interceptor: authenticates every call to an arbiter.v1 service.
#[derive(Clone)]
pub struct Authenticator {
    pub book: Arc<RwLock<PrincipalBook>>,
    /// Where refusals go to be audited (sent off the request path).
    pub refusals: RefusalQueue,
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let book = self.book.read().unwrap_or_else(|p| p.into_inner());
        if !book.required() {
            req.extensions_mut().insert(Principal::anonymous());
            return Ok(req);
        }
        let key = presented_key(&req);
        match identify(&book, key.as_deref(), presented_certificate(&req)) {
            Ok(p) => {
                req.extensions_mut().insert(p);
                Ok(req)
            }
            Err(reason) => {
                self.refusals.push(Refusal {
                    principal: "unauthenticated".into(),
                    rpc: "*",
                    reason: reason.clone(),
                });
                Err(Status::unauthenticated(format!(
                    "{reason}; send `authorization: Bearer <key>` or a client certificate bound \
                     to a principal (see `arbiter principals create`)"
                )))
            }
        }
    }
}

/// What an RPC requires of its caller.
pub enum Access<'a> {
    /// Any of these roles.
    Roles(&'a [Role]),
    /// An `agent` principal bound to this agent id.
    ActFor(&'a str),
    /// An `agent` principal bound to this agent, or any of these roles.
    ActForOr(&'a str, &'a [Role]),
}

/// The authenticated principal, if it may make this call.
pub fn authorize<T>(
    req: &Request<T>,
    rpc: &'static str,
    access: Access<'_>,
) -> Result<Principal, Refusal> {
    let Some(p) = req.extensions().get::<Principal>().cloned() else {
        return Err(Refusal {
            principal: "unauthenticated".into(),
            rpc,
            reason: "no authenticated principal".into(),
        });
    };
    match allows(&p, &access) {
        Ok(()) => Ok(p),
        Err(need) => Err(Refusal {
            principal: p.name.clone(),
            rpc,
            reason: format!("{rpc} requires {need}"),
        }),
    }
}

/// Whether `p` meets `access`; otherwise what it would need, for the refusal.
pub fn allows(p: &Principal, access: &Access<'_>) -> Result<(), String> {
    let roles_ok = |roles: &[Role]| roles.iter().any(|r| p.has(*r));
    let (ok, need) = match access {
        Access::Roles(roles) => (
            roles_ok(roles),
            format!("one of the roles {}", names(roles)),
        ),
        Access::ActFor(agent) => (
            p.acts_for(agent),
            format!("an agent principal bound to agent {agent}"),
        ),
        Access::ActForOr(agent, roles) => (
            p.acts_for(agent) || roles_ok(roles),
            format!(
                "an agent principal bound to agent {agent} or one of the roles {}",
                names(roles)
            ),
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(need)
    }
}

fn names(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(reason: &str) -> Refusal {
        Refusal {
            principal: "unauthenticated".into(),
            rpc: "*",
            reason: reason.into(),
        }
    }

    #[tokio::test]
    async fn refusals_that_find_the_queue_full_are_counted_and_handed_over_as_one_tally() {
        let metric = prometheus::IntCounter::new("dropped", "test").unwrap();
        let (queue, mut drain) = RefusalQueue::new(2, metric.clone());
        for i in 0..5 {
            queue.push(refusal(&format!("r{i}")));
        }
        assert_eq!(metric.get(), 3);
        // The tally comes first, so a flood cannot postpone it behind the queue.
        assert!(matches!(drain.next().await, Some(Queued::Dropped(3))));
        for want in ["r0", "r1"] {
            match drain.next().await {
                Some(Queued::Refusal(r)) => assert_eq!(r.reason, want),
                other => panic!("expected {want}, got {other:?}"),
            }
        }
        // A drop wakes a consumer that is waiting on an empty queue.
        let waiting = tokio::spawn(async move {
            let first = drain.next().await;
            (first, drain)
        });
        queue.push(refusal("r5"));
        queue.push(refusal("r6"));
        queue.push(refusal("r7"));
        let (first, mut drain) = waiting.await.unwrap();
        let mut seen = vec![first];
        drop(queue);
        while let Some(q) = drain.next().await {
            seen.push(Some(q));
        }
        let queued = seen
            .iter()
            .filter(|q| matches!(q, Some(Queued::Refusal(_))))
            .count() as u64;
        let dropped: u64 = seen
            .iter()
            .map(|q| match q {
                Some(Queued::Dropped(n)) => *n,
                _ => 0,
            })
            .sum();
        assert_eq!(queued + dropped, 3, "{seen:?}");
        assert_eq!(metric.get(), 3 + dropped);
    }

    fn row(name: &str, key: Option<&str>, identity: Option<&str>) -> PrincipalRow {
        PrincipalRow {
            name: name.into(),
            roles: vec![Role::Operator],
            agents: vec![],
            key_hash: key.map(hash_key),
            key_prefix: key.map(|k| k[..4].to_owned()),
            tls_identity: identity.map(|i| i.parse().unwrap()),
            created_by: "root".into(),
            created_ms: 0,
            revoked_ms: None,
        }
    }

    fn ids(texts: &[&str]) -> Option<Result<Vec<TlsIdentity>, String>> {
        Some(Ok(texts.iter().map(|t| t.parse().unwrap()).collect()))
    }

    fn book() -> PrincipalBook {
        PrincipalBook::from_rows(&[
            row("keyed", Some("arb_key"), None),
            row("ops", None, Some("spiffe://example.org/ops")),
            row("host", None, Some("dns:host.example.org")),
        ])
    }

    #[test]
    fn a_certificate_alone_names_its_principal() {
        let p = identify(
            &book(),
            None,
            ids(&["spiffe://example.org/ops", "cn:whatever"]),
        )
        .unwrap();
        assert_eq!(p.name, "ops");
    }

    #[test]
    fn an_unknown_certificate_is_refused_and_named() {
        let err = identify(&book(), None, ids(&["spiffe://example.org/stranger"])).unwrap_err();
        assert!(err.contains("spiffe://example.org/stranger"), "{err}");
        let err = identify(&book(), None, ids(&[])).unwrap_err();
        assert!(err.contains("no usable identity"), "{err}");
        let err = identify(&book(), None, None).unwrap_err();
        assert!(err.contains("no API key or client certificate"), "{err}");
    }

    #[test]
    fn a_key_wins_over_an_unbound_certificate_but_not_over_a_different_principal() {
        let p = identify(&book(), Some("arb_key"), ids(&["cn:unbound"])).unwrap();
        assert_eq!(p.name, "keyed");
        let err =
            identify(&book(), Some("arb_key"), ids(&["spiffe://example.org/ops"])).unwrap_err();
        assert!(
            err.contains("\"keyed\"") && err.contains("\"ops\""),
            "{err}"
        );
        // A bad key is refused even next to a good certificate: no silent fallback.
        let err = identify(
            &book(),
            Some("arb_wrong"),
            ids(&["spiffe://example.org/ops"]),
        )
        .unwrap_err();
        assert!(err.contains("unknown or revoked API key"), "{err}");
    }

    #[test]
    fn a_certificate_naming_two_principals_is_refused() {
        let err = identify(
            &book(),
            None,
            ids(&["spiffe://example.org/ops", "dns:host.example.org"]),
        )
        .unwrap_err();
        assert!(err.contains("different principals"), "{err}");
    }

    #[test]
    fn revoking_frees_the_identity_without_touching_its_new_holder() {
        let mut old = row("ops-old", None, Some("spiffe://example.org/ops"));
        old.revoked_ms = Some(1);
        // Rows arrive ordered by name: the revoked holder after the active one.
        let book =
            PrincipalBook::from_rows(&[row("ops", None, Some("spiffe://example.org/ops")), old]);
        let p = identify(&book, None, ids(&["spiffe://example.org/ops"])).unwrap();
        assert_eq!(p.name, "ops");
        let mut book = book;
        book.revoke("ops");
        assert!(identify(&book, None, ids(&["spiffe://example.org/ops"])).is_err());
        assert!(book.required());
    }
}
