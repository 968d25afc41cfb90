//! The engine: proposer, acceptor and learner of one node.

use crate::config::Config;
use crate::id::Slot;
use crate::id::{Ballot, NodeId};
use crate::message::Message;
use crate::options::Options;
use crate::ready::{ProposeError, Ready, Status};
use crate::state::PersistentState;
use crate::value::Command;

/// One node's Multi-Paxos engine. Pure: inputs are method calls, outputs come from
/// [`Engine::ready`].
#[derive(Debug)]
pub struct Engine {
    opts: Options,
    promised: Ballot,
    applied: Slot,
    out: Ready,
}

impl Engine {
    /// Resumes from `state` (a fresh node passes [`PersistentState::empty`]).
    pub fn new(opts: Options, state: PersistentState) -> Engine {
        Engine {
            opts,
            promised: state.promised,
            applied: state.applied,
            out: Ready::default(),
        }
    }

    /// Queues `cmd` for a slot, or forwards it to the leader.
    pub fn propose(&mut self, _cmd: Command) -> Result<(), ProposeError> {
        Err(ProposeError::NoLeader)
    }

    /// Handles a message from `from` (this node itself for fed-back messages).
    pub fn step(&mut self, _from: NodeId, _msg: Message) {}

    /// Advances time by one tick.
    pub fn tick(&mut self) {}

    /// Asks for a read index; the answer comes in [`Ready::reads`] under `ctx`.
    pub fn read_index(&mut self, _ctx: u64) {}

    /// The driver applied every slot up to `slot`; `config_after` is the membership after it.
    pub fn applied(&mut self, slot: Slot, _config_after: &Config) {
        self.applied = self.applied.max(slot);
    }

    /// The driver installed a snapshot covering every slot up to `slot`.
    pub fn snapshot_installed(&mut self, slot: Slot, _configs: Vec<(Slot, Config)>) {
        self.applied = self.applied.max(slot);
    }

    /// Drains the outputs accumulated since the last call.
    pub fn ready(&mut self) -> Ready {
        std::mem::take(&mut self.out)
    }

    /// This engine's view.
    pub fn status(&self) -> Status {
        Status {
            id: self.opts.id,
            leader: None,
            ballot: self.promised,
            decided: self.applied,
            applied: self.applied,
            is_leader: false,
        }
    }
}
