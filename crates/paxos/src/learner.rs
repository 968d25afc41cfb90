//! The learner: decided values, the commit index, catch-up from peers, snapshots.

use crate::engine::{Engine, Role};
use crate::id::{Ballot, NodeId, Slot};
use crate::message::Message;
use crate::ready::SnapshotRequest;
use crate::value::Value;

/// At most this many slots in one catch-up answer (also bounded by `max_batch_bytes`).
pub(crate) const CATCHUP_MAX_SLOTS: usize = 256;

impl Engine {
    /// `value` is decided in `slot`: remember it and hand the driver every slot that is now
    /// contiguous.
    pub(crate) fn learn(&mut self, slot: Slot, value: Value) {
        if slot <= self.decided || slot == 0 {
            return;
        }
        if let Some(known) = self.log.get(&slot) {
            if *known != value {
                // Two different decisions for one slot: only a bug (or a planted fault) does
                // this. Keep the first; the simulator's agreement check reports it.
                tracing::error!(node = %self.id(), slot, "conflicting decided values; keeping the first");
            }
            return;
        }
        if let Role::Leader(l) = &mut self.role {
            if l.proposals.get(&slot).is_some_and(|p| p.value != value) {
                // Someone decided another value at a higher ballot than ours: we are deposed.
                // Step down before our commit index can vouch for our own proposal.
                self.step_down();
            } else if let Some(p) = l.proposals.remove(&slot) {
                // Learned from a peer rather than counted: no more votes needed.
                l.forget_inflight(&p.value);
            }
        }
        if let Value::Batch(cmds) = &value {
            for c in cmds {
                self.own.remove(&c.id);
                self.recent_ids.insert(c.id);
            }
        }
        self.log.insert(slot, value);
        self.known_commit = self.known_commit.max(slot);
        self.advance_decided();
    }

    /// Moves `decided` over every contiguous known value, emitting each once, in order.
    pub(crate) fn advance_decided(&mut self) {
        while let Some(v) = self.log.get(&(self.decided + 1)) {
            self.decided += 1;
            self.out.decided.push((self.decided, v.clone()));
        }
        while let Some(e) = self.votes.first_entry() {
            if *e.key() > self.decided {
                break;
            }
            e.remove();
        }
    }

    /// A follower counts a durable vote (`Accepted`) for `slot` at `ballot`: the leader's,
    /// or its own fed back. Only a slot this node accepted at that very ballot counts: a
    /// leader proposes one value per slot per ballot, so a quorum of votes at the ballot
    /// chose the value accepted here. Only a slot whose config is settled here counts (at
    /// most `alpha` past the applied one): an acceptor may take accepts further ahead, where
    /// a membership change it has not applied yet could make the config it knows stale.
    pub(crate) fn on_vote(&mut self, from: NodeId, ballot: Ballot, slot: Slot) {
        if slot <= self.decided || slot > self.applied.saturating_add(self.opts.alpha) {
            return;
        }
        let me = self.id();
        let Some((b, value)) = self.accepted.get(&slot) else {
            return;
        };
        if *b != ballot {
            return;
        }
        let votes = self
            .votes
            .entry(slot)
            .or_insert_with(|| (ballot, Vec::new()));
        if votes.0 != ballot {
            *votes = (ballot, Vec::new());
        }
        if !votes.1.contains(&from) {
            votes.1.push(from);
        }
        // Our own vote is durable only once it came back to us.
        if votes.1.contains(&me) && self.configs.at(slot).is_quorum(votes.1.iter()) {
            let value = value.clone();
            self.votes.remove(&slot);
            self.learn(slot, value);
        }
    }

    /// The leader at `ballot` says every slot up to `commit` is decided. A value we accepted
    /// at that very ballot is the one it decided (a leader proposes one value per slot per
    /// ballot, and steps down rather than vouch for a slot decided otherwise); anything else
    /// we fetch.
    pub(crate) fn learn_commit(&mut self, from: NodeId, ballot: Ballot, commit: Slot) {
        self.known_commit = self.known_commit.max(commit);
        while self.decided < commit {
            let slot = self.decided + 1;
            match self.accepted.get(&slot) {
                Some((b, v)) if *b == ballot || self.opts.faults.count_across_ballots => {
                    let v = v.clone();
                    self.learn(slot, v);
                    if self.decided < slot {
                        break; // a conflicting value is known; never loop on it
                    }
                }
                _ => break,
            }
        }
        if self.decided < commit {
            self.request_catchup(from);
        }
    }

    /// Asks `peer` for the decided slots we lack, unless a request is already out.
    pub(crate) fn request_catchup(&mut self, peer: NodeId) {
        if peer == self.id() || self.snapshot_asked.is_some() {
            return;
        }
        let retry = u64::from(self.opts.heartbeat_ticks.max(1)) * 2;
        if self
            .catchup
            .is_some_and(|(_, t)| self.now.saturating_sub(t) < retry)
        {
            return;
        }
        self.catchup = Some((peer, self.now));
        let from = self.decided + 1;
        let to = self.known_commit.max(from);
        self.send_now(peer, Message::CatchUp { from, to });
    }

    /// Re-asks (the leader, preferably) when an answer never came.
    pub(crate) fn retry_catchup(&mut self) {
        if self.decided >= self.known_commit {
            self.catchup = None;
            return;
        }
        let peer = self
            .leader
            .filter(|l| *l != self.id())
            .or(self.catchup.map(|(p, _)| p));
        if let Some(peer) = peer {
            self.request_catchup(peer);
        }
        let patience = u64::from(self.opts.election_ticks.1.max(1)) * 4;
        if self
            .snapshot_asked
            .is_some_and(|t| self.now.saturating_sub(t) > patience)
        {
            // The driver never installed it: allow asking again.
            self.snapshot_asked = None;
        }
    }

    pub(crate) fn on_catchup(&mut self, from: NodeId, lo: Slot, hi: Slot) {
        if from == self.id() {
            return;
        }
        let lo = lo.max(1);
        if lo > self.decided {
            return;
        }
        if !self.log.contains_key(&lo) {
            // Compacted (or never held, after a restart): only a snapshot covers it.
            if self.applied >= lo {
                self.send_now(
                    from,
                    Message::Compacted {
                        applied: self.applied,
                    },
                );
            }
            return;
        }
        let hi = hi.min(self.decided);
        let mut bytes = 0usize;
        let mut entries = Vec::new();
        for (expect, (s, v)) in (lo..).zip(self.log.range(lo..=hi)) {
            if *s != expect || entries.len() >= CATCHUP_MAX_SLOTS {
                break;
            }
            bytes += v.size_bytes();
            if !entries.is_empty() && bytes > self.opts.max_batch_bytes {
                break;
            }
            entries.push((*s, v.clone()));
        }
        if !entries.is_empty() {
            self.send_now(from, Message::Decided { entries });
        }
    }

    pub(crate) fn on_decided(&mut self, from: NodeId, entries: Vec<(Slot, Value)>) {
        if from == self.id() {
            return;
        }
        let before = self.decided;
        for (slot, value) in entries {
            self.learn(slot, value);
        }
        if self.catchup.is_some_and(|(p, _)| p == from) {
            self.catchup = None;
        }
        if self.decided > before && self.decided < self.known_commit {
            self.request_catchup(from);
        }
    }

    pub(crate) fn on_compacted(&mut self, from: NodeId, applied: Slot) {
        if from == self.id() || applied <= self.decided || self.snapshot_asked.is_some() {
            return;
        }
        tracing::info!(node = %self.id(), peer = %from, slot = applied, "asking for a snapshot");
        self.snapshot_asked = Some(self.now);
        self.catchup = None;
        self.known_commit = self.known_commit.max(applied);
        self.out.snapshot = Some(SnapshotRequest {
            from,
            slot: applied,
        });
    }
}
