//! Consent grants. A grant with no purpose covers every purpose; a request without a
//! purpose matches only such a grant (SPEC §3.4).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentGrant {
    pub agent_id: String,
    pub data_type: String,
    pub purpose: Option<String>,
    pub granted_by: String,
    pub granted_ms: i64,
    pub expires_ms: Option<i64>,
}

/// Result of looking up consent for one data access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentCheck {
    Granted,
    /// Only expired grants would have matched.
    Expired,
    Missing,
}

#[derive(Debug, Default)]
pub struct ConsentBook {
    grants: HashMap<(String, String), Vec<ConsentGrant>>,
}

impl ConsentBook {
    pub fn check(
        &self,
        agent: &str,
        data_type: &str,
        purpose: Option<&str>,
        now_ms: i64,
    ) -> ConsentCheck {
        let Some(grants) = self.grants.get(&(agent.to_owned(), data_type.to_owned())) else {
            return ConsentCheck::Missing;
        };
        let mut expired = false;
        for g in grants {
            let covers = match (&g.purpose, purpose) {
                (None, _) => true,
                (Some(gp), Some(p)) => gp == p,
                (Some(_), None) => false,
            };
            if !covers {
                continue;
            }
            if g.expires_ms.is_some_and(|e| e <= now_ms) {
                expired = true;
            } else {
                return ConsentCheck::Granted;
            }
        }
        if expired {
            ConsentCheck::Expired
        } else {
            ConsentCheck::Missing
        }
    }

    /// Stores a grant, replacing one for the same agent, data type and purpose.
    pub fn upsert(&mut self, g: ConsentGrant) {
        let list = self
            .grants
            .entry((g.agent_id.clone(), g.data_type.clone()))
            .or_default();
        list.retain(|x| x.purpose != g.purpose);
        list.push(g);
    }

    /// Removes exactly one grant. Returns false when it did not exist.
    pub fn remove(&mut self, agent: &str, data_type: &str, purpose: Option<&str>) -> bool {
        let Some(list) = self
            .grants
            .get_mut(&(agent.to_owned(), data_type.to_owned()))
        else {
            return false;
        };
        let before = list.len();
        list.retain(|x| x.purpose.as_deref() != purpose);
        before != list.len()
    }

    pub fn exists(&self, agent: &str, data_type: &str, purpose: Option<&str>) -> bool {
        self.grants
            .get(&(agent.to_owned(), data_type.to_owned()))
            .is_some_and(|l| l.iter().any(|x| x.purpose.as_deref() == purpose))
    }

    pub fn list(&self, agent: Option<&str>) -> Vec<ConsentGrant> {
        let mut out: Vec<ConsentGrant> = self
            .grants
            .values()
            .flatten()
            .filter(|g| agent.is_none_or(|a| g.agent_id == a))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (&a.agent_id, &a.data_type, &a.purpose).cmp(&(&b.agent_id, &b.data_type, &b.purpose))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(purpose: Option<&str>, expires_ms: Option<i64>) -> ConsentGrant {
        ConsentGrant {
            agent_id: "a".into(),
            data_type: "email".into(),
            purpose: purpose.map(str::to_owned),
            granted_by: "op".into(),
            granted_ms: 0,
            expires_ms,
        }
    }

    #[test]
    fn null_purpose_grant_covers_every_purpose_but_not_the_reverse() {
        let mut b = ConsentBook::default();
        b.upsert(grant(None, None));
        assert_eq!(
            b.check("a", "email", Some("marketing"), 0),
            ConsentCheck::Granted
        );
        assert_eq!(b.check("a", "email", None, 0), ConsentCheck::Granted);

        let mut b = ConsentBook::default();
        b.upsert(grant(Some("notifications"), None));
        assert_eq!(b.check("a", "email", None, 0), ConsentCheck::Missing);
        assert_eq!(
            b.check("a", "email", Some("notifications"), 0),
            ConsentCheck::Granted
        );
        assert_eq!(
            b.check("a", "email", Some("marketing"), 0),
            ConsentCheck::Missing
        );
    }

    #[test]
    fn expired_grants_do_not_count_and_revoke_is_exact() {
        let mut b = ConsentBook::default();
        b.upsert(grant(Some("x"), Some(100)));
        assert_eq!(b.check("a", "email", Some("x"), 99), ConsentCheck::Granted);
        assert_eq!(b.check("a", "email", Some("x"), 100), ConsentCheck::Expired);
        assert!(!b.remove("a", "email", None));
        assert!(b.remove("a", "email", Some("x")));
        assert_eq!(b.check("a", "email", Some("x"), 0), ConsentCheck::Missing);
    }
}
