//! One simulated node: its engine (absent while crashed), its disk, split into what is durable
//! and the batches still waiting for an fsync, and its applied state machine.

use std::collections::{BTreeMap, VecDeque};

use doozer_paxos::{
    Ballot, Config, Engine, Message, NodeId, PersistentState, Record, Slot, SnapshotRequest, Value,
};

use super::machine::Machine;

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Not yet part of the cluster (membership scenario).
    NotStarted,
    /// Running.
    Up,
    /// Crashed; restarts at the given tick (or when the world heals).
    Down {
        /// Restart tick.
        restart_at: u64,
    },
    /// Removed from the cluster and stopped for good.
    Retired,
}

/// The outputs of one `ready()` that wait for the same fsync, as the server's storage thread
/// writes one transaction per ready batch: records, then the decided slots applied, then the
/// messages that could not leave before.
#[derive(Debug, Default)]
pub struct Batch {
    /// Acceptor records.
    pub records: Vec<Record>,
    /// Decided slots to apply.
    pub decided: Vec<(Slot, Value)>,
    /// `send_after_persist` messages.
    pub after: Vec<(NodeId, Message)>,
    /// A snapshot to install, fetched from another node.
    pub snapshot: Option<Machine>,
}

impl Batch {
    /// Whether the batch does nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.decided.is_empty()
            && self.after.is_empty()
            && self.snapshot.is_none()
    }
}

/// A simulated node.
pub struct SimNode {
    /// Its id.
    pub id: NodeId,
    /// Running, down, ...
    pub life: Life,
    /// The engine while up.
    pub engine: Option<Engine>,
    /// Restarts so far.
    pub incarnation: u32,
    /// Last slot this incarnation's engine reported decided (to check contiguity).
    pub emitted: Slot,
    /// Messages to itself, fed back with `step(self_id, ..)`.
    pub self_queue: VecDeque<Message>,
    /// Ready batches not yet durable, oldest first. Lost on a crash.
    pub pending: VecDeque<Batch>,
    /// A snapshot the engine asked for that could not be fetched yet.
    pub want_snapshot: Option<SnapshotRequest>,
    /// Durable: the last promise written.
    pub promised: Ballot,
    /// Durable: the latest accept of each slot above `machine.applied`.
    pub accepted: BTreeMap<Slot, (Ballot, Value)>,
    /// Durable: the applied state machine.
    pub machine: Machine,
    /// Durable: the config this node was created with (what it starts from before applying anything).
    pub join_config: Config,
    /// A paused node (a stalled process) handles nothing before this tick; it loses nothing.
    pub paused_until: u64,
    /// Probability that a world tick reaches this node's engine (clock skew, slow process).
    pub tick_p: f64,
    /// Multiplies the profile's fsync probability: some disks are slower than others.
    pub disk_speed: f64,
}

impl SimNode {
    /// A node that has never run.
    pub fn new(id: NodeId, machine: Machine, join_config: Config, life: Life) -> SimNode {
        SimNode {
            id,
            life,
            engine: None,
            incarnation: 0,
            emitted: 0,
            self_queue: VecDeque::new(),
            pending: VecDeque::new(),
            want_snapshot: None,
            promised: Ballot::ZERO,
            accepted: BTreeMap::new(),
            machine,
            join_config,
            paused_until: 0,
            tick_p: 1.0,
            disk_speed: 1.0,
        }
    }

    /// Whether the node is running (possibly paused).
    pub fn is_up(&self) -> bool {
        self.life == Life::Up
    }

    /// Whether the node is running and not paused at tick `now`.
    pub fn is_active(&self, now: u64) -> bool {
        self.life == Life::Up && now >= self.paused_until
    }

    /// What the store would load on restart, built only from durable state.
    pub fn persistent_state(&self) -> PersistentState {
        let applied = self.machine.applied;
        PersistentState {
            promised: self.promised,
            accepted: self
                .accepted
                .range(applied + 1..)
                .map(|(s, v)| (*s, v.clone()))
                .collect(),
            applied,
            decided_tail: self.machine.tail.iter().cloned().collect(),
            configs: if applied == 0 {
                vec![(1, self.join_config.clone())]
            } else {
                self.machine.configs_from(applied + 1)
            },
        }
    }

    /// Makes `records` durable, in order.
    pub fn write_records(&mut self, records: &[Record]) {
        for rec in records {
            match rec {
                Record::Promise(b) => self.promised = *b,
                Record::Accept {
                    slot,
                    ballot,
                    value,
                } => {
                    if *slot > self.machine.applied {
                        self.accepted.insert(*slot, (*ballot, value.clone()));
                    }
                }
            }
        }
    }

    /// Drops acceptor records the applied state covers (the store keeps only slots > applied).
    pub fn prune_accepted(&mut self) {
        while let Some((&slot, _)) = self.accepted.first_key_value() {
            if slot > self.machine.applied {
                break;
            }
            self.accepted.pop_first();
        }
    }

    /// Loses everything that is not durable.
    pub fn crash(&mut self, restart_at: u64) {
        self.engine = None;
        self.pending.clear();
        self.self_queue.clear();
        self.want_snapshot = None;
        self.paused_until = 0;
        self.life = Life::Down { restart_at };
    }
}
