//! What the engine hands its driver, and the errors of its requests.

use serde::{Deserialize, Serialize};

use crate::id::{Ballot, NodeId, Slot};
use crate::message::Message;
use crate::state::Record;
use crate::value::Value;

/// Outputs accumulated since the last [`crate::Engine::ready`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ready {
    /// Records to make durable, in order.
    pub persist: Vec<Record>,
    /// Messages that may leave at once.
    pub send_now: Vec<(NodeId, Message)>,
    /// Messages that may leave only once every record of `persist` is durable. Messages to
    /// this node itself must be fed back with `step(self_id, msg)` after persisting.
    pub send_after_persist: Vec<(NodeId, Message)>,
    /// Newly decided slots, in slot order, each exactly once, contiguous from the last applied.
    pub decided: Vec<(Slot, Value)>,
    /// Read-index answers: `(ctx, Ok(index))` means a linearizable read may be served once the
    /// local applied slot reaches `index`.
    pub reads: Vec<(u64, Result<Slot, ReadError>)>,
    /// Slots this node needs were compacted everywhere it asked: install a snapshot from `from`.
    pub snapshot: Option<SnapshotRequest>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.send_now.is_empty()
            && self.send_after_persist.is_empty()
            && self.decided.is_empty()
            && self.reads.is_empty()
            && self.snapshot.is_none()
    }
}

/// Ask the driver to fetch and install a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// A peer that has applied at least `slot`.
    pub from: NodeId,
    /// The snapshot must cover at least this slot.
    pub slot: Slot,
}

/// Why a read index could not be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ReadError {
    /// No leader is known; retry later.
    #[error("no leader known")]
    NoLeader,
    /// Leadership changed before the read was confirmed; retry.
    #[error("leadership changed before the read was confirmed")]
    LeaderChanged,
    /// Too many reads waiting.
    #[error("too many reads waiting")]
    Busy,
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProposeError {
    /// No leader is known to take or forward it; retry later.
    #[error("no leader known")]
    NoLeader,
    /// The proposal queue is full; retry later.
    #[error("proposal queue full")]
    Busy,
}

/// A snapshot of the engine's view, for the driver and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// The leader this node believes in, if any (itself when leading).
    pub leader: Option<NodeId>,
    /// This node's promised ballot.
    pub ballot: Ballot,
    /// Highest slot such that every slot up to it is known decided here.
    pub decided: Slot,
    /// Last slot the driver reported applied.
    pub applied: Slot,
    /// Whether this node leads (phase 1 done at `ballot`).
    pub is_leader: bool,
}
