//! Applying decided commands to the tree inside one write transaction.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;

use bytes::Bytes;
use doozer_paxos::{Command, CommandId, Config, NodeId};
use doozer_proto::{path, ErrCode};
use redb::{ReadableTable, Table};

use crate::codec;
use crate::error::Result;
use crate::keys::{self, child_prefix, path_key, prefix_end};
use crate::op::{ApplyResult, Event, Op, FLAG_DEL, FLAG_NOP, FLAG_SET};
use crate::tables::{Bin, FileRec, RevEntry, HAS_UNDO};
use crate::view::View;

/// Where failed commands leave their error text.
pub const ERR_PATH: &str = "/ctl/err";

/// How many revisions a command id is remembered for duplicate detection. A constant, not an
/// option: every replica must make the same decision about a duplicate.
pub const DEDUP_WINDOW_REVS: i64 = 100_000;

/// Hashes command ids with a multiply-mix instead of SipHash (a tenth of the cost; every
/// applied command takes three look-ups). Ids are made by servers, not chosen by clients.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(23) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }

    fn write_u128(&mut self, v: u128) {
        self.add(v as u64);
        self.add((v >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        // murmur3's finalizer: every input bit reaches the high (tag) and low (bucket) bits.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 33;
        x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        x ^ (x >> 33)
    }
}

/// Command id -> (rev, error) of its first application.
pub(crate) type IdMap = HashMap<CommandId, (i64, Option<ErrCode>), BuildHasherDefault<IdHasher>>;

/// Recently applied command ids and their results, for answering duplicates.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    pub map: IdMap,
}

impl Dedup {
    /// The remembered result of `id` if it was applied within the window before `rev`.
    pub fn lookup(&self, id: &CommandId, rev: i64) -> Option<(i64, Option<ErrCode>)> {
        self.map
            .get(id)
            .copied()
            .filter(|(r, _)| *r > rev - DEDUP_WINDOW_REVS)
    }

    /// Forgets ids outside the window once the map has grown well past it.
    pub fn prune(&mut self, rev: i64) {
        if self.map.len() > 2 * DEDUP_WINDOW_REVS as usize {
            self.map.retain(|_, (r, _)| *r > rev - DEDUP_WINDOW_REVS);
        }
    }
}

/// The write-side tables of one transaction.
pub(crate) struct Tree<'txn> {
    pub files: Table<'txn, Bin, Bin>,
    pub undo: Table<'txn, Bin, Bin>,
    pub revs: Table<'txn, u64, Bin>,
    /// Keys of paths known to be directories in this transaction: a file created below one
    /// needs no look-up of its ancestors. Cleared by any delete (which can remove a directory).
    pub dirs: std::collections::HashSet<Vec<u8>>,
    /// The `revs` row being filled: entries of consecutive revisions from `row_first`,
    /// inserted by [`Tree::flush_revs`] once it reaches [`REV_ROW_BYTES`] or the batch ends.
    pub row: Vec<u8>,
    pub row_first: u64,
    /// The revision the next entry of `row` must have.
    pub row_next: u64,
}

/// A `revs` row is closed once it holds this many bytes: one B-tree insert per ~30
/// revisions instead of one per revision, in rows small enough to fill leaves densely.
pub(crate) const REV_ROW_BYTES: usize = 2000;

/// Why a command failed: the code for the client, the text for `/ctl/err`.
type Failure = (ErrCode, &'static str);

/// The outcome of one command.
pub(crate) struct Applied {
    pub result: ApplyResult,
    /// `None` for a duplicate, which takes no revision.
    pub event: Option<Event>,
    pub membership: bool,
}

/// Doozer's compare-and-set rule: -1 always; otherwise at least the current rev, so 0 means
/// "only if missing"; other negative revs never.
fn allowed(cas: i64, cur: i64) -> bool {
    cas == doozer_proto::msg::REV_CLOBBER || (cas >= 0 && cas >= cur)
}

impl Tree<'_> {
    fn current(&self) -> View<'_, Table<'_, Bin, Bin>, Table<'_, Bin, Bin>> {
        View {
            files: &self.files,
            undo: &self.undo,
            at: None,
        }
    }

    /// Checks that `path`, which has no file of its own, could hold one: it is not a
    /// directory and no ancestor is a file.
    fn check_place(&self, path: &str, key: &[u8]) -> Result<Option<Failure>> {
        if path == "/" {
            return Ok(Some((ErrCode::IsDir, "is a directory")));
        }
        let pre = child_prefix(path);
        if self
            .current()
            .first_key(&pre, prefix_end(&pre).as_deref())?
            .is_some()
        {
            return Ok(Some((ErrCode::IsDir, "is a directory")));
        }
        // Ancestors that are directories cannot be files; the parent being one settles all.
        let parent_len = key.iter().rposition(|&b| b == 0x01).unwrap_or(0);
        if parent_len > 0 && !self.dirs.contains(&key[..parent_len]) {
            for (i, &b) in key.iter().enumerate().skip(1) {
                if b == 0x01 && self.files.get(&key[..i])?.is_some() {
                    return Ok(Some((ErrCode::NotDir, "not a directory")));
                }
            }
        }
        Ok(None)
    }

    /// Sets (`value` some) or deletes `path` at `rev` if `cas` allows it. On success, says
    /// whether an undo record was written.
    ///
    /// Optimistic: the row is written first and put back on the rare failure, so changing an
    /// existing file costs one B-tree operation plus its undo record.
    fn mutate(
        &mut self,
        path: &str,
        key: &[u8],
        cas: i64,
        value: Option<&[u8]>,
        rev: i64,
    ) -> Result<std::result::Result<bool, Failure>> {
        const MISMATCH: Failure = (ErrCode::RevMismatch, "rev mismatch");
        let old: Option<Vec<u8>> = match value {
            Some(v) => {
                let row = FileRec::encode(rev, v);
                let old = self.files.insert(key, row.as_slice())?;
                old.map(|g| g.value().to_vec())
            }
            None => {
                let old = self.files.remove(key)?;
                old.map(|g| g.value().to_vec())
            }
        };
        if value.is_none() {
            self.dirs.clear();
        }
        match old {
            Some(raw) => {
                let cur = FileRec::decode(&raw)?.rev;
                if !allowed(cas, cur) {
                    self.files.insert(key, raw.as_slice())?;
                    return Ok(Err(MISMATCH));
                }
                let uk = keys::undo_key(key, rev as u64);
                self.undo.insert(uk.as_slice(), raw.as_slice())?;
                Ok(Ok(true))
            }
            None => {
                let fail = match self.check_place(path, key)? {
                    Some(f) => Some(f),
                    None if !allowed(cas, doozer_proto::msg::REV_MISSING) => Some(MISMATCH),
                    None => None,
                };
                match fail {
                    Some(f) => {
                        if value.is_some() {
                            self.files.remove(key)?;
                        }
                        Ok(Err(f))
                    }
                    // A created file needs no undo record; a delete of a missing file
                    // changes nothing.
                    None => {
                        if value.is_some() {
                            self.note_parents(key);
                        }
                        Ok(Ok(false))
                    }
                }
            }
        }
    }

    /// Remembers the ancestors of a file that now exists as directories.
    fn note_parents(&mut self, key: &[u8]) {
        if let Some(parent_len) = key.iter().rposition(|&b| b == 0x01).filter(|&n| n > 0) {
            if !self.dirs.contains(&key[..parent_len]) {
                self.dirs.insert(key[..parent_len].to_vec());
            }
        }
    }

    /// Applies one command at revision `rev`, or answers a duplicate (which takes no
    /// revision). A new id goes to `fresh`.
    pub fn apply(
        &mut self,
        cmd: &Command,
        rev: i64,
        dedup: &Dedup,
        fresh: &mut IdMap,
    ) -> Result<Applied> {
        let prev = fresh
            .get(&cmd.id)
            .copied()
            .or_else(|| dedup.lookup(&cmd.id, rev - 1));
        if let Some((rev, code)) = prev {
            let result = match code {
                None => ApplyResult::Ok { rev },
                Some(code) => ApplyResult::Err { rev, code },
            };
            return Ok(Applied {
                result,
                event: None,
                membership: false,
            });
        }
        let mut undo = false;
        let (fail, event) = match codec::decode_op(&cmd.data) {
            Err(_) => (Some((ErrCode::Other, "bad mutation")), None),
            Ok(Op::Nop) => (None, None),
            Ok(Op::Set {
                path,
                rev: cas,
                value,
            }) => self.change(path, cas, Some(value), rev, &mut undo)?,
            Ok(Op::Del { path, rev: cas }) => self.change(path, cas, None, rev, &mut undo)?,
        };
        let (result, event) = match fail {
            None => (
                ApplyResult::Ok { rev },
                event.unwrap_or_else(|| nop_event(rev)),
            ),
            Some((code, text)) => {
                // The original records the failure as a clobbering set of /ctl/err. If even
                // that cannot be written (someone made /ctl a file), the revision is a nop.
                let key = path_key(ERR_PATH);
                let text = Bytes::from_static(text.as_bytes());
                let event = match self.mutate(ERR_PATH, &key, -1, Some(&text), rev)? {
                    Ok(u) => {
                        undo = u;
                        Event {
                            rev,
                            path: ERR_PATH.into(),
                            value: text,
                            flags: FLAG_SET,
                        }
                    }
                    Err(_) => nop_event(rev),
                };
                (ApplyResult::Err { rev, code }, event)
            }
        };
        let code = match result {
            ApplyResult::Ok { .. } => None,
            ApplyResult::Err { code, .. } => Some(code),
        };
        let pkey = path_key(&event.path);
        let flags = event.flags as u8 | if undo { HAS_UNDO } else { 0 };
        // A row holds consecutive revisions: a full row, or a gap, starts a new one.
        if self.row.len() >= REV_ROW_BYTES || (!self.row.is_empty() && rev as u64 != self.row_next)
        {
            self.flush_revs()?;
        }
        if self.row.is_empty() {
            self.row_first = rev as u64;
        }
        self.row_next = rev as u64 + 1;
        RevEntry {
            id: cmd.id,
            code,
            flags,
            pkey: &pkey,
        }
        .encode_into(&mut self.row);
        fresh.insert(cmd.id, (rev, code));
        let membership = is_membership_path(&event.path);
        Ok(Applied {
            result,
            event: Some(event),
            membership,
        })
    }

    /// A SET (`value` some) or DEL of `path`: the failure, or the event.
    fn change(
        &mut self,
        path: String,
        cas: i64,
        value: Option<Bytes>,
        rev: i64,
        undo: &mut bool,
    ) -> Result<(Option<Failure>, Option<Event>)> {
        if path::validate(&path).is_err() {
            return Ok((Some((ErrCode::BadPath, "bad path")), None));
        }
        match self.mutate(&path, &path_key(&path), cas, value.as_deref(), rev)? {
            Ok(u) => {
                *undo = u;
                let flags = if value.is_some() { FLAG_SET } else { FLAG_DEL };
                let value = value.unwrap_or_default();
                Ok((
                    None,
                    Some(Event {
                        rev,
                        path,
                        value,
                        flags,
                    }),
                ))
            }
            Err(f) => Ok((Some(f), None)),
        }
    }

    /// Inserts the pending `revs` row, if any. Must run before `revs` is read and before the
    /// transaction commits.
    pub fn flush_revs(&mut self) -> Result<()> {
        if !self.row.is_empty() {
            self.revs.insert(self.row_first, self.row.as_slice())?;
            self.row.clear();
        }
        Ok(())
    }

    /// Drops the undo records of revisions `(from, to]`, and the `revs` rows that neither
    /// history (floor `to`) nor the duplicate window (`keep_ids_above`) needs any more.
    pub fn trim(&mut self, from: i64, to: i64, keep_ids_above: i64) -> Result<()> {
        self.flush_revs()?;
        if to > from {
            let start = self
                .revs
                .range(..=(from.max(0) as u64 + 1))?
                .next_back()
                .transpose()?
                .map_or(0, |(k, _)| k.value());
            let mut undo_keys = Vec::new();
            for item in self.revs.range(start..=(to as u64))? {
                let (k, row) = item?;
                for (i, e) in RevEntry::decode_row(row.value())?.iter().enumerate() {
                    let rev = k.value() + i as u64;
                    if rev as i64 > from && rev as i64 <= to && e.flags & HAS_UNDO != 0 {
                        undo_keys.push(keys::undo_key(e.pkey, rev));
                    }
                }
            }
            for k in undo_keys {
                self.undo.remove(k.as_slice())?;
            }
        }
        let cut = to.min(keep_ids_above);
        if cut < 1 {
            return Ok(());
        }
        let mut dead = Vec::new();
        for item in self.revs.range(..=(cut as u64))? {
            let (k, row) = item?;
            let n = RevEntry::decode_row(row.value())?.len() as u64;
            if k.value() + n - 1 > cut as u64 {
                break;
            }
            dead.push(k.value());
        }
        for k in dead {
            self.revs.remove(k)?;
        }
        Ok(())
    }

    /// The membership the tree describes (see [`derive_config`]).
    pub fn derive_config(&self, prev: &Config) -> Result<Config> {
        derive_config(&self.current(), prev)
    }
}

/// The membership a tree describes: voters are the ids in non-empty `/ctl/cal/*`, learners
/// the other ids under `/ctl/node/`. With no voter left, `prev`'s voters stay (the last voter
/// is never removed, as in Doozer).
pub(crate) fn derive_config<F, U>(view: &View<'_, F, U>, prev: &Config) -> Result<Config>
where
    F: ReadableTable<Bin, Bin>,
    U: ReadableTable<Bin, Bin>,
{
    let mut voters = BTreeSet::new();
    let cal = child_prefix("/ctl/cal");
    view.scan(&cal, prefix_end(&cal).as_deref(), |k, _, value| {
        let direct = !k[cal.len()..].contains(&0x01);
        if direct && !value.is_empty() {
            let id = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().parse::<NodeId>().ok());
            match id {
                Some(id) => {
                    voters.insert(id);
                }
                None => tracing::warn!(
                    path = %keys::key_path(k),
                    "ignoring a calendar slot that holds no node id"
                ),
            }
        }
        ControlFlow::Continue(())
    })?;
    let mut learners = BTreeSet::new();
    view.entries("/ctl/node", |name| {
        let id = std::str::from_utf8(name)
            .ok()
            .and_then(|s| s.parse::<NodeId>().ok());
        if let Some(id) = id.filter(|id| !voters.contains(id)) {
            learners.insert(id);
        }
        ControlFlow::Continue(())
    })?;
    if voters.is_empty() {
        voters = prev.voters.clone();
        learners.retain(|l| !voters.contains(l));
    }
    Ok(Config { voters, learners })
}

fn nop_event(rev: i64) -> Event {
    Event {
        rev,
        path: "/".into(),
        value: Bytes::new(),
        flags: FLAG_NOP,
    }
}

fn is_membership_path(p: &str) -> bool {
    p == "/ctl" || p.starts_with("/ctl/cal") || p.starts_with("/ctl/node")
}
