//! Applying decided commands to the tree in memory.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;

use bytes::Bytes;
use doozer_paxos::{Command, CommandId, Config, NodeId};
use doozer_proto::{path, ErrCode};

use crate::codec;
use crate::keys::{self, child_prefix, path_key, prefix_end};
use crate::mem::{FileVal, Mem, RevRec, HAS_UNDO};
use crate::op::{ApplyResult, Event, Op, FLAG_DEL, FLAG_NOP, FLAG_SET};
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

/// Recently applied command ids and their results, for answering duplicates: two
/// generations of at most [`DEDUP_WINDOW_REVS`] ids each, the newer taking every new id and
/// replacing the older when full. Every applied command takes a revision and adds its id,
/// so the two always hold every id of the window. One map pruned with `retain` left
/// tombstones that made hashbrown rehash its ~200k entries in place every few thousand
/// inserts (1.4% of the machine in `perf` at 64 clients).
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    cur: IdMap,
    prev: IdMap,
}

impl Dedup {
    /// The remembered result of `id` if it was applied within the window before `rev`.
    pub fn lookup(&self, id: &CommandId, rev: i64) -> Option<(i64, Option<ErrCode>)> {
        self.cur
            .get(id)
            .or_else(|| self.prev.get(id))
            .copied()
            .filter(|(r, _)| *r > rev - DEDUP_WINDOW_REVS)
    }

    /// Remembers the result of a newly applied command.
    pub fn insert(&mut self, id: CommandId, result: (i64, Option<ErrCode>)) {
        if self.cur.len() >= DEDUP_WINDOW_REVS as usize {
            // The older generation's table is reused: no allocation, no rehash.
            std::mem::swap(&mut self.cur, &mut self.prev);
            self.cur.clear();
        }
        self.cur.insert(id, result);
    }

    /// Remembers the commands a commit applied.
    pub fn add(&mut self, ids: IdMap) {
        for (id, r) in ids {
            self.insert(id, r);
        }
    }
}

/// Applies commands to a [`Mem`] (the writer's own copy).
pub(crate) struct Tree<'m> {
    pub mem: &'m mut Mem,
}

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
    /// Checks that the path of `key`, which has no file of its own, could hold one: it is
    /// not a directory (the root always is) and no ancestor is a file.
    fn check_place(&self, key: &[u8]) -> Option<Failure> {
        if self.mem.is_dir_now(key) {
            return Some((ErrCode::IsDir, "is a directory"));
        }
        for (i, &b) in key.iter().enumerate().skip(1) {
            if b == 0x01 && self.mem.has_file(&key[..i]) {
                return Some((ErrCode::NotDir, "not a directory"));
            }
        }
        None
    }

    /// Sets (`value` some) or deletes the file at `key` at `rev` if `cas` allows it. On
    /// success, says whether an undo record was written.
    fn mutate(
        &mut self,
        key: &Bytes,
        cas: i64,
        value: Option<&Bytes>,
        rev: i64,
    ) -> std::result::Result<bool, Failure> {
        const MISMATCH: Failure = (ErrCode::RevMismatch, "rev mismatch");
        match value {
            // One hash look-up for the common case, a change of an existing file.
            Some(v) => {
                let new = FileVal {
                    rev,
                    value: v.clone(),
                };
                match self
                    .mem
                    .replace_existing(key, rev as u64, new, |cur| allowed(cas, cur))
                {
                    Some(true) => return Ok(true),
                    Some(false) => return Err(MISMATCH),
                    None => {}
                }
            }
            None => {
                if let Some(cur) = self.mem.file(key) {
                    if !allowed(cas, cur.rev) {
                        return Err(MISMATCH);
                    }
                    let old = self.mem.remove_file(key);
                    self.mem.push_undo(key.clone(), rev as u64, old);
                    return Ok(true);
                }
            }
        }
        if let Some(f) = self.check_place(key) {
            return Err(f);
        }
        if !allowed(cas, doozer_proto::msg::REV_MISSING) {
            return Err(MISMATCH);
        }
        // A created file needs no undo record; a delete of a missing file changes nothing.
        if let Some(v) = value {
            let new = FileVal {
                rev,
                value: v.clone(),
            };
            self.mem.create_file(key.clone(), new);
        }
        Ok(false)
    }

    /// Applies one command at revision `rev`, or answers a duplicate (which takes no
    /// revision). A new id goes to `fresh`.
    pub fn apply(&mut self, cmd: &Command, rev: i64, dedup: &Dedup, fresh: &mut IdMap) -> Applied {
        // `fresh` spans a whole replay after a restart, which can be longer than the window:
        // it answers only within the window, as `dedup` does, so replay decides as the live
        // apply did.
        let prev = fresh
            .get(&cmd.id)
            .copied()
            .filter(|(r, _)| *r > rev - 1 - DEDUP_WINDOW_REVS)
            .or_else(|| dedup.lookup(&cmd.id, rev - 1));
        if let Some((rev, code)) = prev {
            let result = match code {
                None => ApplyResult::Ok { rev },
                Some(code) => ApplyResult::Err { rev, code },
            };
            return Applied {
                result,
                event: None,
                membership: false,
            };
        }
        let mut undo = false;
        // The key of the event's path, when `change` made it already.
        let mut event_key = None;
        let (fail, event) = match codec::decode_op(&cmd.data) {
            Err(_) => (Some((ErrCode::Other, "bad mutation")), None),
            Ok(Op::Nop) => (None, None),
            Ok(Op::Set {
                path,
                rev: cas,
                value,
            }) => self.change(path, cas, Some(value), rev, &mut undo, &mut event_key),
            Ok(Op::Del { path, rev: cas }) => {
                self.change(path, cas, None, rev, &mut undo, &mut event_key)
            }
        };
        let (result, event) = match fail {
            None => (
                ApplyResult::Ok { rev },
                event.unwrap_or_else(|| nop_event(rev)),
            ),
            Some((code, text)) => {
                // The original records the failure as a clobbering set of /ctl/err. If even
                // that cannot be written (someone made /ctl a file), the revision is a nop.
                let key = Bytes::from(path_key(ERR_PATH));
                let text = Bytes::from_static(text.as_bytes());
                let event = match self.mutate(&key, -1, Some(&text), rev) {
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
        let flags = event.flags as u8 | if undo { HAS_UNDO } else { 0 };
        self.mem.revs.insert(
            rev as u64,
            RevRec {
                id: cmd.id,
                code,
                flags,
                pkey: match (fail, event_key) {
                    (None, Some(k)) => k,
                    _ => Bytes::from(path_key(&event.path)),
                },
            },
        );
        self.mem.rev = rev;
        fresh.insert(cmd.id, (rev, code));
        let membership = is_membership_path(&event.path);
        Applied {
            result,
            event: Some(event),
            membership,
        }
    }

    /// A SET (`value` some) or DEL of `path`: the failure, or the event.
    fn change(
        &mut self,
        path: String,
        cas: i64,
        value: Option<Bytes>,
        rev: i64,
        undo: &mut bool,
        event_key: &mut Option<Bytes>,
    ) -> (Option<Failure>, Option<Event>) {
        if path::validate(&path).is_err() {
            return (Some((ErrCode::BadPath, "bad path")), None);
        }
        let key = Bytes::from(path_key(&path));
        match self.mutate(&key, cas, value.as_ref(), rev) {
            Ok(u) => {
                *undo = u;
                *event_key = Some(key);
                let flags = if value.is_some() { FLAG_SET } else { FLAG_DEL };
                let value = value.unwrap_or_default();
                (
                    None,
                    Some(Event {
                        rev,
                        path,
                        value,
                        flags,
                    }),
                )
            }
            Err(f) => (Some(f), None),
        }
    }

    /// Moves the history floor up to `floor`: drops the undo records of revisions
    /// `(old floor, floor]`, and the `revs` entries that neither history nor the duplicate
    /// window (`keep_ids_above`) needs any more.
    pub fn trim(&mut self, floor: i64, keep_ids_above: i64) {
        let from = self.mem.floor;
        if floor > from {
            let lo = (from.max(0) as u64) + 1;
            self.mem.drop_undo_range(lo, floor as u64);
            self.mem.floor = floor;
        }
        let cut = floor.min(keep_ids_above);
        if cut >= 1 {
            self.mem.revs.remove_through(cut as u64);
        }
    }
}

/// The membership a tree describes: voters are the ids in non-empty `/ctl/cal/*`, learners
/// the other ids under `/ctl/node/`. With no voter left, `prev`'s voters stay (the last voter
/// is never removed, as in Doozer).
pub(crate) fn derive_config(view: &View<'_>, prev: &Config) -> Config {
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
    });
    let mut learners = BTreeSet::new();
    view.entries("/ctl/node", |name| {
        let id = std::str::from_utf8(name)
            .ok()
            .and_then(|s| s.parse::<NodeId>().ok());
        if let Some(id) = id.filter(|id| !voters.contains(id)) {
            learners.insert(id);
        }
        ControlFlow::Continue(())
    });
    if voters.is_empty() {
        voters = prev.voters.clone();
        learners.retain(|l| !voters.contains(l));
    }
    Config { voters, learners }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> CommandId {
        CommandId {
            node: NodeId(7),
            seq,
        }
    }

    #[test]
    fn dedup_holds_the_whole_window_across_generations() {
        let w = DEDUP_WINDOW_REVS as u64;
        let mut d = Dedup::default();
        // Each command takes the next revision, as in apply; 2.5 windows rotate twice.
        let last = 2 * w + w / 2;
        for rev in 1..=last {
            d.insert(id(rev), (rev as i64, None));
        }
        let now = last as i64;
        for rev in [last, last - 1, last - w + 1] {
            assert_eq!(
                d.lookup(&id(rev), now),
                Some((rev as i64, None)),
                "rev {rev}"
            );
        }
        for rev in [last - w, last - w - 1, 1] {
            assert_eq!(
                d.lookup(&id(rev), now),
                None,
                "rev {rev} is out of the window"
            );
        }
        assert!(d.cur.len() + d.prev.len() <= 2 * w as usize);
        // A failure's code is remembered too.
        d.add(IdMap::from_iter([(
            id(0),
            (now + 1, Some(ErrCode::RevMismatch)),
        )]));
        assert_eq!(
            d.lookup(&id(0), now + 1),
            Some((now + 1, Some(ErrCode::RevMismatch)))
        );
    }
}
