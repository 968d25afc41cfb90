//! Read index: the leader confirms it still leads with one heartbeat round to a quorum
//! (shared by every read that arrived before the round started), then answers with the
//! highest slot it had assigned when each read arrived.

use std::collections::BTreeSet;

use crate::engine::{Engine, Role};
use crate::id::{Ballot, NodeId, Slot};
use crate::message::Message;
use crate::proposer::Leader;
use crate::ready::ReadError;

/// Who asked for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOrigin {
    /// This node's driver.
    Local,
    /// A follower, on behalf of its own read context.
    Remote(NodeId),
}

/// A read waiting at the leader.
#[derive(Debug, Clone)]
pub(crate) struct PendingRead {
    pub(crate) origin: ReadOrigin,
    pub(crate) ctx: u64,
    /// The highest slot assigned when the read arrived.
    pub(crate) index: Slot,
}

/// One confirmation round in flight.
#[derive(Debug)]
pub(crate) struct ReadRound {
    pub(crate) seq: u64,
    pub(crate) acks: BTreeSet<NodeId>,
    pub(crate) reads: Vec<PendingRead>,
}

impl Engine {
    pub(crate) fn start_read(&mut self, ctx: u64) {
        if matches!(self.role, Role::Leader(_)) {
            self.leader_read(ReadOrigin::Local, ctx);
            return;
        }
        match self.leader {
            Some(leader) if leader != self.id() => {
                if self.fwd_reads.len() >= self.opts.max_pending
                    && !self.fwd_reads.contains_key(&ctx)
                {
                    self.out.reads.push((ctx, Err(ReadError::Busy)));
                    return;
                }
                self.fwd_reads.insert(ctx, (leader, self.now));
                self.send_now(leader, Message::ReadIndex { ctx });
            }
            _ => self.out.reads.push((ctx, Err(ReadError::NoLeader))),
        }
    }

    fn leader_read(&mut self, origin: ReadOrigin, ctx: u64) {
        let decided = self.decided;
        let max_pending = self.opts.max_pending;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let waiting = l.reads_waiting.len() + l.read_round.as_ref().map_or(0, |r| r.reads.len());
        if waiting >= max_pending {
            self.answer_read(origin, ctx, Err(ReadError::Busy));
            return;
        }
        // Everything acknowledged before this read is in a slot we (or a predecessor whose
        // slots we recovered) assigned; a new leader's recovered slots count too.
        let index = (l.next_slot - 1).max(l.recovery_end).max(decided);
        l.reads_waiting.push(PendingRead { origin, ctx, index });
    }

    pub(crate) fn answer_read(
        &mut self,
        origin: ReadOrigin,
        ctx: u64,
        result: Result<Slot, ReadError>,
    ) {
        match origin {
            ReadOrigin::Local => self.out.reads.push((ctx, result)),
            ReadOrigin::Remote(n) => self.send_now(n, Message::ReadIndexResp { ctx, result }),
        }
    }

    /// Starts a confirmation round for the reads waiting, if none is in flight.
    pub(crate) fn start_read_round(&mut self) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if l.read_round.is_some() || l.reads_waiting.is_empty() {
            return;
        }
        l.read_seq += 1;
        let reads = std::mem::take(&mut l.reads_waiting);
        l.read_round = Some(ReadRound {
            seq: l.read_seq,
            acks: [self.opts.id].into(),
            reads,
        });
        self.broadcast_heartbeat();
        self.check_read_round();
    }

    pub(crate) fn on_heartbeat_ack(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        read_seq: u64,
        decided: Slot,
    ) {
        let now = self.now;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if ballot != l.ballot {
            return;
        }
        l.last_ack.insert(from, now);
        if let Some(r) = &mut l.read_round {
            if read_seq >= r.seq {
                r.acks.insert(from);
            }
        }
        self.check_read_round();
        if decided > self.decided {
            // A follower learned slots we have not (decided under an earlier leader, say):
            // fetch them. Such followers no longer vote in those slots, and may have compacted
            // them, so our own accepts could wait for votes forever.
            self.known_commit = self.known_commit.max(decided);
            self.request_catchup(from);
        }
    }

    fn check_read_round(&mut self) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some(r) = &l.read_round else { return };
        if !self.configs.at(l.next_slot).is_quorum(&r.acks) {
            return;
        }
        let r = l.read_round.take().expect("round present");
        for read in r.reads {
            self.answer_read(read.origin, read.ctx, Ok(read.index));
        }
        // Reads that arrived during the round get the next one.
        self.start_read_round();
    }

    pub(crate) fn on_read_index_request(&mut self, from: NodeId, ctx: u64) {
        if from == self.id() {
            return;
        }
        if matches!(self.role, Role::Leader(_)) {
            self.leader_read(ReadOrigin::Remote(from), ctx);
        } else {
            let err = if self.leader.is_some() {
                ReadError::LeaderChanged
            } else {
                ReadError::NoLeader
            };
            self.send_now(
                from,
                Message::ReadIndexResp {
                    ctx,
                    result: Err(err),
                },
            );
        }
    }

    pub(crate) fn on_read_index_response(
        &mut self,
        from: NodeId,
        ctx: u64,
        result: Result<Slot, ReadError>,
    ) {
        if self.fwd_reads.get(&ctx).is_some_and(|(l, _)| *l == from) {
            self.fwd_reads.remove(&ctx);
            self.out.reads.push((ctx, result));
        }
    }

    /// Reads forwarded to a leader we no longer follow can't be answered by it.
    pub(crate) fn fail_forwarded_reads(&mut self) {
        for (ctx, _) in std::mem::take(&mut self.fwd_reads) {
            self.out.reads.push((ctx, Err(ReadError::LeaderChanged)));
        }
    }

    /// A forwarded read whose answer never came (lost message) fails so the caller can retry.
    pub(crate) fn expire_forwarded_reads(&mut self) {
        let patience = u64::from(self.opts.election_ticks.1.max(1)) * 2;
        let now = self.now;
        let expired: Vec<u64> = self
            .fwd_reads
            .iter()
            .filter(|(_, (_, t))| now.saturating_sub(*t) > patience)
            .map(|(c, _)| *c)
            .collect();
        for ctx in expired {
            self.fwd_reads.remove(&ctx);
            self.out.reads.push((ctx, Err(ReadError::LeaderChanged)));
        }
    }

    /// A leader stepping down fails every read it had not confirmed.
    pub(crate) fn fail_leader_reads(&mut self, l: Leader) {
        let mut reads = l.reads_waiting;
        if let Some(r) = l.read_round {
            reads.extend(r.reads);
        }
        for r in reads {
            self.answer_read(r.origin, r.ctx, Err(ReadError::LeaderChanged));
        }
    }
}
