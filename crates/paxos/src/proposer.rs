//! The proposer: campaigns (phase 1), leads (phase 2 per slot, pipelined and batched),
//! counts votes, and steps down.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::{Engine, Role};
use crate::id::{Ballot, IdSet, NodeId, Slot};
use crate::message::Message;
use crate::reads::{PendingRead, ReadRound};
use crate::value::{Command, Value};

/// A node running phase 1 at `ballot` for every slot from `from_slot` on.
#[derive(Debug)]
pub(crate) struct Candidate {
    pub(crate) ballot: Ballot,
    pub(crate) from_slot: Slot,
    pub(crate) promisers: BTreeSet<NodeId>,
    /// Highest-ballot accepted value per slot among the promises so far.
    pub(crate) recovery: BTreeMap<Slot, (Ballot, Value)>,
}

/// One slot this leader proposed and has not seen decided.
#[derive(Debug)]
pub(crate) struct Proposal {
    pub(crate) value: Value,
    /// Who voted, at which ballot (only the leader's own ballot counts, faults aside).
    pub(crate) votes: BTreeMap<NodeId, Ballot>,
    /// Tick the accept was last sent.
    pub(crate) sent: u64,
}

/// A node that completed phase 1 at `ballot`.
#[derive(Debug)]
pub(crate) struct Leader {
    pub(crate) ballot: Ballot,
    pub(crate) promisers: BTreeSet<NodeId>,
    /// Values to re-propose (highest accepted ballot per slot), slots >= `next_slot`.
    pub(crate) recovery: BTreeMap<Slot, (Ballot, Value)>,
    /// Slots up to here that nobody reported get a no-op (hole filling).
    pub(crate) recovery_end: Slot,
    /// Next slot to propose.
    pub(crate) next_slot: Slot,
    pub(crate) proposals: BTreeMap<Slot, Proposal>,
    /// Ids of commands in `proposals`, so a retried command is not proposed twice.
    pub(crate) inflight_ids: IdSet,
    /// Tick each peer last answered at our ballot.
    pub(crate) last_ack: BTreeMap<NodeId, u64>,
    pub(crate) since_heartbeat: u32,
    /// The commit index followers were last told.
    pub(crate) commit_sent: Slot,
    /// Tick of the last prepare sent to extend phase 1 to a new config's voters.
    pub(crate) extend_sent: Option<u64>,
    pub(crate) read_seq: u64,
    pub(crate) read_round: Option<ReadRound>,
    pub(crate) reads_waiting: Vec<PendingRead>,
}

impl Leader {
    /// The commands of a proposal that is decided (or dropped) are no longer in flight.
    pub(crate) fn forget_inflight(&mut self, value: &Value) {
        if let Value::Batch(cmds) = value {
            for c in cmds {
                self.inflight_ids.remove(&c.id);
            }
        }
    }
}

/// Folds reported accepted values into `recovery`, keeping the highest ballot per slot.
fn adopt(recovery: &mut BTreeMap<Slot, (Ballot, Value)>, slot: Slot, ballot: Ballot, value: Value) {
    match recovery.get(&slot) {
        Some((b, _)) if *b >= ballot => {}
        _ => {
            recovery.insert(slot, (ballot, value));
        }
    }
}

impl Engine {
    /// Starts phase 1 at a fresh ballot for every slot from the first one not known decided.
    pub(crate) fn campaign(&mut self) {
        let ballot = Ballot {
            round: self.promised.round.max(self.max_round_seen) + 1,
            node: self.id(),
        };
        let from_slot = self.decided + 1;
        tracing::debug!(node = %self.id(), %ballot, from_slot, "campaigning");
        self.failed_campaigns = self.failed_campaigns.saturating_add(1);
        self.pre_vote = None;
        self.step_down();
        // Our own promise is durable before any prepare leaves: a ballot is never reused,
        // even by a node that crashes mid-campaign.
        self.promise(ballot);
        if self.opts.faults.skip_phase1 {
            let promisers = self.configs.voters_in(from_slot, self.window_end());
            let cand = Candidate {
                ballot,
                from_slot,
                promisers,
                recovery: BTreeMap::new(),
            };
            self.become_leader(cand);
            return;
        }
        self.role = Role::Candidate(Candidate {
            ballot,
            from_slot,
            promisers: BTreeSet::new(),
            recovery: BTreeMap::new(),
        });
        let id = self.id();
        for v in self.configs.voters_in(from_slot, self.window_end()) {
            if v != id {
                self.out
                    .send_after_persist
                    .push((v, Message::Prepare { ballot, from_slot }));
            }
        }
        let mine = self.promise_message(ballot, from_slot);
        self.send_durable(id, mine);
    }

    pub(crate) fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        from_slot: Slot,
        accepted: Vec<(Slot, Ballot, Value)>,
        decided: Vec<(Slot, Value)>,
    ) {
        let ours = match &self.role {
            Role::Candidate(c) => c.ballot == ballot && c.from_slot == from_slot,
            Role::Leader(l) => l.ballot == ballot,
            Role::Follower => false,
        };
        if !ours {
            return;
        }
        for (slot, value) in decided {
            if slot >= from_slot {
                self.learn(slot, value);
            }
        }
        // Learning may have shown us deposed.
        let ignore_others = self.opts.faults.ignore_accepted && from != self.id();
        let decided_upto = self.decided;
        let window_end = self.window_end();
        match &mut self.role {
            Role::Candidate(c) if c.ballot == ballot => {
                c.promisers.insert(from);
                for (slot, b, v) in accepted {
                    if slot >= c.from_slot && slot > decided_upto && b < ballot && !ignore_others {
                        adopt(&mut c.recovery, slot, b, v);
                    }
                }
                if self
                    .configs
                    .first_uncovered(&c.promisers, c.from_slot, window_end)
                    .is_none()
                {
                    let Role::Candidate(c) = std::mem::replace(&mut self.role, Role::Follower)
                    else {
                        unreachable!("matched a candidate above")
                    };
                    self.become_leader(c);
                }
            }
            Role::Leader(l) if l.ballot == ballot => {
                // A late promise, or one extending phase 1 to a new config's voters: it still
                // constrains the slots not proposed yet.
                l.promisers.insert(from);
                l.last_ack.insert(from, self.now);
                for (slot, b, v) in accepted {
                    if slot >= l.next_slot && slot > decided_upto && b < ballot && !ignore_others {
                        l.recovery_end = l.recovery_end.max(slot);
                        adopt(&mut l.recovery, slot, b, v);
                    }
                }
            }
            _ => {}
        }
    }

    fn become_leader(&mut self, c: Candidate) {
        let recovery_end = c
            .recovery
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.log.keys().next_back().copied().unwrap_or(0))
            .max(self.decided);
        tracing::info!(node = %self.id(), ballot = %c.ballot, from_slot = c.from_slot, recovery_end, "leading");
        let now = self.now;
        let last_ack = c.promisers.iter().map(|p| (*p, now)).collect();
        self.role = Role::Leader(Box::new(Leader {
            ballot: c.ballot,
            promisers: c.promisers,
            recovery: c.recovery,
            recovery_end,
            next_slot: self.decided + 1,
            proposals: BTreeMap::new(),
            inflight_ids: IdSet::default(),
            last_ack,
            since_heartbeat: 0,
            commit_sent: 0,
            extend_sent: None,
            read_seq: 0,
            read_round: None,
            reads_waiting: Vec::new(),
        }));
        self.set_leader(Some(self.id()));
        self.failed_campaigns = 0;
        // Tell everyone at once, so followers stop campaigning and learn our commit.
        self.broadcast_heartbeat();
    }

    /// Stops leading or campaigning; reads waiting on this leader fail. Queued commands stay
    /// queued, to be forwarded to the next leader.
    pub(crate) fn step_down(&mut self) {
        let old = std::mem::replace(&mut self.role, Role::Follower);
        if let Role::Leader(l) = old {
            tracing::info!(node = %self.id(), ballot = %l.ballot, "stepping down");
            self.fail_leader_reads(*l);
            self.set_leader(None);
        }
        self.reset_election_timer();
    }

    pub(crate) fn on_reject(&mut self, ballot: Ballot, promised: Ballot) {
        self.max_round_seen = self.max_round_seen.max(promised.round);
        let mine = match &self.role {
            Role::Candidate(c) => c.ballot == ballot,
            Role::Leader(l) => l.ballot == ballot,
            Role::Follower => false,
        };
        if mine && promised > ballot {
            tracing::debug!(node = %self.id(), %ballot, %promised, "ballot rejected");
            // Back off: a random timeout before trying again keeps duels short.
            self.step_down();
        }
    }

    pub(crate) fn on_behind(&mut self, from: NodeId, ballot: Ballot, decided: Slot) {
        if let Role::Candidate(c) = &self.role {
            if c.ballot == ballot && decided > self.decided {
                self.step_down();
                self.known_commit = self.known_commit.max(decided);
                self.request_catchup(from);
            }
        }
    }

    /// Whether a majority of the next slot's voters answered at our ballot within `ticks`.
    pub(crate) fn quorum_heard_within(&self, l: &Leader, ticks: u32) -> bool {
        let cfg = self.configs.at(l.next_slot);
        let heard = cfg.voters.iter().filter(|v| {
            **v == self.id()
                || l.last_ack
                    .get(v)
                    .is_some_and(|t| self.now.saturating_sub(*t) <= u64::from(ticks))
        });
        cfg.is_quorum(heard)
    }

    pub(crate) fn leader_tick(&mut self) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        l.since_heartbeat += 1;
        let due = l.since_heartbeat >= self.opts.heartbeat_ticks.max(1);
        let Role::Leader(l) = &self.role else { return };
        if !self.quorum_heard_within(l, self.opts.election_ticks.1.max(1)) {
            // Cut off from a majority: let the rest elect someone, and fail fast meanwhile.
            tracing::info!(node = %self.id(), "lost contact with a quorum");
            self.step_down();
            return;
        }
        if !self.is_voter() {
            // Removed from the voters of every slot still to decide: the remaining voters
            // elect one of themselves. (Until then we lead even slots we don't vote in.)
            tracing::info!(node = %self.id(), "no longer a voter");
            self.step_down();
            return;
        }
        if due {
            self.broadcast_heartbeat();
            self.resend_accepts();
        }
    }

    /// Tells every member the leader is alive and how far slots are decided; also confirms
    /// the latest read round.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        let commit = self.decided;
        let members = self.members();
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        l.since_heartbeat = 0;
        l.commit_sent = commit;
        let (ballot, read_seq) = (l.ballot, l.read_seq);
        for m in members {
            self.out.send_now.push((
                m,
                Message::Heartbeat {
                    ballot,
                    commit,
                    read_seq,
                },
            ));
        }
    }

    /// Every member but this node, of the configs of slots not yet known decided.
    pub(crate) fn members(&self) -> Vec<NodeId> {
        let id = self.id();
        let from = self.decided + 1;
        let to = self.window_end().max(from);
        self.configs
            .members_in(from, to)
            .into_iter()
            .filter(|m| *m != id)
            .collect()
    }

    /// Accepts whose votes are slow to come are sent again to the voters that have not voted.
    fn resend_accepts(&mut self) {
        let id = self.id();
        let now = self.now;
        let commit = self.decided;
        let period = u64::from(self.opts.heartbeat_ticks.max(1));
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let ballot = l.ballot;
        for (slot, p) in l.proposals.iter_mut() {
            if now - p.sent < period {
                continue;
            }
            p.sent = now;
            for v in &self.configs.at(*slot).voters {
                if *v != id && p.votes.get(v) != Some(&ballot) {
                    let msg = Message::Accept {
                        ballot,
                        slot: *slot,
                        value: p.value.clone(),
                        commit,
                    };
                    self.out.send_now.push((*v, msg));
                }
            }
        }
    }

    /// The leader's part of `ready`: fill the pipeline, publish the commit index, start a
    /// read round.
    pub(crate) fn leader_ready(&mut self) {
        self.fill_pipeline();
        let commit = self.decided;
        if let Role::Leader(l) = &self.role {
            if commit > l.commit_sent {
                let ballot = l.ballot;
                for m in self.members() {
                    self.out
                        .send_now
                        .push((m, Message::Commit { ballot, commit }));
                }
                if let Role::Leader(l) = &mut self.role {
                    l.commit_sent = commit;
                }
            }
        }
        self.start_read_round();
    }

    /// Proposes as many slots as the pipeline has room for: recovered values and no-ops
    /// first, then batches of queued commands.
    fn fill_pipeline(&mut self) {
        loop {
            let window_end = self.window_end();
            let Role::Leader(l) = &mut self.role else {
                return;
            };
            let slot = l.next_slot;
            if slot > window_end {
                return;
            }
            if let Some(at) = self.configs.first_uncovered(&l.promisers, slot, slot) {
                // A config change brought voters we have no promise from: extend phase 1.
                self.extend_phase1(at);
                return;
            }
            if self.log.contains_key(&slot) || slot <= self.decided {
                l.recovery.remove(&slot);
                l.next_slot += 1;
                continue;
            }
            let value = if let Some((_, v)) = l.recovery.remove(&slot) {
                v
            } else if slot <= l.recovery_end {
                Value::Noop
            } else if slot - self.decided.min(slot) > self.opts.max_inflight || self.hold_batches {
                // Enough new slots in flight: let the queue grow into a bigger batch.
                return;
            } else if let Some(batch) = self.take_batch() {
                batch
            } else {
                return;
            };
            self.propose_slot(slot, value);
        }
    }

    /// Closes one batch from the queue, skipping commands already decided or in flight.
    fn take_batch(&mut self) -> Option<Value> {
        let mut cmds: Vec<Command> = Vec::new();
        let mut bytes = 0usize;
        while let Some(cmd) = self.queue.front() {
            let size = cmd.data.len() + 32;
            if !cmds.is_empty()
                && (cmds.len() >= self.opts.max_batch_cmds
                    || bytes + size > self.opts.max_batch_bytes)
            {
                break;
            }
            let cmd = self.queue.pop_front().expect("front exists");
            self.queued_ids.remove(&cmd.id);
            let inflight =
                matches!(&self.role, Role::Leader(l) if l.inflight_ids.contains(&cmd.id));
            // (The queue holds each id once: `enqueue` checks `queued_ids`.)
            if self.recent_ids.contains(&cmd.id) || inflight {
                continue;
            }
            bytes += size;
            cmds.push(cmd);
        }
        (!cmds.is_empty()).then_some(Value::Batch(cmds))
    }

    /// Phase 2a for one slot: our own accept is persisted here (its vote comes back to us
    /// once durable); everyone else gets the accept at once.
    fn propose_slot(&mut self, slot: Slot, value: Value) {
        let id = self.id();
        let commit = self.decided;
        let now = self.now;
        let members = self.members();
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let ballot = l.ballot;
        if let Value::Batch(cmds) = &value {
            l.inflight_ids.extend(cmds.iter().map(|c| c.id));
        }
        l.proposals.insert(
            slot,
            Proposal {
                value: value.clone(),
                votes: BTreeMap::new(),
                sent: now,
            },
        );
        l.next_slot = slot + 1;
        l.commit_sent = commit;
        for m in members {
            let msg = Message::Accept {
                ballot,
                slot,
                value: value.clone(),
                commit,
            };
            self.out.send_now.push((m, msg));
        }
        self.accept(id, ballot, slot, value);
    }

    /// Asks the voters of the config governing `slot` that have not promised for a promise
    /// at our ballot (rate-limited to one round per heartbeat period).
    fn extend_phase1(&mut self, slot: Slot) {
        let now = self.now;
        let period = u64::from(self.opts.heartbeat_ticks.max(1));
        let id = self.id();
        let voters = self.configs.at(slot).voters.clone();
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if l.extend_sent.is_some_and(|t| now - t < period) {
            return;
        }
        l.extend_sent = Some(now);
        let ballot = l.ballot;
        let missing: Vec<NodeId> = voters
            .into_iter()
            .filter(|v| *v != id && !l.promisers.contains(v))
            .collect();
        for v in missing {
            self.out.send_now.push((
                v,
                Message::Prepare {
                    ballot,
                    from_slot: slot,
                },
            ));
        }
    }

    pub(crate) fn on_accepted(&mut self, from: NodeId, ballot: Ballot, slot: Slot) {
        let count_across = self.opts.faults.count_across_ballots;
        let now = self.now;
        let Role::Leader(l) = &mut self.role else {
            self.on_vote(from, ballot, slot);
            return;
        };
        if ballot != l.ballot && !(count_across && ballot < l.ballot) {
            return;
        }
        if ballot == l.ballot {
            l.last_ack.insert(from, now);
        }
        let Some(p) = l.proposals.get_mut(&slot) else {
            return;
        };
        p.votes.insert(from, ballot);
        let current = l.ballot;
        let votes = p
            .votes
            .iter()
            .filter(|(_, b)| count_across || **b == current)
            .map(|(n, _)| n);
        if !self.configs.at(slot).is_quorum(votes) {
            return;
        }
        let p = l.proposals.remove(&slot).expect("proposal present");
        l.forget_inflight(&p.value);
        self.learn(slot, p.value);
    }
}
