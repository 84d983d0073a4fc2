//! Stage 4: consent for personal-data access. Owns `consent.missing` and `consent.expired`.

use super::{Reason, Request, Snapshot};
use crate::state::ConsentCheck;

pub fn check(req: &Request<'_>, snap: &Snapshot<'_>) -> Reason {
    if req.action.data.is_empty() {
        return Reason::pass("consent", "ok", "no personal data accessed");
    }
    for access in &req.action.data {
        let purpose = access.purpose.as_deref();
        let found = snap
            .state
            .consent
            .check(req.agent_id, &access.data_type, purpose, snap.now_ms);
        if found == ConsentCheck::Granted {
            continue;
        }
        if snap.policy.defaults.consent_allow {
            continue;
        }
        let what = match purpose {
            Some(p) => format!("{} for purpose {p:?}", access.data_type),
            None => format!(
                "{} (no purpose given; only an every-purpose grant covers it)",
                access.data_type
            ),
        };
        return match found {
            ConsentCheck::Expired => Reason::fail(
                "consent",
                "consent.expired",
                format!("consent to access {what} has expired"),
            ),
            _ => Reason::fail(
                "consent",
                "consent.missing",
                format!("no consent grant lets agent {} access {what}", req.agent_id),
            ),
        };
    }
    let note = if snap.policy.defaults.consent_allow {
        " (policy default: allow)"
    } else {
        ""
    };
    Reason::pass(
        "consent",
        "ok",
        format!("{} data access(es) consented{note}", req.action.data.len()),
    )
}
