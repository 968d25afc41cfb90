//! Plain data the verbs return: [`Event`], [`Entry`], [`Stat`].

use bytes::Bytes;
use doozer_proto::msg::{FLAG_DEL, FLAG_SET, REV_DIR, REV_MISSING};

/// A change, as WAIT reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The file that changed (`/` for a nop event).
    pub path: String,
    /// The revision of the change.
    pub rev: i64,
    /// The new body (empty for a delete or a nop).
    pub value: Bytes,
    /// `4` set, `8` del, `0` nop.
    pub flags: i32,
}

impl Event {
    /// The file was created or changed.
    pub fn is_set(&self) -> bool {
        self.flags & FLAG_SET != 0
    }

    /// The file was deleted.
    pub fn is_del(&self) -> bool {
        self.flags & FLAG_DEL != 0
    }

    /// Neither: a nop event.
    pub fn is_nop(&self) -> bool {
        !self.is_set() && !self.is_del()
    }

    /// `"set"`, `"del"` or `""` (nop), as the CLI prints it.
    pub fn kind(&self) -> &'static str {
        if self.is_set() {
            "set"
        } else if self.is_del() {
            "del"
        } else {
            ""
        }
    }
}

/// A file as WALK reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full path.
    pub path: String,
    /// The file's rev.
    pub rev: i64,
    /// Its body.
    pub value: Bytes,
}

/// What STAT reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The file's rev; `-2` for a directory; `0` if missing.
    pub rev: i64,
    /// A file's length in bytes, or a directory's number of entries.
    pub len: i32,
}

impl Stat {
    /// Is it a directory?
    pub fn is_dir(&self) -> bool {
        self.rev == REV_DIR
    }

    /// Does it exist?
    pub fn exists(&self) -> bool {
        self.rev != REV_MISSING
    }
}
