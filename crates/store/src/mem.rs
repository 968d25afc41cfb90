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
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;

use crate::revs::Revs;

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

/// Hashes path keys: foldhash, randomly seeded per map (SipHash, the std default, took
/// about 2% of a loaded cluster's CPU in the storage threads).
type PathHasher = foldhash::fast::RandomState;

/// What a path has: its current file, and its undo records.
#[derive(Debug, Clone, Default)]
struct PathState {
    file: Option<FileVal>,
    /// (rev, the file before the change at rev; `None`: it was missing), in increasing rev.
    undo: VecDeque<(u64, Option<FileVal>)>,
}

impl PathState {
    fn is_empty(&self) -> bool {
        self.file.is_none() && self.undo.is_empty()
    }

    /// Adds the undo record of the change at `rev` unless one at `rev` or later is there
    /// (revs arrive in increasing order per key); whether it was added.
    fn push_undo(&mut self, rev: u64, old: Option<FileVal>) -> bool {
        if self.undo.back().is_some_and(|(r, _)| *r >= rev) {
            return false;
        }
        self.undo.push_back((rev, old));
        true
    }
}

/// The applied state: the writer's, possibly ahead of what readers see.
///
/// A path's file and undo records are found by hash, in one entry: a change of an existing
/// file, the common write, reaches both with one look-up into a map much larger than the
/// caches (two maps cost two cache-missing look-ups per change, ~2% of a loaded cluster's
/// CPU). `keys` orders every path that has a file or undo records, for listings and scans.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mem {
    /// Path key -> its file and undo records; no entry for a path with neither.
    paths: HashMap<Bytes, PathState, PathHasher>,
    /// Every key of `paths`, in order.
    keys: BTreeSet<Bytes>,
    /// Directory key (a file key's prefix before one of its separators) -> how many current
    /// files lie below it. Whether a path is a directory now is one hash look-up, where a
    /// range search of `keys` cost a creating SET several ordered descents.
    dirs: HashMap<Bytes, u32, PathHasher>,
    file_count: usize,
    undo_count: usize,
    /// rev -> what took it, for every revision above `min(floor, rev - dedup window)`.
    pub revs: Revs,
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

impl Mem {
    pub fn files_len(&self) -> usize {
        self.file_count
    }

    pub fn undo_len(&self) -> usize {
        self.undo_count
    }

    pub fn has_file(&self, key: &[u8]) -> bool {
        self.file(key).is_some()
    }

    /// The file at `key` as of revision `at` (`None`: the current one).
    pub fn file_at(&self, key: &[u8], at: Option<u64>) -> Option<&FileVal> {
        let p = self.paths.get(key)?;
        if let Some(at) = at {
            // The first undo record after `at` holds the path's state at `at`; a state
            // whose rev is after `at` was created after `at`.
            let i = p.undo.partition_point(|(r, _)| *r <= at);
            if let Some((_, old)) = p.undo.get(i) {
                return old.as_ref().filter(|f| f.rev as u64 <= at);
            }
        }
        let f = p.file.as_ref()?;
        if at.is_some_and(|at| f.rev as u64 > at) {
            return None; // created after `at`
        }
        Some(f)
    }

    /// Keys (of files and of paths with history) in `[start, end)`, in order.
    pub fn keys_in<'a>(
        &'a self,
        start: &'a [u8],
        end: Option<&'a [u8]>,
    ) -> impl Iterator<Item = &'a Bytes> + 'a {
        let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
        self.keys.range::<[u8], _>((Bound::Included(start), hi))
    }

    /// Keys after `after` (all if `None`), in order.
    pub fn keys_after<'a>(
        &'a self,
        after: Option<&'a [u8]>,
    ) -> impl Iterator<Item = &'a Bytes> + 'a {
        let lo = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.keys.range::<[u8], _>((lo, Bound::Unbounded))
    }

    /// The undo records of `key`, in increasing rev.
    pub fn undo_of(&self, key: &[u8]) -> impl Iterator<Item = &(u64, Option<FileVal>)> {
        self.paths.get(key).into_iter().flat_map(|p| p.undo.iter())
    }

    /// Replaces the current file at `key` with `new`, the change at `rev`, keeping the old
    /// one as its undo record, if `allow` accepts the old file's rev: the common write in one
    /// hash look-up (a look-up, a replace and an undo push took three). `None`: `key` has no
    /// current file; `Some(false)`: refused, nothing changed.
    pub fn replace_existing(
        &mut self,
        key: &[u8],
        rev: u64,
        new: FileVal,
        allow: impl FnOnce(i64) -> bool,
    ) -> Option<bool> {
        let p = self.paths.get_mut(key)?;
        let cur = p.file.as_mut()?;
        if !allow(cur.rev) {
            return Some(false);
        }
        let old = std::mem::replace(cur, new);
        if p.push_undo(rev, Some(old)) {
            self.undo_count += 1;
        }
        Some(true)
    }

    /// The current file at `key`.
    pub fn file(&self, key: &[u8]) -> Option<&FileVal> {
        self.paths.get(key)?.file.as_ref()
    }

    /// The entry of `key`, made (and ordered) if it has none.
    fn path_mut(&mut self, key: Bytes) -> &mut PathState {
        match self.paths.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.keys.insert(e.key().clone());
                e.insert(PathState::default())
            }
        }
    }

    /// Creates the file at `key` (which has none).
    pub fn create_file(&mut self, key: Bytes, f: FileVal) {
        for i in dir_ends(&key) {
            *self.dirs.entry(key.slice(..i)).or_insert(0) += 1;
        }
        let p = self.path_mut(key);
        if p.file.replace(f).is_none() {
            self.file_count += 1;
        }
    }

    /// Removes the file at `key`; the key stays ordered while it has undo records.
    pub fn remove_file(&mut self, key: &[u8]) -> Option<FileVal> {
        let p = self.paths.get_mut(key)?;
        let old = p.file.take()?;
        self.file_count -= 1;
        if p.is_empty() {
            self.paths.remove(key);
            self.keys.remove(key);
        }
        for i in dir_ends(key) {
            if let Some(n) = self.dirs.get_mut(&key[..i]) {
                *n -= 1;
                if *n == 0 {
                    self.dirs.remove(&key[..i]);
                }
            }
        }
        Some(old)
    }

    /// Whether a current file lies below the directory whose key is `dir` (the root, whose
    /// key is a lone separator, always is a directory).
    pub fn is_dir_now(&self, dir: &[u8]) -> bool {
        dir == [crate::keys::SEP] || self.dirs.contains_key(dir)
    }

    /// Records the state of `key` before the change at `rev` (revs arrive in increasing
    /// order per key). False if the key already has a record at or after `rev`.
    pub fn push_undo(&mut self, key: Bytes, rev: u64, old: Option<FileVal>) -> bool {
        let added = self.path_mut(key).push_undo(rev, old);
        self.undo_count += usize::from(added);
        added
    }

    /// Drops the undo records of the revisions in `lo..=hi` (those `revs` says wrote one).
    /// The fields are borrowed apart, so the keys are read from `revs` in place: cloning
    /// each (to call a `&mut self` method) allocated a shared header for every record.
    pub fn drop_undo_range(&mut self, lo: u64, hi: u64) {
        let Mem {
            revs,
            paths,
            keys,
            undo_count,
            ..
        } = self;
        for (rev, e) in revs.range(lo..=hi) {
            if e.flags & HAS_UNDO == 0 {
                continue;
            }
            let key = &e.pkey[..];
            let Some(p) = paths.get_mut(key) else {
                continue;
            };
            let before = p.undo.len();
            if p.undo.front().is_some_and(|(r, _)| *r == rev) {
                p.undo.pop_front();
            } else {
                p.undo.retain(|(r, _)| *r != rev);
            }
            *undo_count -= before - p.undo.len();
            if p.is_empty() {
                paths.remove(key);
                keys.remove(key);
            }
        }
    }
}

/// The lengths of the directory keys above a file key: the positions of its separators but
/// the leading one (the root).
fn dir_ends(key: &[u8]) -> impl Iterator<Item = usize> + '_ {
    key.iter()
        .enumerate()
        .skip(1)
        .filter(|(_, &b)| b == crate::keys::SEP)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{child_prefix, key_path, path_key};
    use rand::{Rng, SeedableRng};

    /// The directory index agrees with a scan of the current files after random creates and
    /// removes (including a directory's last file going, and deep paths).
    #[test]
    fn directory_index_matches_the_files() {
        let names = ["a", "b", "c"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut mem = Mem::default();
        for step in 0..4000 {
            let depth = rng.gen_range(1..=4);
            let path: String = (0..depth)
                .map(|_| format!("/{}", names[rng.gen_range(0..names.len())]))
                .collect();
            let key = Bytes::from(path_key(&path));
            if mem.file(&key).is_some() {
                mem.remove_file(&key);
            } else {
                let f = FileVal {
                    rev: step,
                    value: Bytes::new(),
                };
                mem.create_file(key, f);
            }
            for d in ["/a", "/a/b", "/b/c/a", "/c/c/c", "/a/a/a/a"] {
                let pre = child_prefix(d);
                let scanned = mem
                    .paths
                    .iter()
                    .any(|(k, p)| p.file.is_some() && k.starts_with(&pre));
                assert_eq!(
                    mem.is_dir_now(&path_key(d)),
                    scanned,
                    "{d} at step {step}; files: {:?}",
                    mem.keys.iter().map(|k| key_path(k)).collect::<Vec<_>>()
                );
            }
        }
        assert!(mem.is_dir_now(&path_key("/")));
    }
}
