//! The applied state in memory: the tree, its history and the membership, in ordered maps
//! changed in place.
//!
//! The writer applies a batch in place before its transaction commits; readers read at the
//! *visible* revision (the last committed one) through the history, so they never see a
//! change before it is durable, and the writer never copies anything for them. A reader or a
//! checkpoint that needs a revision for longer than one lock hold pins it
//! ([`crate::store`]), which holds back trimming of the history it reads through.
//!
//! Keys are path keys ([`crate::keys`]): byte order is the tree's depth-first order.
//!
//! The current tree is `files` alone; history is `undo` + `revs`. Creating a file writes no
//! undo record. A read at a past revision `R` takes, for a path, the first undo record after
//! `R`, else the current entry; either way the state is the path's state at `R` only if its
//! rev is `<= R`, otherwise the file was created after `R` and was missing then (a change of
//! an existing file after `R` would have left an earlier undo record). Trimming history at
//! floor `F` drops the undo records of revisions `<= F`: only reads at `>= F` need them.
//! `revs` entries live until both the history and the duplicate window
//! ([`crate::DEDUP_WINDOW_REVS`]) have passed them.

use bytes::Bytes;
use doozer_paxos::{CommandId, Config, Slot};
use doozer_proto::ErrCode;
use std::collections::BTreeMap;

/// A file: its revision and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileVal {
    pub rev: i64,
    pub value: Bytes,
}

/// Flag bit of a [`RevRec`]: the change wrote an undo record (it changed an existing file).
pub(crate) const HAS_UNDO: u8 = 0x80;

/// One revision: which command took it, how it ended, what it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RevRec {
    pub id: CommandId,
    pub code: Option<ErrCode>,
    /// Event flags (4 set, 8 del, 0 nop), possibly with [`HAS_UNDO`].
    pub flags: u8,
    /// The key of the path of the event.
    pub pkey: Bytes,
}

impl RevRec {
    /// The event flags without the undo bit.
    pub fn event_flags(&self) -> i32 {
        (self.flags & !HAS_UNDO) as i32
    }
}

/// An undo record's key: the path key and the revision of the change.
pub(crate) type UndoKey = (Bytes, u64);

/// The applied state: the writer's, possibly ahead of what readers see.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mem {
    /// Path key -> file.
    pub files: BTreeMap<Bytes, FileVal>,
    /// (path key, rev) -> the file before the change at rev (`None`: it was missing).
    pub undo: BTreeMap<UndoKey, Option<FileVal>>,
    /// rev -> what took it, for every revision above `min(floor, rev - dedup window)`.
    pub revs: BTreeMap<u64, RevRec>,
    /// The last applied revision.
    pub rev: i64,
    /// History floor: reads at revisions `>=` it are answerable.
    pub floor: i64,
    /// The last applied slot.
    pub applied: Slot,
    /// The membership after `applied`.
    pub config: Config,
    /// The membership after each slot where it changed (the last `CONFIG_KEEP_SLOTS`).
    pub configs: BTreeMap<Slot, Config>,
    /// Counts installed snapshots: a long read that sees it change started on a state
    /// that is gone.
    pub generation: u64,
}
