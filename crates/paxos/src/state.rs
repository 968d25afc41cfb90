//! What must survive a crash: acceptor records and the state a restarted engine starts from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::id::{Ballot, Slot};
use crate::value::Value;

/// One durable acceptor fact. Records must be persisted in the order given, and be durable
/// before any message of the same [`crate::Ready`]'s `send_after_persist` leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The acceptor promised this ballot (for all slots).
    Promise(Ballot),
    /// The acceptor accepted `value` at `ballot` in `slot`.
    Accept {
        /// The slot.
        slot: Slot,
        /// The ballot it was accepted at.
        ballot: Ballot,
        /// The value.
        value: Value,
    },
}

/// What [`crate::Engine::new`] needs to resume after a restart, loaded from durable storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentState {
    /// Highest promised ballot.
    pub promised: Ballot,
    /// Accepted values of slots above `applied` (the latest accept per slot).
    pub accepted: BTreeMap<Slot, (Ballot, Value)>,
    /// Last slot the state machine applied (0 when none).
    pub applied: Slot,
    /// Decided slots at or below `applied` kept to serve lagging peers (may be empty).
    pub decided_tail: Vec<(Slot, Value)>,
    /// The config in force from each listed slot on; must cover `applied + 1 ..= applied + alpha`.
    pub configs: Vec<(Slot, Config)>,
}

impl PersistentState {
    /// The state of a node that has never run: nothing promised or accepted, `config`
    /// governing every slot from 1.
    pub fn empty(config: Config) -> PersistentState {
        PersistentState {
            promised: Ballot::ZERO,
            accepted: BTreeMap::new(),
            applied: 0,
            decided_tail: Vec::new(),
            configs: vec![(1, config)],
        }
    }
}
