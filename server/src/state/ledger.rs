//! Budget counters and reservations, kept per budget window so a check costs the same
//! whatever the history (SPEC §7). The database holds the same numbers; this is the copy
//! the pipeline reads under the engine lock.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Amounts in every budget dimension except session time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amounts {
    pub micro_usd: u64,
    pub tokens: u64,
    pub calls: u64,
}

impl Amounts {
    pub fn add(&mut self, o: Amounts) {
        self.micro_usd = self.micro_usd.saturating_add(o.micro_usd);
        self.tokens = self.tokens.saturating_add(o.tokens);
        self.calls = self.calls.saturating_add(o.calls);
    }

    pub fn sub(&mut self, o: Amounts) {
        self.micro_usd = self.micro_usd.saturating_sub(o.micro_usd);
        self.tokens = self.tokens.saturating_sub(o.tokens);
        self.calls = self.calls.saturating_sub(o.calls);
    }

    pub fn exceeds(&self, o: Amounts) -> bool {
        self.micro_usd > o.micro_usd || self.tokens > o.tokens || self.calls > o.calls
    }
}

/// One budget window: budget name, scope key (agent, agent/session, category, `*`) and
/// window start in Unix milliseconds (0 for lifetime).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CounterKey {
    pub budget: String,
    pub scope_key: String,
    pub window_start_ms: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub spent: Amounts,
    pub reserved: Amounts,
}

/// Money and tokens held for one decision until Record settles it or it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub decision_id: String,
    pub agent_id: String,
    pub keys: Vec<CounterKey>,
    pub amounts: Amounts,
    pub created_ms: i64,
    pub expires_ms: i64,
}

#[derive(Debug, Default)]
pub struct Ledger {
    counters: HashMap<CounterKey, Counter>,
    reservations: HashMap<String, Reservation>,
    expiry: BTreeSet<(i64, String)>,
}

impl Ledger {
    pub fn counter(&self, key: &CounterKey) -> Counter {
        self.counters.get(key).copied().unwrap_or_default()
    }

    /// Adds settled spend loaded from the store.
    pub fn load_spent(&mut self, key: CounterKey, spent: Amounts) {
        self.counters.entry(key).or_default().spent.add(spent);
    }

    /// Takes in a counter's settled spend as the shared database holds it (all
    /// replicas' Records). Spend in a window only grows, so the larger of the two is
    /// the newer: this replica's own commits may be ahead of the snapshot or in it.
    pub fn merge_spent(&mut self, key: CounterKey, spent: Amounts) {
        let mine = &mut self.counters.entry(key).or_default().spent;
        mine.micro_usd = mine.micro_usd.max(spent.micro_usd);
        mine.tokens = mine.tokens.max(spent.tokens);
        mine.calls = mine.calls.max(spent.calls);
    }

    pub fn reserve(&mut self, r: Reservation) {
        for key in &r.keys {
            self.counters
                .entry(key.clone())
                .or_default()
                .reserved
                .add(r.amounts);
        }
        self.expiry.insert((r.expires_ms, r.id.clone()));
        self.reservations.insert(r.id.clone(), r);
    }

    /// Releases a reservation without spending it. Returns it when it was still open.
    pub fn release(&mut self, id: &str) -> Option<Reservation> {
        let r = self.reservations.remove(id)?;
        self.expiry.remove(&(r.expires_ms, r.id.clone()));
        for key in &r.keys {
            if let Some(c) = self.counters.get_mut(key) {
                c.reserved.sub(r.amounts);
            }
        }
        Some(r)
    }

    pub fn is_open(&self, id: &str) -> bool {
        self.reservations.contains_key(id)
    }

    /// The windows that hold spend or reservations (for listing them; no order).
    pub fn keys(&self) -> impl Iterator<Item = &CounterKey> {
        self.counters.keys()
    }

    /// Releases every reservation whose TTL has passed at `now_ms`.
    pub fn release_expired(&mut self, now_ms: i64) -> usize {
        let due: Vec<String> = self
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &due {
            self.release(id);
        }
        due.len()
    }

    pub fn add_spent(&mut self, keys: &[CounterKey], amounts: Amounts) {
        for key in keys {
            self.counters
                .entry(key.clone())
                .or_default()
                .spent
                .add(amounts);
        }
    }

    pub fn remove_spent(&mut self, keys: &[CounterKey], amounts: Amounts) {
        for key in keys {
            if let Some(c) = self.counters.get_mut(key) {
                c.spent.sub(amounts);
            }
        }
    }

    pub fn open_reservations(&self) -> usize {
        self.reservations.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CounterKey {
        CounterKey {
            budget: "b".into(),
            scope_key: "a".into(),
            window_start_ms: 0,
        }
    }

    fn res(id: &str, usd: u64, expires_ms: i64) -> Reservation {
        Reservation {
            id: id.into(),
            decision_id: format!("d-{id}"),
            agent_id: "a".into(),
            keys: vec![key()],
            amounts: Amounts {
                micro_usd: usd,
                tokens: 0,
                calls: 1,
            },
            created_ms: 0,
            expires_ms,
        }
    }

    #[test]
    fn reservations_count_until_released_or_expired() {
        let mut l = Ledger::default();
        l.reserve(res("r1", 5, 100));
        l.reserve(res("r2", 7, 200));
        assert_eq!(l.counter(&key()).reserved.micro_usd, 12);
        assert_eq!(l.release_expired(100), 1);
        assert_eq!(l.counter(&key()).reserved.micro_usd, 7);
        assert!(l.release("r2").is_some());
        assert!(l.release("r2").is_none());
        assert_eq!(l.counter(&key()).reserved, Amounts::default());
    }
}
