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

    /// Folds in one durable record, as a driver replaying its log after a crash does: a
    /// promise raises `promised`; an accept replaces its slot's accepted value (slots at or
    /// below `applied` are the state machine's business and are skipped).
    pub fn record(&mut self, record: Record) {
        match record {
            Record::Promise(b) => self.promised = self.promised.max(b),
            Record::Accept {
                slot,
                ballot,
                value,
            } => {
                if slot > self.applied {
                    self.accepted.insert(slot, (ballot, value));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    #[test]
    fn records_replay_into_the_state_a_restart_needs() {
        let b = |round| Ballot {
            round,
            node: NodeId(1),
        };
        let mut st = PersistentState {
            applied: 2,
            ..PersistentState::empty(Config::with_voters([NodeId(1)]))
        };
        let records = [
            Record::Promise(b(2)),
            Record::Accept {
                slot: 2,
                ballot: b(2),
                value: Value::Noop,
            },
            Record::Accept {
                slot: 3,
                ballot: b(2),
                value: Value::Noop,
            },
            Record::Promise(b(1)),
            Record::Accept {
                slot: 3,
                ballot: b(3),
                value: Value::Batch(vec![]),
            },
        ];
        for r in records {
            st.record(r);
        }
        assert_eq!(st.promised, b(2), "a promise never goes down");
        assert_eq!(
            st.accepted.into_iter().collect::<Vec<_>>(),
            vec![(3, (b(3), Value::Batch(vec![])))],
            "the latest accept per slot above applied"
        );
    }
}
