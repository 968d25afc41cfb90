//! The acceptor: promises (phase 1b) and accepts (phase 2b), each durable before reported.

use crate::engine::{Engine, Role};
use crate::id::{Ballot, NodeId, Slot};
use crate::message::Message;
use crate::state::Record;
use crate::value::Value;

/// At most this many decided values go in one promise; a candidate further behind is told
/// to catch up first (bounds the message, and a lagging node should not lead anyway).
pub(crate) const MAX_PROMISE_DECIDED: u64 = 256;

impl Engine {
    /// How far beyond the contiguous decided slot an acceptor still takes accepts. A node
    /// further behind stops voting until it catches up, which bounds its memory.
    pub(crate) fn accept_horizon(&self) -> Slot {
        self.decided
            .saturating_add(self.opts.alpha.saturating_mul(4).max(64))
    }

    /// Whether this node still hears from a live leader other than `from`: then it ignores
    /// phase 1 from `from` (leader stickiness).
    pub(crate) fn sticky_against(&self, from: NodeId) -> bool {
        match &self.role {
            Role::Leader(l) => self.quorum_heard_within(l, self.opts.election_ticks.0),
            _ => {
                self.leader.is_some_and(|l| l != from)
                    && self.election_elapsed < self.opts.election_ticks.0
            }
        }
    }

    pub(crate) fn on_prepare(&mut self, from: NodeId, ballot: Ballot, from_slot: Slot) {
        if from == self.id() || ballot.node != from {
            return; // our own prepare is answered locally; others may only use their own id
        }
        self.max_round_seen = self.max_round_seen.max(ballot.round);
        let duplicate = ballot == self.promised;
        if ballot < self.promised {
            self.send_now(
                from,
                Message::Reject {
                    ballot,
                    promised: self.promised,
                },
            );
            return;
        }
        if !duplicate && self.sticky_against(from) {
            tracing::trace!(node = %self.id(), candidate = %from, "ignoring prepare: leader is alive");
            return;
        }
        let from_slot = from_slot.max(1);
        if from_slot <= self.decided {
            let gap = self.decided - from_slot;
            if gap >= MAX_PROMISE_DECIDED || !self.log.contains_key(&from_slot) {
                self.send_now(
                    from,
                    Message::Behind {
                        ballot,
                        decided: self.decided,
                    },
                );
                return;
            }
        }
        if !duplicate {
            self.promise(ballot);
            self.set_leader(None);
            self.reset_election_timer();
        }
        let msg = self.promise_message(ballot, from_slot);
        self.send_durable(from, msg);
    }

    /// Records a promise of `ballot`: durable, and whoever led or campaigned below it stops.
    pub(crate) fn promise(&mut self, ballot: Ballot) {
        debug_assert!(ballot > self.promised);
        self.promised = ballot;
        self.max_round_seen = self.max_round_seen.max(ballot.round);
        self.persist(Record::Promise(ballot));
        let outranked = match &self.role {
            Role::Leader(l) => l.ballot < ballot,
            Role::Candidate(c) => c.ballot < ballot,
            Role::Follower => false,
        };
        if outranked {
            self.step_down();
        }
    }

    /// The phase-1b answer: everything this node accepted or knows decided from `from_slot`.
    pub(crate) fn promise_message(&self, ballot: Ballot, from_slot: Slot) -> Message {
        Message::Promise {
            ballot,
            from_slot,
            accepted: self
                .accepted
                .range(from_slot..)
                .map(|(s, (b, v))| (*s, *b, v.clone()))
                .collect(),
            decided: self
                .log
                .range(from_slot..)
                .map(|(s, v)| (*s, v.clone()))
                .collect(),
        }
    }

    /// A message from a leader at `ballot`: follow it if it is current. Returns whether the
    /// message should be acted on.
    pub(crate) fn observe_leader(&mut self, from: NodeId, ballot: Ballot) -> bool {
        if from == self.id() || ballot.node != from {
            return false;
        }
        self.max_round_seen = self.max_round_seen.max(ballot.round);
        if ballot < self.promised {
            self.send_now(
                from,
                Message::Reject {
                    ballot,
                    promised: self.promised,
                },
            );
            return false;
        }
        if ballot > self.promised {
            // A leader got a phase-1 quorum without us; we may not accept below it any more.
            self.promise(ballot);
        }
        if let Role::Candidate(_) = self.role {
            self.step_down();
        }
        self.set_leader(Some(from));
        self.pre_vote = None;
        self.failed_campaigns = 0;
        self.election_elapsed = 0;
        true
    }

    pub(crate) fn on_accept(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        slot: Slot,
        value: Value,
        commit: Slot,
    ) {
        if !self.observe_leader(from, ballot) || slot == 0 {
            return;
        }
        if slot <= self.decided {
            // Already decided here: tell the leader instead of voting again.
            if let Some(v) = self.log.get(&slot) {
                let entries = vec![(slot, v.clone())];
                self.send_now(from, Message::Decided { entries });
            }
        } else if slot <= self.accept_horizon() {
            self.accept(from, ballot, slot, value);
        }
        self.learn_commit(from, ballot, commit);
    }

    /// Accepts `value` in `slot` at `ballot` (the current promise) and answers `to` once durable.
    pub(crate) fn accept(&mut self, to: NodeId, ballot: Ballot, slot: Slot, value: Value) {
        debug_assert!(ballot >= self.promised);
        self.accepted.insert(slot, (ballot, value.clone()));
        self.persist(Record::Accept {
            slot,
            ballot,
            value,
        });
        self.send_durable(to, Message::Accepted { ballot, slot });
        // Where two votes make a quorum (three voters), the leader's vote also goes to each
        // follower, and a follower feeds its own back to itself: a follower then learns the
        // slot decided once both are durable, without the round through the leader
        // (Accepted to it, Commit back), which its clients waited for.
        let me = self.id();
        let cfg = self.configs.at(slot);
        if to == me {
            let followers: Vec<NodeId> = cfg
                .voters
                .iter()
                .filter(|v| **v != me && cfg.is_quorum([&me, *v]))
                .copied()
                .collect();
            for f in followers {
                self.send_durable(f, Message::Accepted { ballot, slot });
            }
        } else if cfg.is_quorum([&me, &to]) {
            self.send_durable(me, Message::Accepted { ballot, slot });
        }
    }

    pub(crate) fn on_heartbeat(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        commit: Slot,
        read_seq: u64,
    ) {
        if !self.observe_leader(from, ballot) {
            return;
        }
        self.learn_commit(from, ballot, commit);
        let decided = self.decided;
        // After persist: the ack vouches for our promise, which may be in this batch.
        self.out.send_after_persist.push((
            from,
            Message::HeartbeatAck {
                ballot,
                read_seq,
                decided,
            },
        ));
    }
}
