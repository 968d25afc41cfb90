//! Pre-vote: before a node raises its ballot it asks whether a quorum would promise it.
//!
//! Without it, a node that cannot hear the leader (cut off, or removed while it was away and
//! no longer sent anything) campaigns again and again, each time at a higher ballot that it
//! promises itself durably. When it is heard again, that ballot deposes a healthy leader, and
//! acceptors that promised it refuse the leader's accepts. With pre-vote its ballot stays
//! where it was until a quorum, none of which still hears a live leader, says yes.

use std::collections::BTreeSet;

use crate::engine::{Engine, Role};
use crate::id::{Ballot, NodeId, Slot};
use crate::message::Message;

/// A pre-vote under way: the ballot round it would campaign at, and who said yes.
#[derive(Debug)]
pub(crate) struct PreVote {
    pub(crate) round: u64,
    pub(crate) from_slot: Slot,
    pub(crate) grants: BTreeSet<NodeId>,
}

impl Engine {
    /// The election timeout fired: stop trusting the leader, and campaign only once a quorum
    /// of every config from the first undecided slot agrees (at once if this node is one).
    pub(crate) fn start_pre_vote(&mut self) {
        self.step_down();
        self.set_leader(None);
        let round = self.promised.round.max(self.max_round_seen) + 1;
        let from_slot = self.decided + 1;
        let window_end = self.window_end();
        let grants = BTreeSet::from([self.id()]);
        if self
            .configs
            .first_uncovered(&grants, from_slot, window_end)
            .is_none()
        {
            self.campaign();
            return;
        }
        tracing::debug!(node = %self.id(), round, from_slot, "pre-vote");
        let id = self.id();
        for v in self.configs.voters_in(from_slot, window_end) {
            if v != id {
                self.send_now(v, Message::PreVote { round });
            }
        }
        self.pre_vote = Some(PreVote {
            round,
            from_slot,
            grants,
        });
    }

    /// Would this node promise `from` at `round`? Changes nothing here: not the promise, not
    /// the leader believed, not the election timer.
    pub(crate) fn on_pre_vote(&mut self, from: NodeId, round: u64) {
        if from == self.id() {
            return;
        }
        let ballot = Ballot { round, node: from };
        let granted = ballot > self.promised && !self.sticky_against(from);
        self.send_now(
            from,
            Message::PreVoteResp {
                round,
                granted,
                promised: self.promised,
            },
        );
    }

    pub(crate) fn on_pre_vote_resp(
        &mut self,
        from: NodeId,
        round: u64,
        granted: bool,
        promised: Ballot,
    ) {
        self.max_round_seen = self.max_round_seen.max(promised.round);
        if !matches!(self.role, Role::Follower) {
            return;
        }
        let window_end = self.window_end();
        let Some(p) = &mut self.pre_vote else {
            return;
        };
        if p.round != round || !granted {
            return;
        }
        p.grants.insert(from);
        if self
            .configs
            .first_uncovered(&p.grants, p.from_slot, window_end)
            .is_none()
        {
            self.pre_vote = None;
            self.campaign();
        }
    }
}
