//! Client commands on their way to a slot: the bounded queue, forwarding to the leader, and
//! re-sending commands that seem lost.

use crate::engine::{Engine, Role};
use crate::message::Message;
use crate::ready::ProposeError;
use crate::value::Command;

impl Engine {
    pub(crate) fn propose_cmd(&mut self, cmd: Command) -> Result<(), ProposeError> {
        if self.leader.is_none() {
            return Err(ProposeError::NoLeader);
        }
        let max = self.opts.max_pending;
        if self.queue.len() >= max || (self.own.len() >= max && !self.own.contains_key(&cmd.id)) {
            return Err(ProposeError::Busy);
        }
        self.own.insert(cmd.id, (cmd.clone(), self.now));
        self.enqueue(cmd);
        Ok(())
    }

    /// Queues `cmd` unless it is already queued, in flight, or decided.
    fn enqueue(&mut self, cmd: Command) -> bool {
        let inflight = matches!(&self.role, Role::Leader(l) if l.inflight_ids.contains(&cmd.id));
        if inflight
            || self.recent_ids.contains(&cmd.id)
            || self.queued_ids.contains(&cmd.id)
            || self.queue.len() >= self.opts.max_pending
        {
            return false;
        }
        self.queued_ids.insert(cmd.id);
        self.queue.push_back(cmd);
        true
    }

    /// Commands forwarded to us: taken if we lead, dropped otherwise (their origin re-sends).
    pub(crate) fn on_forward(&mut self, cmds: Vec<Command>) {
        if !matches!(self.role, Role::Leader(_)) {
            return;
        }
        for cmd in cmds {
            self.enqueue(cmd);
        }
    }

    /// A follower hands its queue to the leader it knows.
    pub(crate) fn forward_queue(&mut self) {
        let Some(leader) = self.leader.filter(|l| *l != self.id()) else {
            return;
        };
        if self.queue.is_empty() {
            return;
        }
        self.queued_ids.clear();
        let cmds: Vec<Command> = self.queue.drain(..).collect();
        self.send_now(leader, Message::Forward { cmds });
    }

    /// Our own commands not seen decided for a long while are queued again (to be proposed
    /// or forwarded to the current leader).
    pub(crate) fn retry_own(&mut self) {
        // A node that lags can't tell lost commands from decided ones it hasn't learned yet:
        // it retries only once caught up with what it knows is decided.
        if self.leader.is_none() || self.decided < self.known_commit {
            return;
        }
        let patience = self.retry_patience();
        let now = self.now;
        let due: Vec<Command> = self
            .own
            .values_mut()
            .filter(|(_, t)| now.saturating_sub(*t) >= patience)
            .map(|(c, t)| {
                *t = now;
                c.clone()
            })
            .collect();
        for cmd in due {
            self.enqueue(cmd);
        }
    }

    /// Ticks a command may stay undecided before its origin sends it again.
    pub(crate) fn retry_patience(&self) -> u64 {
        u64::from(self.opts.election_ticks.1.max(1)) * 4
    }

    /// A new leader took over: commands it may not have seen get sent again after one
    /// election timeout (time for it to re-propose what its phase 1 recovered), not the
    /// full patience.
    pub(crate) fn hurry_own_retries(&mut self) {
        let patience = self.retry_patience();
        let soon = self
            .now
            .saturating_sub(patience - u64::from(self.opts.election_ticks.1.max(1)));
        for (_, t) in self.own.values_mut() {
            *t = (*t).min(soon);
        }
    }
}
