//! Tuning knobs of an engine.

use crate::id::NodeId;

/// How an engine behaves. Times are in ticks; the driver decides what a tick is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// This node.
    pub id: NodeId,
    /// Maximum undecided slots in flight, and the membership delay: the config after slot `s`
    /// governs slot `s + alpha`. Every node of a cluster must use the same value.
    pub alpha: u64,
    /// The leader sends a heartbeat every this many ticks.
    pub heartbeat_ticks: u32,
    /// A follower that hears no leader for a random number of ticks in `[min, max)` campaigns.
    pub election_ticks: (u32, u32),
    /// At most this many slots of new commands proposed by a leader and not yet decided
    /// (never more than `alpha`). Commands that arrive meanwhile wait and go together in the
    /// next slot: under load, slots get bigger instead of more numerous, so each fsync and
    /// each message carries more commands. Recovered values and no-ops are not held back.
    pub max_inflight: u64,
    /// Ask a quorum before campaigning ([`crate::Message::PreVote`]), so a node that cannot
    /// hear the leader does not raise its ballot and depose it when it is heard again.
    pub pre_vote: bool,
    /// At most this many commands in one slot value.
    pub max_batch_cmds: usize,
    /// At most about this many bytes in one slot value (a single larger command still goes).
    pub max_batch_bytes: usize,
    /// Bound of the queue of proposals waiting for a slot (or for a leader to forward to).
    pub max_pending: usize,
    /// Decided slots kept in memory to serve lagging peers; older ones need a snapshot.
    pub retain_decided: u64,
    /// Seed of the engine's own RNG (election timeouts).
    pub seed: u64,
    /// Test hooks that plant bugs, to prove the simulator catches them. Always off in use.
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            id: NodeId(0),
            alpha: 50,
            heartbeat_ticks: 5,
            election_ticks: (30, 60),
            max_inflight: u64::MAX,
            pre_vote: true,
            max_batch_cmds: 1024,
            max_batch_bytes: 1 << 20,
            max_pending: 16_384,
            retain_decided: 10_000,
            seed: 0,
            faults: Faults::default(),
        }
    }
}

/// Deliberate protocol bugs for testing the checkers. Every field defaults to `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// A new leader skips phase 1 and proposes straight away.
    pub skip_phase1: bool,
    /// A new leader ignores values accepted by others and proposes its own.
    pub ignore_accepted: bool,
    /// Votes from different ballots are counted together: the leader counts `Accepted` of
    /// any older ballot of its own, and a follower takes a value it accepted at any ballot
    /// as the one the leader's commit index vouches for.
    pub count_across_ballots: bool,
    /// Promises and accepts leave before they are durable (go in `send_now`).
    pub send_before_persist: bool,
}
