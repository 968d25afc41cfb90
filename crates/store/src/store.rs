//! [`Store`]: opening the file (checkpoint + replay), group commits, reads, acceptor state.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use doozer_paxos::{Ballot, CommandId, Config, PersistentState, Record, Slot, Value};
use doozer_proto::Glob;
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tracing::{debug_span, info, warn};

use crate::apply::{Dedup, IdMap, Tree, DEDUP_WINDOW_REVS};
use crate::checkpoint::{self, Checkpointer};
use crate::ckpt_fs::{CkptDir, RealDir};
use crate::codec;
use crate::error::{Result, StoreError};
use crate::keys::key_path;
use crate::log::{self, Layout, LogWrite};
use crate::mem::Mem;
use crate::op::{ApplyResult, Batch, Commit, Event, StoreOptions, FLAG_SET};
use crate::tables::{self, Bin};
use crate::view::View;

/// Membership changes kept below the applied slot (they must cover `alpha` slots back).
const CONFIG_KEEP_SLOTS: u64 = 100_000;

/// The replicated state machine and all durable state of a node: a redb file for the
/// acceptor records, decided slots and counters, the applied state in memory, and
/// checkpoints of it in a file beside the redb file.
///
/// Cheap to clone (an `Arc`), `Send + Sync`. Writes ([`Store::commit`], snapshots, metadata)
/// are serialized inside; reads run concurrently against the state of the last commit.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub db: Database,
    pub opts: StoreOptions,
    /// How this file's log is split into tables.
    pub layout: Layout,
    /// Held for the whole of a write transaction.
    pub writer: Mutex<WriterSlot>,
    /// The applied state and what readers may see of it.
    pub shared: Arc<Shared>,
    pub ckpt: Checkpointer,
    /// The values this process wrote accept records of, by slot, until decided: deciding
    /// one of them unchanged then needs no encoding and read-back to compare. Only the
    /// storage thread's writes touch it.
    pub accepted_here: Mutex<BTreeMap<Slot, Value>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A deferred commit is not left to be learned again: commit it (a failure changes
        // nothing the next open cannot recover).
        if let Some(txn) = lock(&self.writer).pending.take() {
            if let Err(e) = txn.commit() {
                warn!(error = %e, "committing the deferred transaction at close");
            }
        }
        // A checkpoint thread must not rename its file after another store opened this one.
        self.ckpt.stop();
    }
}

/// What readers see of the last commit.
#[derive(Debug, Clone, Default)]
pub(crate) struct Visible {
    pub rev: i64,
    pub applied: Slot,
    pub config: Config,
}

/// The applied state, shared by the writer, readers and checkpoints.
pub(crate) struct Shared {
    /// Changed in place by the writer; may be ahead of `visible` while a commit is in flight.
    pub mem: RwLock<Mem>,
    pub visible: RwLock<Visible>,
    /// Floors that long reads (exports) need kept: rev -> number of readers.
    pub pins: Mutex<BTreeMap<i64, usize>>,
}

/// Keeps the history above a revision from being trimmed while it lives.
pub(crate) struct Pin<'a> {
    shared: &'a Shared,
    rev: i64,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut pins = lock(&self.shared.pins);
        if let Some(n) = pins.get_mut(&self.rev) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.rev);
            }
        }
    }
}

impl Shared {
    pub fn new(mem: Mem) -> Shared {
        Shared {
            visible: RwLock::new(Visible {
                rev: mem.rev,
                applied: mem.applied,
                config: mem.config.clone(),
            }),
            mem: RwLock::new(mem),
            pins: Mutex::new(Default::default()),
        }
    }

    pub fn into_mem(self) -> Mem {
        self.mem.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Mem> {
        self.mem.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, Mem> {
        self.mem.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn visible(&self) -> Visible {
        self.visible
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn visible_rev(&self) -> i64 {
        self.visible.read().unwrap_or_else(|e| e.into_inner()).rev
    }

    /// Pins the history above `rev`; call with `mem` read-locked so that no trim runs between
    /// reading the floor and pinning it.
    pub fn pin(&self, _mem: &Mem, rev: i64) -> Pin<'_> {
        *lock(&self.pins).entry(rev).or_insert(0) += 1;
        Pin { shared: self, rev }
    }

    /// Runs `f` on a view at revision `rev` (the visible one if `None`).
    pub fn view<T>(&self, rev: Option<i64>, f: impl FnOnce(View<'_>) -> Result<T>) -> Result<T> {
        let mem = self.read();
        let current = self.visible_rev();
        let r = rev.unwrap_or(current);
        if r > current {
            return Err(StoreError::FutureRev { rev: r, current });
        }
        if r < mem.floor {
            return Err(StoreError::TooLate {
                rev: r,
                oldest: mem.floor,
            });
        }
        let at = (r != mem.rev).then_some(r as u64);
        f(View { mem: &mem, at })
    }
}

/// What the writer lock guards: the durable counters and the duplicate table.
pub(crate) struct WriterSlot {
    pub w: Writer,
    pub dedup: Dedup,
    /// A transaction written but not committed yet ([`Store::commit_deferred`]); the next
    /// write goes on in it, and [`Store::flush`] commits it.
    pub pending: Option<WriteTransaction>,
}

/// How a write changes the duplicate table once it has committed.
pub(crate) enum DedupUpdate {
    /// Nothing.
    Keep,
    /// Commands applied by this write.
    Add(IdMap),
    /// Everything replaced: a snapshot was installed, and this is its state.
    Replace(Dedup, Box<Mem>),
}

/// The counters a writer works from that are not part of the applied state.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub promised: Ballot,
    /// The slot and revision of the last recorded checkpoint.
    pub ckpt_slot: Slot,
    pub ckpt_rev: i64,
    /// The first generation of the log that may have tables (those below are dropped).
    pub log_floor: u64,
    pub poisoned: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn get_u64(t: &impl ReadableTable<&'static str, Bin>, k: &str) -> Result<u64> {
    match t.get(k)? {
        Some(v) => tables::read_u64(v.value()),
        None => Ok(0),
    }
}

fn get_decoded<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, Bin>,
    k: &str,
) -> Result<Option<T>> {
    match t.get(k)? {
        Some(v) => codec::decode(v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{k}: {e}"))),
        None => Ok(None),
    }
}

/// Whether a write closure returns `e` only before it changed anything (its first check), so
/// that the transaction it was given, and the state, are as before.
fn refused_unchanged(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::SlotGap { .. } | StoreError::StaleSnapshot { .. }
    )
}

/// Whether an error leaves the database in a state where further writes are unsafe.
fn poisons(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::DiskFull(_)
            | StoreError::ReadOnly(_)
            | StoreError::Io(_)
            | StoreError::Engine(_)
            | StoreError::Corrupt(_)
            | StoreError::Poisoned
    )
}

/// Checks the format (before touching any other table, so that a file of another format is
/// refused unchanged), converts a format-4 file, then opens every table so that readers
/// find them. Returns whether the file is new (had no format row), its log layout and the
/// first generation of its log.
fn init_tables(txn: &WriteTransaction, opts: &StoreOptions) -> Result<(bool, Layout, u64)> {
    let mut state = txn.open_table(tables::STATE)?;
    let format = state
        .get(tables::S_FORMAT)?
        .map(|v| tables::read_u64(v.value()))
        .transpose()?;
    let created = format.is_none();
    let stored_gen = get_u64(&state, tables::S_LOG_GEN)?;
    let layout = Layout {
        gen_slots: match stored_gen {
            0 => opts.log_gen_slots.max(1),
            n => n,
        },
    };
    match format {
        None | Some(tables::FORMAT_V4) => {
            state.insert(tables::S_FORMAT, tables::u64_row(tables::FORMAT).as_slice())?;
            state.insert(
                tables::S_LOG_GEN,
                tables::u64_row(layout.gen_slots).as_slice(),
            )?;
            if format.is_some() {
                log::migrate_v4(txn, layout)?;
                info!(
                    gen_slots = layout.gen_slots,
                    "converted the store file from format 4 to 5 (the log in tables of \
                     consecutive slots)"
                );
            }
        }
        Some(tables::FORMAT) if stored_gen == 0 => {
            return Err(StoreError::Corrupt(
                "the store file has no log_gen row: its log cannot be found".into(),
            ))
        }
        Some(tables::FORMAT) => {}
        Some(found) => {
            return Err(StoreError::UnsupportedFormat {
                found,
                supported: tables::FORMAT,
            })
        }
    }
    txn.open_table(tables::META)?;
    txn.open_table(tables::CONFIGS)?;
    let floor = log::first_generation(txn)?;
    Ok((created, layout, floor))
}

/// The counters of the `state` table.
struct Stored {
    rev: i64,
    applied: Slot,
    config: Config,
    w: Writer,
}

/// The command ids applied within the duplicate window of `mem`.
fn dedup_of(mem: &Mem) -> Dedup {
    let mut dedup = Dedup::default();
    let from = (mem.rev - DEDUP_WINDOW_REVS + 1).max(1) as u64;
    for (r, e) in mem.revs.range(from..) {
        dedup.insert(e.id, (r as i64, e.code));
    }
    dedup
}

/// What applying one slot's commands did.
#[derive(Default)]
struct SlotOutcome {
    events: Vec<Event>,
    /// The membership after the slot, when it changed.
    config: Option<Config>,
}

/// How many results a commit gathers before it hands them out ([`Store::commit_with`]) while
/// it applies a slot. Handed out only after the whole batch, the first clients of a
/// 64-command slot waited for the other 63 commands to be applied; their next requests, which
/// the leader gathers into the next slot, then started that much later.
const ANSWER_EVERY: usize = 8;

/// Applies the commands of one decided slot to `mem` (the same code for commits and for the
/// replay after a restart, so both reach the same state). The commands' results are added
/// to `results`, which goes to `answer` whenever it holds [`ANSWER_EVERY`].
fn apply_slot(
    mem: &mut Mem,
    slot: Slot,
    value: &Value,
    dedup: &Dedup,
    fresh: &mut IdMap,
    results: &mut Vec<(CommandId, ApplyResult)>,
    answer: &mut dyn FnMut(Vec<(CommandId, ApplyResult)>),
) -> SlotOutcome {
    let mut out = SlotOutcome::default();
    let mut membership = false;
    if let Value::Batch(cmds) = value {
        let mut tree = Tree { mem: &mut *mem };
        for cmd in cmds {
            let rev = tree.mem.rev + 1;
            let a = tree.apply(cmd, rev, dedup, fresh);
            results.push((cmd.id, a.result));
            if results.len() >= ANSWER_EVERY {
                answer(std::mem::take(results));
            }
            if let Some(ev) = a.event {
                out.events.push(ev);
            }
            membership |= a.membership;
        }
    }
    mem.applied = slot;
    if membership {
        let view = View {
            mem: &*mem,
            at: None,
        };
        let c = crate::apply::derive_config(&view, &mem.config);
        if c != mem.config {
            mem.configs.insert(slot, c.clone());
            mem.config = c.clone();
            out.config = Some(c);
        }
    }
    out
}

/// History retention: by revisions, and command ids by a fixed window; never above `pin`
/// (the lowest floor a running export needs).
fn trim_history(mem: &mut Mem, opts: &StoreOptions, pin: Option<i64>) {
    let mut floor = mem
        .floor
        .max(mem.rev - opts.hist_revs.min(i64::MAX as u64) as i64);
    let mut keep_ids = mem.rev - DEDUP_WINDOW_REVS;
    if let Some(p) = pin {
        floor = floor.min(p).max(mem.floor);
        keep_ids = keep_ids.min(p);
    }
    Tree { mem: &mut *mem }.trim(floor, keep_ids);
}

/// Membership changes are kept `CONFIG_KEEP_SLOTS` back (and the one in force then). Returns
/// the first kept slot when older ones were dropped.
fn trim_configs(mem: &mut Mem) -> Option<Slot> {
    if mem.applied > CONFIG_KEEP_SLOTS {
        let cut = mem.applied - CONFIG_KEEP_SLOTS;
        let last_old = mem.configs.range(..=cut).next_back().map(|(k, _)| *k);
        if let Some(k) = last_old {
            let dead: Vec<Slot> = mem.configs.range(..k).map(|(s, _)| *s).collect();
            for s in &dead {
                mem.configs.remove(s);
            }
            if !dead.is_empty() {
                return Some(k);
            }
        }
    }
    None
}

impl Store {
    /// Opens the store at `path`, creating it if missing: loads the last checkpoint (the file
    /// `<path>.ckpt`) and applies the decided slots after it. After a crash, redb recovers
    /// the last committed transaction, and with it every slot a commit returned for.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store> {
        // Before the file is created: a name that cannot have a checkpoint is refused.
        checkpoint::checkpoint_name(path)?;
        let db = Database::builder()
            .set_cache_size(opts.cache_bytes)
            .create(path)?;
        Self::open_db(path, db, Arc::new(RealDir::of(path)), opts)
    }

    /// [`Store::open`] with the redb file on `backend` instead of the file at `path` (which
    /// still names the checkpoint file). For fault-injection tests: a backend that forgets
    /// what was not synced simulates a power loss.
    #[doc(hidden)]
    pub fn open_with_backend(
        path: &Path,
        backend: impl redb::StorageBackend,
        opts: StoreOptions,
    ) -> Result<Store> {
        Self::open_with_backends(path, backend, Arc::new(RealDir::of(path)), opts)
    }

    /// [`Store::open_with_backend`] with the checkpoint files in `dir` too (the name of
    /// `path` still names them).
    #[doc(hidden)]
    pub fn open_with_backends(
        path: &Path,
        backend: impl redb::StorageBackend,
        dir: Arc<dyn CkptDir>,
        opts: StoreOptions,
    ) -> Result<Store> {
        let db = Database::builder()
            .set_cache_size(opts.cache_bytes)
            .create_with_backend(backend)?;
        Self::open_db(path, db, dir, opts)
    }

    fn open_db(
        path: &Path,
        db: Database,
        dir: Arc<dyn CkptDir>,
        opts: StoreOptions,
    ) -> Result<Store> {
        let _span = debug_span!("store_open", path = %path.display()).entered();
        let ckpt_name = checkpoint::checkpoint_name(path)?;
        let ckpt_path = dir.display(&ckpt_name);
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let (created, layout, log_floor) = init_tables(&txn, &opts)?;
        if created && dir.exists(&ckpt_name) {
            // A checkpoint without its store file (deleted, or another store's): adopting it
            // would bring back old state with its acceptor records forgotten.
            return Err(StoreError::Corrupt(format!(
                "{} is a new store file but the checkpoint {} exists: it belongs to a store \
                 file that is gone; restore that file or move the checkpoint away",
                path.display(),
                ckpt_path.display()
            )));
        }
        txn.commit()?;
        let mut stored = Self::load_stored(&db)?;
        stored.w.log_floor = log_floor;
        checkpoint::remove_leftovers(&*dir, &ckpt_name);
        let mut w = stored.w.clone();
        let mem = match checkpoint::load(&*dir, &ckpt_name)? {
            Some(mem) => mem,
            None if w.ckpt_slot > 0 => {
                return Err(StoreError::Corrupt(format!(
                    "checkpoint {} of slot {} is missing",
                    ckpt_path.display(),
                    w.ckpt_slot
                )))
            }
            None => Mem::default(),
        };
        let file_slot = mem.applied;
        let mem = if mem.applied > stored.applied {
            // A snapshot install wrote its checkpoint and stopped before its commit.
            Self::adopt(&db, &mem, &mut w, layout)?;
            mem
        } else {
            let mem = Self::replay(&db, mem, &stored, &opts, layout)?;
            if mem.rev != stored.rev {
                return Err(StoreError::Corrupt(format!(
                    "replay reached revision {}, the store recorded {}",
                    mem.rev, stored.rev
                )));
            }
            mem
        };
        let dedup = dedup_of(&mem);
        let ckpt = Checkpointer::new(dir, ckpt_name, file_slot, w.ckpt_rev, opts.checkpoint_revs);
        Ok(Store {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared::new(mem)),
                writer: Mutex::new(WriterSlot {
                    w,
                    dedup,
                    pending: None,
                }),
                db,
                opts,
                layout,
                ckpt,
                accepted_here: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    fn load_stored(db: &Database) -> Result<Stored> {
        let txn = db.begin_read()?;
        let state = txn.open_table(tables::STATE)?;
        Ok(Stored {
            rev: get_u64(&state, tables::S_REV)? as i64,
            applied: get_u64(&state, tables::S_APPLIED)?,
            config: get_decoded(&state, tables::S_CONFIG)?.unwrap_or_default(),
            w: Writer {
                promised: get_decoded(&state, tables::S_PROMISED)?.unwrap_or(Ballot::ZERO),
                ckpt_slot: get_u64(&state, tables::S_CKPT_SLOT)?,
                ckpt_rev: get_u64(&state, tables::S_CKPT_REV)? as i64,
                log_floor: 0,
                poisoned: false,
            },
        })
    }

    /// Applies the decided slots after the checkpoint `mem` up to the recorded applied slot.
    fn replay(
        db: &Database,
        mut mem: Mem,
        stored: &Stored,
        opts: &StoreOptions,
        layout: Layout,
    ) -> Result<Mem> {
        let from = mem.applied + 1;
        if stored.applied >= from {
            let txn = db.begin_read()?;
            let slots = layout.read(&txn, from, stored.applied)?;
            let dedup = dedup_of(&mem);
            let mut fresh = IdMap::default();
            let mut next = from;
            for (slot, meta, raw) in slots {
                let decided = meta.first() == Some(&tables::SLOT_DECIDED);
                if slot != next || !decided {
                    break;
                }
                let value: Value = codec::decode(&raw)?;
                // Nobody waits for the results of a replay.
                apply_slot(
                    &mut mem,
                    slot,
                    &value,
                    &dedup,
                    &mut fresh,
                    &mut Vec::new(),
                    &mut |_| {},
                );
                next += 1;
            }
            if next != stored.applied + 1 {
                return Err(StoreError::Corrupt(format!(
                    "decided slot {next} is missing: the checkpoint is at slot {}, the store \
                     applied {}",
                    from - 1,
                    stored.applied
                )));
            }
            info!(
                slots = stored.applied + 1 - from,
                rev = mem.rev,
                "replayed the decided slots after the checkpoint"
            );
        }
        trim_history(&mut mem, opts, None);
        trim_configs(&mut mem);
        // The recorded membership history is the authority (it reaches further back than
        // the checkpoint's).
        let txn = db.begin_read()?;
        let mut configs = BTreeMap::new();
        for item in txn.open_table(tables::CONFIGS)?.iter()? {
            let (slot, v) = item?;
            configs.insert(slot.value(), codec::decode(v.value())?);
        }
        mem.configs = configs;
        if stored.applied > 0 && mem.config != stored.config {
            return Err(StoreError::Corrupt(
                "replayed membership differs from the recorded one".into(),
            ));
        }
        Ok(mem)
    }

    /// Makes the store's records agree with a checkpoint newer than them.
    fn adopt(db: &Database, mem: &Mem, w: &mut Writer, layout: Layout) -> Result<()> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let floor = record_install(&txn, mem, layout)?;
        txn.commit()?;
        w.log_floor = floor;
        w.ckpt_slot = mem.applied;
        w.ckpt_rev = mem.rev;
        info!(
            slot = mem.applied,
            rev = mem.rev,
            "completed an interrupted snapshot install"
        );
        Ok(())
    }

    /// Runs `f` in one durable write transaction; `f` applies to the shared state in place
    /// (readers keep seeing the last commit). On success the writer's counters it produced
    /// become current, the duplicate table is updated, and readers see the result. Storage
    /// failures, and any failure after `f` changed the state, poison the store; a write
    /// refused before it changed anything ([`refused_unchanged`]) leaves a pending
    /// transaction as it was.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction, &mut Writer, &Shared, &Dedup) -> Result<(T, DedupUpdate)>,
    ) -> Result<T> {
        self.write_or_defer(f, |_| false)
    }

    /// [`Store::write`], leaving the transaction uncommitted (pending) if `defer` says so of
    /// the result: readers see the result at once all the same.
    fn write_or_defer<T>(
        &self,
        f: impl FnOnce(&WriteTransaction, &mut Writer, &Shared, &Dedup) -> Result<(T, DedupUpdate)>,
        defer: impl FnOnce(&T) -> bool,
    ) -> Result<T> {
        let mut guard = lock(&self.inner.writer);
        if guard.w.poisoned {
            return Err(StoreError::Poisoned);
        }
        let sh = &self.inner.shared;
        let mut next = guard.w.clone();
        let pending = guard.pending.take();
        let had_pending = pending.is_some();
        // An error comes with the pending transaction when the write was refused before it
        // changed anything: that transaction goes on unharmed.
        let outcome = (|| {
            let txn = match pending {
                Some(txn) => txn,
                None => {
                    let mut txn = self.inner.db.begin_write().map_err(|e| (e.into(), None))?;
                    txn.set_durability(Durability::Immediate);
                    txn
                }
            };
            let out = match f(&txn, &mut next, sh, &guard.dedup) {
                Ok(out) => out,
                Err(e) if refused_unchanged(&e) => {
                    return Err((e, had_pending.then(|| Box::new(txn))));
                }
                Err(e) => return Err((e, None)),
            };
            if defer(&out.0) {
                return Ok((out, Some(txn)));
            }
            txn.commit().map_err(|e| (e.into(), None))?;
            Ok((out, None))
        })();
        match outcome {
            Ok(((out, update), keep)) => {
                guard.pending = keep;
                guard.w = next;
                // An installed state keeps the history it came with until the next commit.
                let trim = !matches!(update, DedupUpdate::Replace(..));
                {
                    // Readers see the new state and its revision together.
                    let mut mem = sh.write();
                    match update {
                        DedupUpdate::Keep => {}
                        DedupUpdate::Add(m) => guard.dedup.add(m),
                        DedupUpdate::Replace(m, new) => {
                            guard.dedup = m;
                            let generation = mem.generation + 1;
                            *mem = *new;
                            mem.generation = generation;
                        }
                    }
                    *sh.visible.write().unwrap_or_else(|e| e.into_inner()) = Visible {
                        rev: mem.rev,
                        applied: mem.applied,
                        config: mem.config.clone(),
                    };
                }
                if trim {
                    let mut mem = sh.write();
                    let pin = lock(&sh.pins).keys().next().copied();
                    trim_history(&mut mem, &self.inner.opts, pin);
                }
                self.inner.ckpt.recorded(guard.w.ckpt_slot);
                self.inner.ckpt.maybe_start(sh, guard.w.ckpt_rev);
                Ok(out)
            }
            Err((e, Some(txn))) => {
                guard.pending = Some(*txn);
                Err(e)
            }
            Err((e, None)) => {
                // Accept records noted during the failed write never reached the file.
                lock(&self.inner.accepted_here).clear();
                // A pending transaction lost with this one held state readers saw already.
                let ahead = had_pending || sh.read().rev != sh.visible_rev();
                if poisons(&e) || ahead {
                    warn!(error = %e, "store write failed; refusing further writes");
                    guard.w.poisoned = true;
                }
                Err(e)
            }
        }
    }

    /// Commits the pending transaction ([`Store::commit_deferred`]), if any, with one fsync.
    /// A failure poisons the store: readers saw what it held.
    pub fn flush(&self) -> Result<()> {
        let mut guard = lock(&self.inner.writer);
        let Some(txn) = guard.pending.take() else {
            return Ok(());
        };
        let _span = debug_span!("store_flush").entered();
        txn.commit().map_err(|e| {
            warn!(error = %e, "store flush failed; refusing further writes");
            guard.w.poisoned = true;
            StoreError::from(e)
        })
    }

    /// Spreads the checkpoints of replicas apart: this store's fall `part` of `of` parts
    /// into each interval of `checkpoint_revs` (a node passes its place among the members
    /// and their number). Nodes applying the same revisions otherwise all write theirs at
    /// once. The default is 0 of 1.
    pub fn set_checkpoint_phase(&self, part: u64, of: u64) {
        self.inner.ckpt.set_phase(part, of);
    }

    /// The revision at which the last checkpoint started, or the one the checkpoint file
    /// held when the store was opened (0: none).
    pub fn checkpoint_started_rev(&self) -> i64 {
        self.inner.ckpt.started_rev()
    }

    /// Whether a deferred transaction waits for [`Store::flush`] or the next write.
    pub fn has_pending(&self) -> bool {
        lock(&self.inner.writer).pending.is_some()
    }

    /// Replaces the applied state with `new` (a snapshot): its checkpoint is written first,
    /// then the records agree with it in one transaction.
    pub(crate) fn install_mem(&self, new: Mem) -> Result<()> {
        self.write(|txn, st, sh, _| {
            let applied = sh.visible().applied;
            if new.applied < applied {
                return Err(StoreError::StaleSnapshot {
                    snapshot: new.applied,
                    applied,
                });
            }
            // The decided slots before it are not in the log: the checkpoint must exist
            // before the commit says the store is at its slot.
            let tmp = Shared::new(new);
            self.inner.ckpt.write_now(&tmp)?;
            let new = tmp.into_mem();
            st.log_floor = record_install(txn, &new, self.inner.layout)?;
            st.ckpt_slot = new.applied;
            st.ckpt_rev = new.rev;
            let ids = dedup_of(&new);
            Ok(((), DedupUpdate::Replace(ids, Box::new(new))))
        })
    }

    /// Writes `batch` in one transaction with one fsync: the acceptor records, then every
    /// decided slot applied in order. Slots at or below the applied one are skipped; a slot
    /// beyond the next one is [`StoreError::SlotGap`] and nothing is written.
    pub fn commit(&self, batch: Batch) -> Result<Commit> {
        let mut results = Vec::new();
        let mut commit = self.commit_with(batch, |r| results.extend(r))?;
        commit.results = results;
        Ok(commit)
    }

    /// [`Store::commit`], handing the commands' results to `applied` as soon as they are
    /// applied in memory, a few at a time, before the transaction is durable and before
    /// readers see them (the returned [`Commit`] then has none). A decided slot is durable
    /// on a majority of acceptors already, so a server may answer its clients from there;
    /// should this commit then fail, the node stops and learns the slots again from its
    /// peers.
    pub fn commit_with(
        &self,
        batch: Batch,
        applied: impl FnMut(Vec<(CommandId, ApplyResult)>),
    ) -> Result<Commit> {
        self.commit_batch(batch, applied, false)
    }

    /// [`Store::commit_with`], except that a batch of decided slots only, each accepted
    /// here with the same value and none changing the membership, is applied (readers see
    /// it, `applied` gets its results) but its transaction is left pending: the next
    /// write goes on in it, or [`Store::flush`] commits it. Such a commit only flags slots
    /// decided and moves counters, and a crash that loses it loses nothing a restart cannot
    /// learn again: the values are in this node's durable accept records and decided on a
    /// majority. The next accept usually follows within milliseconds, so one fsync covers
    /// both instead of one each. Anything else commits at once.
    pub fn commit_deferred(
        &self,
        batch: Batch,
        applied: impl FnMut(Vec<(CommandId, ApplyResult)>),
    ) -> Result<Commit> {
        self.commit_batch(batch, applied, true)
    }

    fn commit_batch(
        &self,
        batch: Batch,
        applied: impl FnMut(Vec<(CommandId, ApplyResult)>),
        may_defer: bool,
    ) -> Result<Commit> {
        let _span = debug_span!(
            "store_commit",
            records = batch.records.len(),
            slots = batch.decided.len(),
            may_defer
        )
        .entered();
        let inner = &*self.inner;
        let ckpt = inner.ckpt.done();
        let (commit, _) = self.write_or_defer(
            move |txn, st, _, dedup| apply_batch(txn, st, inner, batch, dedup, ckpt, applied),
            |(_, deferrable)| may_defer && *deferrable,
        )?;
        Ok(commit)
    }

    /// The current (last applied) revision.
    pub fn rev(&self) -> i64 {
        self.inner.shared.visible_rev()
    }

    /// The last applied slot.
    pub fn applied_slot(&self) -> Slot {
        self.inner.shared.visible().applied
    }

    /// The oldest revision reads can ask for; WAIT needs `>` this.
    pub fn oldest_rev(&self) -> i64 {
        self.inner.shared.read().floor
    }

    /// GET: the body and rev of the file at `path`, at revision `rev` (current if `None`).
    /// A missing file is `(empty, 0)`; a directory is [`StoreError::IsDir`].
    pub fn get(&self, path: &str, rev: Option<i64>) -> Result<(Bytes, i64)> {
        let _span = tracing::trace_span!("store_get", path, ?rev).entered();
        self.inner.shared.view(rev, |v| v.get(path))
    }

    /// GETDIR: the name of the `offset`-th entry (byte order) of directory `path`.
    pub fn getdir(&self, path: &str, offset: i32, rev: Option<i64>) -> Result<String> {
        let _span = tracing::trace_span!("store_getdir", path, ?rev).entered();
        self.inner.shared.view(rev, |v| v.getdir(path, offset))
    }

    /// STAT: `(rev, len)` of a file, `(-2, entries)` of a directory, `(0, 0)` when missing.
    pub fn stat(&self, path: &str, rev: Option<i64>) -> Result<(i64, i32)> {
        let _span = tracing::trace_span!("store_stat", path, ?rev).entered();
        self.inner.shared.view(rev, |v| v.stat(path))
    }

    /// WALK: the `offset`-th file matching `glob` in sorted depth-first order:
    /// `(path, body, rev)`.
    pub fn walk(&self, glob: &Glob, offset: i32, rev: Option<i64>) -> Result<(String, Bytes, i64)> {
        let _span = debug_span!("store_walk", glob = glob.as_str(), offset, ?rev).entered();
        self.inner.shared.view(rev, |v| v.walk(glob, offset))
    }

    /// WAIT: the first event at or after `from_rev` (below 1 counts as 1) whose path matches
    /// `glob`, or `None` if there is none yet. [`StoreError::TooLate`] below the history.
    pub fn wait(&self, glob: &Glob, from_rev: i64) -> Result<Option<Event>> {
        let _span = debug_span!("store_wait", glob = glob.as_str(), from_rev).entered();
        let sh = &self.inner.shared;
        let mem = sh.read();
        let current = sh.visible_rev();
        let from = from_rev.max(1);
        if from <= mem.floor {
            return Err(StoreError::TooLate {
                rev: from_rev,
                oldest: mem.floor + 1,
            });
        }
        if from > current {
            return Ok(None);
        }
        for (rev, e) in mem.revs.range(from as u64..=current as u64) {
            let path = key_path(&e.pkey);
            if !glob.matches(&path) {
                continue;
            }
            let flags = e.event_flags();
            let value = if flags == FLAG_SET {
                let at = (rev as i64 != mem.rev).then_some(rev);
                View { mem: &mem, at }
                    .file(&e.pkey)
                    .map(|(_, v)| v)
                    .unwrap_or_default()
            } else {
                Bytes::new()
            };
            return Ok(Some(Event {
                rev: rev as i64,
                path,
                value,
                flags,
            }));
        }
        Ok(None)
    }

    /// The current membership: voters are the ids in non-empty `/ctl/cal/*`, learners the
    /// other `/ctl/node/<id>`.
    pub fn config(&self) -> Config {
        self.inner.shared.visible().config
    }

    /// What a restarted engine needs: promise, accepts above the applied slot, the decided
    /// tail (the last `retain_slots` applied), and the configs governing slots
    /// `applied + 1 ..= applied + alpha` (the config after slot `s` governs slot `s + alpha`
    /// on).
    pub fn load_engine_state(&self, alpha: u64) -> Result<PersistentState> {
        let txn = self.inner.db.begin_read()?;
        let state = txn.open_table(tables::STATE)?;
        let applied = get_u64(&state, tables::S_APPLIED)?;
        let promised = get_decoded(&state, tables::S_PROMISED)?.unwrap_or(Ballot::ZERO);
        let mut accepted = BTreeMap::new();
        let mut decided_tail = Vec::new();
        // Decided slots since the checkpoint are kept for replay; the engine gets the tail.
        let first = applied.saturating_sub(self.inner.opts.retain_slots) + 1;
        for (slot, meta, raw) in self.inner.layout.read(&txn, first, u64::MAX)? {
            match meta.split_first() {
                Some((&tables::SLOT_ACCEPTED, b)) if slot > applied => {
                    accepted.insert(slot, (codec::decode(b)?, codec::decode(&raw)?));
                }
                Some((&tables::SLOT_DECIDED, _)) if slot <= applied => {
                    decided_tail.push((slot, codec::decode(&raw)?))
                }
                // An accept of a slot applied since, or a decision above applied: stale.
                Some((&tables::SLOT_ACCEPTED, _)) | Some((&tables::SLOT_DECIDED, _)) => {}
                _ => return Err(StoreError::Corrupt(format!("slot {slot} meta"))),
            }
        }
        let mut changes: Vec<(Slot, Config)> = Vec::new();
        for item in txn.open_table(tables::CONFIGS)?.iter()? {
            let (slot, v) = item?;
            changes.push((slot.value(), codec::decode(v.value())?));
        }
        let first = applied + 1;
        let governing = changes
            .iter()
            .rev()
            .find(|(s, _)| s.saturating_add(alpha) <= first)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        let mut configs = vec![(first, governing)];
        for (s, c) in changes {
            if s.saturating_add(alpha) > first {
                configs.push((s.saturating_add(alpha), c));
            }
        }
        Ok(PersistentState {
            promised,
            accepted,
            applied,
            decided_tail,
            configs,
        })
    }

    /// Reads a metadata value (node id, cluster name, listen address...).
    pub fn meta_get(&self, key: &str) -> Result<Option<Bytes>> {
        let txn = self.inner.db.begin_read()?;
        let t = txn.open_table(tables::META)?;
        Ok(t.get(key)?.map(|v| Bytes::copy_from_slice(v.value())))
    }

    /// Writes a metadata value durably (its own transaction and fsync).
    pub fn meta_put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.write(|txn, _, _, _| {
            txn.open_table(tables::META)?.insert(key, value)?;
            Ok(((), DedupUpdate::Keep))
        })
    }
}

/// Writes the revision, applied slot and history floor of `mem` to the `state` table.
fn put_counters(
    state: &mut redb::Table<'_, &'static str, Bin>,
    rev: i64,
    applied: Slot,
    floor: i64,
) -> Result<()> {
    state.insert(tables::S_REV, tables::u64_row(rev as u64).as_slice())?;
    state.insert(tables::S_APPLIED, tables::u64_row(applied).as_slice())?;
    state.insert(tables::S_FLOOR, tables::u64_row(floor as u64).as_slice())?;
    Ok(())
}

/// Makes the records say the store is at the state `mem` of a snapshot whose checkpoint is
/// written: its counters and membership history, no decided slot at or below its slot.
/// Returns the first generation of the log that may remain.
fn record_install(txn: &WriteTransaction, mem: &Mem, layout: Layout) -> Result<u64> {
    let floor = LogWrite::new(txn, layout).remove_through(mem.applied)?;
    txn.delete_table(tables::CONFIGS)?;
    let mut configs = txn.open_table(tables::CONFIGS)?;
    for (slot, c) in mem.configs.iter() {
        configs.insert(*slot, codec::try_encode(c)?.as_slice())?;
    }
    let mut state = txn.open_table(tables::STATE)?;
    put_counters(&mut state, mem.rev, mem.applied, mem.floor)?;
    state.insert(tables::S_CONFIG, codec::try_encode(&mem.config)?.as_slice())?;
    state.insert(tables::S_CKPT_SLOT, tables::u64_row(mem.applied).as_slice())?;
    state.insert(
        tables::S_CKPT_REV,
        tables::u64_row(mem.rev as u64).as_slice(),
    )?;
    Ok(floor)
}

/// The table `def` of `txn`, opened on first use, so a commit leaves the tables it does not
/// change alone (most commits change no membership; an accept alone changes no counter).
fn lazy<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'s mut Option<redb::Table<'t, K, V>>,
    txn: &'t WriteTransaction,
    def: redb::TableDefinition<'static, K, V>,
) -> Result<&'s mut redb::Table<'t, K, V>> {
    if slot.is_none() {
        *slot = Some(txn.open_table(def)?);
    }
    Ok(slot.as_mut().expect("opened above"))
}

/// The body of [`Store::commit`]: `ckpt` is a checkpoint written since the last commit.
fn apply_batch(
    txn: &WriteTransaction,
    st: &mut Writer,
    inner: &Inner,
    batch: Batch,
    dedup: &Dedup,
    ckpt: Option<(Slot, i64)>,
    mut answer: impl FnMut(Vec<(CommandId, ApplyResult)>),
) -> Result<((Commit, bool), DedupUpdate)> {
    let sh = &*inner.shared;
    let mut accepted_here = lock(&inner.accepted_here);
    let mut state = None;
    let mut log = LogWrite::new(txn, inner.layout);
    let mut configs = None;
    let mut fresh = IdMap::default();
    // Checked before anything changes: a gap writes nothing.
    let applied = sh.visible().applied;
    let mut expect = applied + 1;
    for (slot, _) in &batch.decided {
        if *slot > applied {
            if *slot != expect {
                return Err(StoreError::SlotGap {
                    applied: expect - 1,
                    got: *slot,
                });
            }
            expect += 1;
        }
    }
    // The decided slots first, in memory: their clients are answered before this node
    // spends time on its own records (see `Store::commit_with`).
    let mut out = Commit::default();
    let mut guard = sh.write();
    let mem = &mut *guard;
    let mut decided = Vec::with_capacity(batch.decided.len());
    for (slot, value) in &batch.decided {
        if *slot <= mem.applied {
            continue;
        }
        let done = apply_slot(
            mem,
            *slot,
            value,
            dedup,
            &mut fresh,
            &mut out.results,
            &mut answer,
        );
        out.events.extend(done.events);
        decided.push((*slot, value, done.config));
    }
    let trim_below = trim_configs(mem);
    out.rev = mem.rev;
    out.applied = mem.applied;
    let floor = mem.floor;
    // The rest only writes redb tables: readers need not wait for it.
    drop(guard);
    if !out.results.is_empty() {
        answer(std::mem::take(&mut out.results));
    }
    for rec in &batch.records {
        match rec {
            Record::Promise(b) => {
                if *b > st.promised {
                    st.promised = *b;
                    lazy(&mut state, txn, tables::STATE)?
                        .insert(tables::S_PROMISED, codec::try_encode(b)?.as_slice())?;
                }
            }
            Record::Accept {
                slot,
                ballot,
                value,
            } => {
                if *slot > applied {
                    accepted_here.insert(*slot, value.clone());
                    let t = log.gen(*slot)?;
                    tables::put_chunks(&mut t.values, *slot, &codec::try_encode(value)?, true)?;
                    let mut meta = vec![tables::SLOT_ACCEPTED];
                    meta.extend_from_slice(&codec::try_encode(ballot)?);
                    t.meta.insert(*slot, meta.as_slice())?;
                }
            }
        }
    }
    // Deferrable: decided slots only, each accepted here unchanged, no membership change.
    let mut deferrable = batch.records.is_empty();
    for (slot, value, config) in decided {
        // The decided value is the log a restart replays after the checkpoint. Usually it
        // was accepted here unchanged: then deciding it is a flag.
        let t = log.gen(slot)?;
        let same = match accepted_here.remove(&slot) {
            // Accepted by this process: its last accept record holds this value.
            Some(v) => v == *value,
            // Accepted before a restart, or not at all: compare with the table.
            None => {
                let raw = codec::try_encode(value)?;
                let was_accepted = t
                    .meta
                    .get(slot)?
                    .is_some_and(|m| m.value().first() == Some(&tables::SLOT_ACCEPTED));
                was_accepted
                    && tables::read_chunks(&t.values, slot..=slot)?
                        .first()
                        .is_some_and(|(_, v)| *v == raw)
            }
        };
        if !same {
            deferrable = false;
            tables::put_chunks(&mut t.values, slot, &codec::try_encode(value)?, true)?;
        }
        t.meta.insert(slot, [tables::SLOT_DECIDED].as_slice())?;
        if let Some(c) = config {
            deferrable = false;
            let raw = codec::try_encode(&c)?;
            lazy(&mut configs, txn, tables::CONFIGS)?.insert(slot, raw.as_slice())?;
            lazy(&mut state, txn, tables::STATE)?.insert(tables::S_CONFIG, raw.as_slice())?;
            out.configs.push((slot, c));
        }
    }
    if let Some((slot, rev)) = ckpt.filter(|(s, _)| *s > st.ckpt_slot) {
        st.ckpt_slot = slot;
        st.ckpt_rev = rev;
        let state = lazy(&mut state, txn, tables::STATE)?;
        state.insert(tables::S_CKPT_SLOT, tables::u64_row(slot).as_slice())?;
        state.insert(tables::S_CKPT_REV, tables::u64_row(rev as u64).as_slice())?;
    }
    if let Some(k) = trim_below {
        lazy(&mut configs, txn, tables::CONFIGS)?.retain_in(..k, |_, _| false)?;
    }
    // Accepts of slots applied by now (decided here, or overtaken by a snapshot) are moot.
    if accepted_here
        .first_key_value()
        .is_some_and(|(s, _)| *s <= out.applied)
    {
        *accepted_here = accepted_here.split_off(&(out.applied + 1));
    }
    // Decided values: kept while a restart needs them (after the checkpoint) and for
    // `retain_slots` to serve lagging peers; dropped in whole tables, a few per commit.
    let cut = out
        .applied
        .saturating_sub(inner.opts.retain_slots)
        .min(st.ckpt_slot);
    st.log_floor = log.drop_below(st.log_floor, cut)?;
    // The counters move only when a slot is applied (an accept alone leaves them).
    if out.applied != applied {
        put_counters(
            lazy(&mut state, txn, tables::STATE)?,
            out.rev,
            out.applied,
            floor,
        )?;
    }
    Ok(((out, deferrable), DedupUpdate::Add(fresh)))
}

/// `Store` must stay shareable between the storage thread and readers.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Store>();
}
