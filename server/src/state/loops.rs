//! Sliding-window call counts per (agent, session, tool) for the loop guard.

use std::collections::{HashMap, VecDeque};

pub type LoopKey = (String, String, String);

#[derive(Debug, Default)]
pub struct LoopWindows {
    calls: HashMap<LoopKey, VecDeque<i64>>,
}

impl LoopWindows {
    /// Calls recorded in `(now - window, now]`.
    pub fn count(&self, key: &LoopKey, now_ms: i64, window_ms: i64) -> usize {
        self.calls
            .get(key)
            .map_or(0, |q| q.iter().filter(|t| **t > now_ms - window_ms).count())
    }

    pub fn record(&mut self, key: LoopKey, now_ms: i64, window_ms: i64) {
        let q = self.calls.entry(key).or_default();
        while q.front().is_some_and(|t| *t <= now_ms - window_ms) {
            q.pop_front();
        }
        q.push_back(now_ms);
    }

    /// Undoes `record` when the decision it belonged to could not be committed.
    pub fn forget(&mut self, key: &LoopKey, at_ms: i64) {
        if let Some(q) = self.calls.get_mut(key) {
            if let Some(pos) = q.iter().rposition(|t| *t == at_ms) {
                q.remove(pos);
            }
        }
    }
}
