//! Who proposes: clients sending unique commands (retried until decided), and the membership
//! plan that grows and shrinks the cluster through decided config-change commands.

use std::collections::VecDeque;

use doozer_paxos::{Command, CommandId, NodeId, Slot};

use super::machine::ConfigOp;

/// A command a client is waiting on.
#[derive(Debug, Clone)]
pub struct Outstanding {
    /// The command (the same id on every retry).
    pub cmd: Command,
    /// When to (re)propose it.
    pub next_try: u64,
}

/// A client: proposes commands to random live nodes until each is decided.
#[derive(Debug, Clone)]
pub struct Client {
    /// The id in its commands' `CommandId`s.
    pub id: NodeId,
    /// Last sequence number used.
    pub seq: u64,
    /// Commands not yet seen decided.
    pub outstanding: Vec<Outstanding>,
}

impl Client {
    /// A client with no commands yet.
    pub fn new(id: NodeId) -> Client {
        Client {
            id,
            seq: 0,
            outstanding: Vec::new(),
        }
    }

    /// The next command id.
    pub fn next_id(&mut self) -> CommandId {
        self.seq += 1;
        CommandId {
            node: self.id,
            seq: self.seq,
        }
    }
}

/// One step of the membership plan (indexes into the world's nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanStep {
    /// Register a node as learner; it starts when that is decided.
    Learn(usize),
    /// Make a (caught-up) learner a voter.
    Add(usize),
    /// Remove a random voter; it stops once the removal is in force.
    RemoveAny,
}

/// The change being carried out.
#[derive(Debug, Clone)]
pub struct Active {
    /// What is being done.
    pub op: ConfigOp,
    /// The command carrying it.
    pub id: CommandId,
    /// Slot it was decided in, once known.
    pub slot: Option<Slot>,
}

/// The membership scenario's script.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Steps not started.
    pub steps: VecDeque<PlanStep>,
    /// The step under way.
    pub active: Option<Active>,
    /// Tick since which the next step waits for its precondition.
    pub waiting_since: Option<u64>,
    /// Slot each learner's registration was decided in.
    pub learn_slot: Vec<Option<Slot>>,
    /// Steps completed.
    pub done: usize,
}

impl Plan {
    /// Whether every step is done.
    pub fn is_complete(&self) -> bool {
        self.steps.is_empty() && self.active.is_none()
    }
}
