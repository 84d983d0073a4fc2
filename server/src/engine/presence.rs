//! Heartbeats, presence and the watchdog. The watchdog acts without the agent's
//! cooperation: it marks silent agents unresponsive and, when the policy says so, halts
//! agents that are silent, over budget or looping — once per condition.
//!
//! A heartbeat only changes memory. `sync_presence` (a background task) writes the
//! heartbeats received since its last run to the store in one upsert and, when several
//! servers share the store, reads back the newest heartbeat of every agent, so each
//! replica (the watchdog's lease holder above all) sees heartbeats sent to any of them.

use super::{Engine, EngineError};
use crate::audit::refusal::Refusal;
use crate::audit::EntryDraft;
use crate::domain::{Principal, Role};
use crate::state::{Halt, HaltMode, HaltTarget, Presence, PresenceStatus};
use crate::store::{PresenceRow, StateOp, StoreError};
use serde_json::json;
use std::time::Duration;

impl Engine {
    /// Records that an agent is alive. A heartbeat never changes halt state; it reports
    /// the halt that applies, if any.
    pub async fn heartbeat(
        &self,
        who: &Principal,
        agent: &str,
        session: Option<&str>,
        status: PresenceStatus,
        operator: Option<String>,
    ) -> Result<Option<Halt>, EngineError> {
        if let Some(op) = operator.as_deref() {
            // The accountable human must be a real operator, and not the caller itself.
            let book = self.principals.read().unwrap_or_else(|p| p.into_inner());
            if book.required()
                && (op == who.name || !book.by_name(op).is_some_and(|p| p.has(Role::Operator)))
            {
                return Err(EngineError::Invalid(crate::domain::ParseError::new(
                    "operator",
                    format!("{op:?} is not an active operator principal other than the caller"),
                )));
            }
        }
        let now = self.now_ms();
        let (changed_operator, halt) = {
            let mut s = self.lock();
            let beat = Presence {
                status,
                last_heartbeat_ms: now,
                silence_halted_ms: None,
            };
            let p = s
                .presence
                .entry(agent.to_owned())
                .or_insert_with(|| beat.clone());
            p.status = status;
            p.last_heartbeat_ms = now;
            s.presence_unsaved.insert(agent.to_owned(), beat);
            if let Some(info) = s.agents.get_mut(agent) {
                info.last_seen_ms = info.last_seen_ms.max(now);
            }
            let changed = operator.filter(|op| s.operators.get(agent) != Some(op));
            let halt = s.halts.applicable(agent, session).next().cloned();
            (changed, halt)
        };
        if let Some(op) = changed_operator {
            let draft = EntryDraft {
                ts_ms: now,
                kind: "agent.operator".into(),
                agent_id: agent.to_owned(),
                session_id: session.unwrap_or("").to_owned(),
                outcome: String::new(),
                body: json!({"operator": op, "principal": who.name}).into(),
            };
            let ops = vec![StateOp::SetOperator {
                agent_id: agent.to_owned(),
                operator: op.clone(),
                set_by: who.name.clone(),
                set_ms: now,
            }];
            self.append(draft, ops).await?;
            self.lock().operators.insert(agent.to_owned(), op);
        }
        Ok(halt)
    }

    /// Presence and registered operator of an agent (for ListAgents).
    pub fn presence(&self, agent: &str) -> (Option<PresenceStatus>, Option<String>) {
        let s = self.lock();
        (
            s.presence.get(agent).map(|p| p.status),
            s.operators.get(agent).cloned(),
        )
    }

    /// Writes the heartbeats received here since the last call to the store, then (with
    /// a shared store) takes in the newest heartbeat every other server received.
    pub async fn sync_presence(&self) -> Result<(), StoreError> {
        self.flush_presence().await?;
        self.merge_presence().await
    }

    /// Writes the heartbeats received since the last flush in one upsert; on failure
    /// they are kept (unless a newer one arrived meanwhile) for the next flush.
    pub async fn flush_presence(&self) -> Result<(), StoreError> {
        let unsaved = std::mem::take(&mut self.lock().presence_unsaved);
        if unsaved.is_empty() {
            return Ok(());
        }
        let rows: Vec<PresenceRow> = unsaved
            .into_iter()
            .map(|(agent_id, p)| PresenceRow {
                agent_id,
                status: p.status,
                last_heartbeat_ms: p.last_heartbeat_ms,
                silence_halted_ms: None,
            })
            .collect();
        let written = self.store.put_presence(&rows).await;
        if written.is_err() {
            let mut s = self.lock();
            for r in rows {
                s.presence_unsaved.entry(r.agent_id).or_insert(Presence {
                    status: r.status,
                    last_heartbeat_ms: r.last_heartbeat_ms,
                    silence_halted_ms: None,
                });
            }
        }
        written
    }

    /// Takes in the heartbeats other servers received (shared store only): per agent,
    /// the newest heartbeat wins, and a silence already halted for stays halted for.
    async fn merge_presence(&self) -> Result<(), StoreError> {
        // A single writer received every heartbeat itself: memory has them all.
        let Some(replicated) = self.store.replicated() else {
            return Ok(());
        };
        let rows = replicated.shared_presence().await?;
        let mut guard = self.lock();
        let s = &mut *guard;
        for r in rows {
            if let Some(info) = s.agents.get_mut(&r.agent_id) {
                info.last_seen_ms = info.last_seen_ms.max(r.last_heartbeat_ms);
            }
            match s.presence.get_mut(&r.agent_id) {
                Some(p) => {
                    if r.last_heartbeat_ms > p.last_heartbeat_ms {
                        p.status = r.status;
                        p.last_heartbeat_ms = r.last_heartbeat_ms;
                    }
                    p.silence_halted_ms = p.silence_halted_ms.max(r.silence_halted_ms);
                }
                None => {
                    s.presence.insert(
                        r.agent_id,
                        Presence {
                            status: r.status,
                            last_heartbeat_ms: r.last_heartbeat_ms,
                            silence_halted_ms: r.silence_halted_ms,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// One watchdog pass; run periodically.
    pub async fn watchdog(&self) {
        let policy = self.policy();
        let w = &policy.watchdog;
        let now = self.now_ms();
        // Silence and overspend are judged by one replica at a time (the lease holder,
        // which sees every replica's settled spend within a second); loop trips are
        // acted on by the replica that saw them.
        let judge_silence = self.leads("watchdog").await;
        // (agent, condition key, why, the heartbeat whose silence it is)
        let mut actions: Vec<(String, String, String, Option<i64>)> = Vec::new();
        {
            let mut s = self.lock();
            let unresponsive_ms = w.unresponsive_after.as_millis() as i64;
            let mut silent = Vec::new();
            for (agent, p) in s.presence.iter_mut() {
                let quiet = now - p.last_heartbeat_ms;
                if quiet >= unresponsive_ms {
                    p.status = PresenceStatus::Unresponsive;
                }
                // Already halted for this silence, here, on another replica or before
                // a restart (the mark is stored with that halt).
                let acted = p
                    .silence_halted_ms
                    .is_some_and(|h| h >= p.last_heartbeat_ms);
                if let Some(limit) = w.halt_silent_after.filter(|_| judge_silence && !acted) {
                    if quiet >= limit.as_millis() as i64 {
                        silent.push((
                            agent.clone(),
                            format!("silent:{agent}:{}", p.last_heartbeat_ms),
                            format!(
                                "no heartbeat for {}",
                                humantime::format_duration(Duration::from_secs(
                                    (quiet / 1000) as u64
                                ))
                            ),
                            Some(p.last_heartbeat_ms),
                        ));
                    }
                }
            }
            actions.extend(silent);
            let trips = std::mem::take(&mut s.loop_trips);
            if w.halt_looping {
                for agent in trips {
                    let key = format!("loop:{agent}:{}", now / 60_000);
                    actions.push((agent, key, "its loop guard tripped".to_owned(), None));
                }
            }
            if w.halt_over_budget && judge_silence {
                let agents: Vec<String> = s.agents.keys().cloned().collect();
                for agent in agents {
                    for b in crate::pipeline::budget_view(&policy, &s, Some(&agent), None, now) {
                        let c = b.counter.spent;
                        let over = b.caps.micro_usd.is_some_and(|cap| c.micro_usd > cap.0)
                            || b.caps.tokens.is_some_and(|cap| c.tokens > cap)
                            || b.caps.calls.is_some_and(|cap| c.calls > cap);
                        if over {
                            actions.push((
                                agent.clone(),
                                format!(
                                    "budget:{agent}:{}:{}:{}",
                                    b.name, b.scope_key, b.window_start_ms
                                ),
                                format!("recorded spend is over budget {:?}", b.name),
                                None,
                            ));
                        }
                    }
                }
            }
            actions.retain(|(agent, key, _, _)| {
                !s.watchdog_done.contains(key)
                    && s.halts.get(&HaltTarget::Agent(agent.clone())).is_none()
            });
            for (_, key, _, _) in &actions {
                s.watchdog_done.insert(key.clone());
            }
        }
        let watchdog =
            Principal::new("watchdog".into(), vec![Role::Operator], vec![]).expect("no patterns");
        for (agent, key, why, silence) in actions {
            // A silence is marked on its presence row; the other conditions by key.
            let also = vec![match silence {
                Some(heartbeat_ms) => StateOp::SilenceHalted {
                    agent_id: agent.clone(),
                    heartbeat_ms,
                },
                None => StateOp::WatchdogMark {
                    condition: key.clone(),
                    marked_ms: now,
                },
            }];
            if let Err(e) = self
                .halt_with(
                    &watchdog,
                    HaltTarget::Agent(agent.clone()),
                    HaltMode::HaltAll,
                    format!("watchdog: {why}"),
                    also,
                )
                .await
            {
                if matches!(e, EngineError::Lost(Refusal::WatchdogDone { .. })) {
                    // Another replica (or this one before a restart) already halted for
                    // this condition: done, nothing to retry.
                    tracing::info!(%agent, condition = %key, "watchdog: already halted for this condition");
                } else {
                    tracing::error!(error = %e, %agent, "watchdog could not halt; will retry");
                    self.lock().watchdog_done.remove(&key);
                }
            } else {
                tracing::warn!(%agent, reason = %why, "watchdog halted an agent");
                if let Some(p) = self.lock().presence.get_mut(&agent) {
                    p.silence_halted_ms = p.silence_halted_ms.max(silence);
                }
            }
        }
    }
}
