//! The state machine's vocabulary: operations, batches in, results and events out.

use bytes::Bytes;
use doozer_paxos::{CommandId, Config, Record, Slot, Value};
use doozer_proto::ErrCode;
use serde::{Deserialize, Serialize};

/// A command of the state machine. `Command.data` holds [`crate::codec::encode_op`] of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// SET: write `value` at `path` if `rev` allows it (0 = only if missing, -1 = always,
    /// otherwise at least the file's current rev).
    Set {
        /// The file.
        path: String,
        /// The compare-and-set revision.
        rev: i64,
        /// The new body.
        value: Bytes,
    },
    /// DEL: remove the file at `path` if `rev` allows it.
    Del {
        /// The file.
        path: String,
        /// The compare-and-set revision.
        rev: i64,
    },
    /// NOP: takes a revision and makes an event at `/`, changes nothing.
    Nop,
}

/// What one applied command did. Failed commands consume a revision too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyResult {
    /// Applied at `rev` (for SET, the file's new rev).
    Ok {
        /// The command's revision.
        rev: i64,
    },
    /// Failed at `rev` with a Doozer error (REV_MISMATCH, ISDIR, NOTDIR, BAD_PATH, OTHER);
    /// the error text was written to `/ctl/err` at that revision.
    Err {
        /// The command's revision.
        rev: i64,
        /// Why it failed.
        code: ErrCode,
    },
}

impl ApplyResult {
    /// The revision the command took.
    pub fn rev(&self) -> i64 {
        match *self {
            ApplyResult::Ok { rev } | ApplyResult::Err { rev, .. } => rev,
        }
    }
}

/// Event flag of a set (Doozer's `Response.flags`).
pub const FLAG_SET: i32 = doozer_proto::FLAG_SET;
/// Event flag of a delete.
pub const FLAG_DEL: i32 = doozer_proto::FLAG_DEL;
/// Event flag of a nop.
pub const FLAG_NOP: i32 = 0;

/// One change of the tree, as WAIT reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The revision of the change.
    pub rev: i64,
    /// The file changed; `/` for a nop.
    pub path: String,
    /// The new body (empty for a delete or a nop).
    pub value: Bytes,
    /// [`FLAG_SET`], [`FLAG_DEL`] or [`FLAG_NOP`].
    pub flags: i32,
}

/// One engine step's worth of durable work: written in one transaction with one fsync.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Acceptor records, in the order the engine produced them.
    pub records: Vec<Record>,
    /// Decided slots to apply, in slot order. Slots already applied are skipped.
    pub decided: Vec<(Slot, Value)>,
}

/// What a [`crate::Store::commit`] did.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The outcome of every command of every applied slot, in order (duplicates answered
    /// with their first result).
    pub results: Vec<(CommandId, ApplyResult)>,
    /// New history events, in revision order, for waking WAITs.
    pub events: Vec<Event>,
    /// The membership after each applied slot where it changed.
    pub configs: Vec<(Slot, Config)>,
    /// The store's revision after the commit.
    pub rev: i64,
    /// The last applied slot after the commit.
    pub applied: Slot,
}

/// Tunables of a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Revisions of history kept for past reads and WAIT (`--hist`).
    pub hist_revs: u64,
    /// Decided slots kept below the applied one, to serve lagging peers.
    pub retain_slots: u64,
    /// Upper bound of redb's page cache in bytes (filled only as pages are read).
    pub cache_bytes: usize,
    /// Revisions applied between two checkpoints of the tree; a checkpoint also waits for at
    /// least as many revisions as it has files and undo records, so that writing it costs
    /// about what the log it lets go did. Bounds the decided slots a restart replays.
    pub checkpoint_revs: u64,
    /// Slots per table of the log: the log is dropped a table at a time. Applies to new
    /// files only (a file keeps the size it was created with).
    pub log_gen_slots: u64,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            hist_revs: 100_000,
            retain_slots: 10_000,
            cache_bytes: 1 << 30,
            checkpoint_revs: 500_000,
            log_gen_slots: crate::log::DEFAULT_GEN_SLOTS,
        }
    }
}

/// Describes a snapshot written by [`crate::Store::export_snapshot`] or installed by
/// [`crate::Store::install_snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The revision of the state.
    pub rev: i64,
    /// The last slot applied to it.
    pub slot: Slot,
    /// Number of files in it.
    pub files: u64,
}
