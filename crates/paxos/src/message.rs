//! What engines say to each other. The server's peer link encodes these with serde.

use serde::{Deserialize, Serialize};

use crate::id::{Ballot, Slot};
use crate::ready::ReadError;
use crate::value::{Command, Value};

/// A peer-to-peer message of the protocol. Every field is checked on receipt: a message
/// with a stale, foreign or nonsensical ballot or slot is ignored, never trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: a candidate asks for a promise covering every slot from `from_slot` on.
    Prepare {
        /// The candidate's ballot (its own node id).
        ballot: Ballot,
        /// First slot the candidate does not know decided.
        from_slot: Slot,
    },
    /// Phase 1b: the acceptor promised `ballot` and reports what it knows at or above
    /// `from_slot`.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// Echo of the prepare's `from_slot`.
        from_slot: Slot,
        /// Values this acceptor accepted (slot, ballot, value), slots >= `from_slot`.
        accepted: Vec<(Slot, Ballot, Value)>,
        /// Values this node knows decided, slots >= `from_slot`.
        decided: Vec<(Slot, Value)>,
    },
    /// The acceptor refuses `ballot` because it promised the higher `promised`.
    Reject {
        /// The refused ballot.
        ballot: Ballot,
        /// What the acceptor promised instead.
        promised: Ballot,
    },
    /// The acceptor refuses to promise `ballot`: the candidate is too far behind (or asks for
    /// slots this node compacted) and must catch up first.
    Behind {
        /// The refused ballot.
        ballot: Ballot,
        /// The highest slot the acceptor knows decided (every slot up to it).
        decided: Slot,
    },
    /// Phase 2a: the leader asks to accept `value` in `slot` at `ballot`.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
        /// The proposed value.
        value: Value,
        /// Every slot up to this one is decided (the leader's commit index).
        commit: Slot,
    },
    /// Phase 2b: the acceptor durably accepted the value the leader proposed in `slot` at
    /// `ballot`.
    Accepted {
        /// The ballot accepted at.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
    },
    /// The leader is alive; `read_seq` numbers the read-index round it confirms.
    Heartbeat {
        /// The leader's ballot.
        ballot: Ballot,
        /// The leader's commit index.
        commit: Slot,
        /// Latest read-index round started by the leader (0: none yet).
        read_seq: u64,
    },
    /// Answer to a heartbeat: the sender still follows `ballot`.
    HeartbeatAck {
        /// The ballot followed.
        ballot: Ballot,
        /// The heartbeat's `read_seq`.
        read_seq: u64,
        /// The sender's contiguous decided slot.
        decided: Slot,
    },
    /// The leader's commit index advanced (sent when no accept carries it).
    Commit {
        /// The leader's ballot.
        ballot: Ballot,
        /// Every slot up to this one is decided.
        commit: Slot,
    },
    /// A lagging node asks for the decided values of slots `from..=to`.
    CatchUp {
        /// First slot wanted.
        from: Slot,
        /// Last slot wanted (the answer may stop earlier).
        to: Slot,
    },
    /// Decided values, in slot order.
    Decided {
        /// `(slot, value)` pairs.
        entries: Vec<(Slot, Value)>,
    },
    /// The slots asked for were compacted: install a snapshot of at least `applied`.
    Compacted {
        /// The sender's applied slot; its snapshot covers this far.
        applied: Slot,
    },
    /// Commands forwarded by a follower to the leader.
    Forward {
        /// The commands, in the order the follower received them.
        cmds: Vec<Command>,
    },
    /// A follower asks the leader for a read index on behalf of its read `ctx`.
    ReadIndex {
        /// The follower's read context.
        ctx: u64,
    },
    /// The leader's answer to [`Message::ReadIndex`].
    ReadIndexResp {
        /// Echo of the request's context.
        ctx: u64,
        /// The read index or why there is none.
        result: Result<Slot, ReadError>,
    },
    /// Before campaigning: would the receiver promise a ballot `(round, sender)`? Nobody
    /// changes any state for it.
    PreVote {
        /// The round the sender would campaign at.
        round: u64,
    },
    /// The answer to [`Message::PreVote`].
    PreVoteResp {
        /// Echo of the pre-vote's round.
        round: u64,
        /// Yes: the ballot is above the receiver's promise, and it hears no live leader.
        granted: bool,
        /// The receiver's promised ballot.
        promised: Ballot,
    },
}
