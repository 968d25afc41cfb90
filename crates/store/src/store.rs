//! [`Store`]: opening the file, group commits, reads, acceptor state.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use doozer_paxos::{Ballot, Config, PersistentState, Record, Slot, Value};
use doozer_proto::Glob;
use redb::{Database, Durability, ReadOnlyTable, ReadableTable, WriteTransaction};
use tracing::{debug_span, warn};

use crate::apply::{Dedup, IdMap, Tree, DEDUP_WINDOW_REVS, REV_ROW_BYTES};
use crate::codec;
use crate::error::{Result, StoreError};
use crate::keys::key_path;
use crate::op::{Batch, Commit, Event, StoreOptions, FLAG_SET};
use crate::tables::{self, Bin, RevEntry};
use crate::view::View;

/// Membership changes kept below the applied slot (they must cover `alpha` slots back).
const CONFIG_KEEP_SLOTS: u64 = 100_000;

/// The replicated state machine and all durable state of a node, in one redb file.
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
    /// Held for the whole of a write transaction.
    pub writer: Mutex<WriterSlot>,
    /// The state of the last commit, for readers.
    pub snap: RwLock<Arc<Snap>>,
    pub config: RwLock<Config>,
    pub rev: AtomicI64,
    pub applied: AtomicU64,
}

/// What the writer lock guards: the counters (copied for each transaction) and the
/// duplicate table (updated in place after a successful commit).
pub(crate) struct WriterSlot {
    pub w: Writer,
    pub dedup: Dedup,
}

/// How a write changes the duplicate table once it has committed.
pub(crate) enum DedupUpdate {
    /// Nothing.
    Keep,
    /// Commands applied by this write.
    Add(IdMap),
    /// Everything replaced (a snapshot was installed).
    Replace(IdMap),
}

/// The counters a writer works from (mirrors the `state` table).
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub rev: i64,
    pub applied: Slot,
    pub floor: i64,
    pub promised: Ballot,
    pub config: Config,
    pub poisoned: bool,
}

/// A read snapshot: the tables as of one commit.
pub(crate) struct Snap {
    pub files: ReadOnlyTable<Bin, Bin>,
    pub undo: ReadOnlyTable<Bin, Bin>,
    pub revs: ReadOnlyTable<u64, Bin>,
    pub rev: i64,
    pub floor: i64,
}

impl Snap {
    /// Which revision a read at `rev` sees: `None` is this snapshot's own.
    fn at(&self, rev: Option<i64>) -> Result<Option<u64>> {
        match rev {
            None => Ok(None),
            Some(r) if r == self.rev => Ok(None),
            Some(r) if r > self.rev => Err(StoreError::FutureRev {
                rev: r,
                current: self.rev,
            }),
            Some(r) if r < self.floor => Err(StoreError::TooLate {
                rev: r,
                oldest: self.floor,
            }),
            Some(r) => Ok(Some(r as u64)),
        }
    }

    fn view(&self, at: Option<u64>) -> View<'_, ReadOnlyTable<Bin, Bin>, ReadOnlyTable<Bin, Bin>> {
        View {
            files: &self.files,
            undo: &self.undo,
            at,
        }
    }
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
/// refused unchanged), then opens every table so that readers find them.
fn init_tables(txn: &WriteTransaction) -> Result<()> {
    let mut state = txn.open_table(tables::STATE)?;
    let format = state
        .get(tables::S_FORMAT)?
        .map(|v| tables::read_u64(v.value()))
        .transpose()?;
    match format {
        None => {
            state.insert(tables::S_FORMAT, tables::u64_row(tables::FORMAT).as_slice())?;
        }
        Some(tables::FORMAT) => {}
        Some(found) => {
            return Err(StoreError::UnsupportedFormat {
                found,
                supported: tables::FORMAT,
            })
        }
    }
    txn.open_table(tables::FILES)?;
    txn.open_table(tables::UNDO)?;
    txn.open_table(tables::REVS)?;
    txn.open_table(tables::META)?;
    txn.open_table(tables::SLOT_META)?;
    txn.open_table(tables::SLOT_VALUES)?;
    txn.open_table(tables::CONFIGS)?;
    Ok(())
}

impl Store {
    /// Opens the store at `path`, creating it if missing. After a crash, redb recovers the
    /// last committed transaction.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store> {
        let _span = debug_span!("store_open", path = %path.display()).entered();
        let db = Database::builder()
            .set_cache_size(opts.cache_bytes)
            .create(path)?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        init_tables(&txn)?;
        txn.commit()?;
        let writer = Self::load_writer(&db)?;
        let dedup = Self::load_dedup(&db, writer.rev)?;
        let snap = Self::snapshot_of(&db)?;
        Ok(Store {
            inner: Arc::new(Inner {
                rev: AtomicI64::new(writer.rev),
                applied: AtomicU64::new(writer.applied),
                config: RwLock::new(writer.config.clone()),
                snap: RwLock::new(Arc::new(snap)),
                writer: Mutex::new(WriterSlot { w: writer, dedup }),
                db,
                opts,
            }),
        })
    }

    pub(crate) fn load_writer(db: &Database) -> Result<Writer> {
        let txn = db.begin_read()?;
        let state = txn.open_table(tables::STATE)?;
        Ok(Writer {
            rev: get_u64(&state, tables::S_REV)? as i64,
            applied: get_u64(&state, tables::S_APPLIED)?,
            floor: get_u64(&state, tables::S_FLOOR)? as i64,
            promised: get_decoded(&state, tables::S_PROMISED)?.unwrap_or(Ballot::ZERO),
            config: get_decoded(&state, tables::S_CONFIG)?.unwrap_or_default(),
            poisoned: false,
        })
    }

    /// The command ids applied within the duplicate window before `rev`.
    pub(crate) fn load_dedup(db: &Database, rev: i64) -> Result<Dedup> {
        let txn = db.begin_read()?;
        let mut dedup = Dedup::default();
        let from = (rev - DEDUP_WINDOW_REVS + 1).max(1) as u64;
        let start = txn
            .open_table(tables::REVS)?
            .range(..=from)?
            .next_back()
            .transpose()?
            .map_or(from, |(k, _)| k.value());
        for item in txn.open_table(tables::REVS)?.range(start..)? {
            let (k, row) = item?;
            for (i, e) in RevEntry::decode_row(row.value())?.into_iter().enumerate() {
                let r = k.value() + i as u64;
                if r >= from {
                    dedup.map.insert(e.id, (r as i64, e.code));
                }
            }
        }
        Ok(dedup)
    }

    pub(crate) fn snapshot_of(db: &Database) -> Result<Snap> {
        let txn = db.begin_read()?;
        let state = txn.open_table(tables::STATE)?;
        Ok(Snap {
            files: txn.open_table(tables::FILES)?,
            undo: txn.open_table(tables::UNDO)?,
            revs: txn.open_table(tables::REVS)?,
            rev: get_u64(&state, tables::S_REV)? as i64,
            floor: get_u64(&state, tables::S_FLOOR)? as i64,
        })
    }

    /// Makes the state of the last commit visible to readers and to the counters.
    pub(crate) fn publish(&self, w: &Writer) -> Result<()> {
        let snap = Self::snapshot_of(&self.inner.db)?;
        *self.inner.snap.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
        *self.inner.config.write().unwrap_or_else(|e| e.into_inner()) = w.config.clone();
        self.inner.rev.store(w.rev, Ordering::Release);
        self.inner.applied.store(w.applied, Ordering::Release);
        Ok(())
    }

    /// Runs `f` in one durable write transaction; on success the writer state it produced
    /// becomes current, the duplicate table is updated, and readers see the result. Storage
    /// failures poison the store.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction, &mut Writer, &Dedup) -> Result<(T, DedupUpdate)>,
    ) -> Result<T> {
        let mut guard = lock(&self.inner.writer);
        if guard.w.poisoned {
            return Err(StoreError::Poisoned);
        }
        let mut next = guard.w.clone();
        let outcome = (|| {
            let mut txn = self.inner.db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            let out = f(&txn, &mut next, &guard.dedup)?;
            txn.commit()?;
            Ok(out)
        })();
        match outcome {
            Ok((out, update)) => {
                guard.w = next;
                match update {
                    DedupUpdate::Keep => {}
                    DedupUpdate::Add(m) => guard.dedup.map.extend(m),
                    DedupUpdate::Replace(m) => guard.dedup.map = m,
                }
                let rev = guard.w.rev;
                guard.dedup.prune(rev);
                if let Err(e) = self.publish(&guard.w) {
                    guard.w.poisoned = true;
                    return Err(e);
                }
                Ok(out)
            }
            Err(e) => {
                if poisons(&e) {
                    warn!(error = %e, "store write failed; refusing further writes");
                    guard.w.poisoned = true;
                }
                Err(e)
            }
        }
    }

    /// Writes `batch` in one transaction with one fsync: the acceptor records, then every
    /// decided slot applied in order. Slots at or below the applied one are skipped; a slot
    /// beyond the next one is [`StoreError::SlotGap`] and nothing is written.
    pub fn commit(&self, batch: Batch) -> Result<Commit> {
        let _span = debug_span!(
            "store_commit",
            records = batch.records.len(),
            slots = batch.decided.len()
        )
        .entered();
        let opts = self.inner.opts.clone();
        self.write(move |txn, st, dedup| apply_batch(txn, st, batch, &opts, dedup))
    }

    /// The current (last applied) revision.
    pub fn rev(&self) -> i64 {
        self.inner.rev.load(Ordering::Acquire)
    }

    /// The last applied slot.
    pub fn applied_slot(&self) -> Slot {
        self.inner.applied.load(Ordering::Acquire)
    }

    /// The oldest revision reads can ask for; WAIT needs `>` this.
    pub fn oldest_rev(&self) -> i64 {
        self.snap().floor
    }

    pub(crate) fn snap(&self) -> Arc<Snap> {
        self.inner
            .snap
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// GET: the body and rev of the file at `path`, at revision `rev` (current if `None`).
    /// A missing file is `(empty, 0)`; a directory is [`StoreError::IsDir`].
    pub fn get(&self, path: &str, rev: Option<i64>) -> Result<(Bytes, i64)> {
        let _span = tracing::trace_span!("store_get", path, ?rev).entered();
        let s = self.snap();
        s.view(s.at(rev)?).get(path)
    }

    /// GETDIR: the name of the `offset`-th entry (byte order) of directory `path`.
    pub fn getdir(&self, path: &str, offset: i32, rev: Option<i64>) -> Result<String> {
        let _span = tracing::trace_span!("store_getdir", path, ?rev).entered();
        let s = self.snap();
        s.view(s.at(rev)?).getdir(path, offset)
    }

    /// STAT: `(rev, len)` of a file, `(-2, entries)` of a directory, `(0, 0)` when missing.
    pub fn stat(&self, path: &str, rev: Option<i64>) -> Result<(i64, i32)> {
        let _span = tracing::trace_span!("store_stat", path, ?rev).entered();
        let s = self.snap();
        s.view(s.at(rev)?).stat(path)
    }

    /// WALK: the `offset`-th file matching `glob` in sorted depth-first order:
    /// `(path, body, rev)`.
    pub fn walk(&self, glob: &Glob, offset: i32, rev: Option<i64>) -> Result<(String, Bytes, i64)> {
        let _span = debug_span!("store_walk", glob = glob.as_str(), offset, ?rev).entered();
        let s = self.snap();
        s.view(s.at(rev)?).walk(glob, offset)
    }

    /// WAIT: the first event at or after `from_rev` (below 1 counts as 1) whose path matches
    /// `glob`, or `None` if there is none yet. [`StoreError::TooLate`] below the history.
    pub fn wait(&self, glob: &Glob, from_rev: i64) -> Result<Option<Event>> {
        let _span = debug_span!("store_wait", glob = glob.as_str(), from_rev).entered();
        let s = self.snap();
        let from = from_rev.max(1);
        if from <= s.floor {
            return Err(StoreError::TooLate {
                rev: from_rev,
                oldest: s.floor + 1,
            });
        }
        if from > s.rev {
            return Ok(None);
        }
        let from = from as u64;
        let start = s
            .revs
            .range(..=from)?
            .next_back()
            .transpose()?
            .map_or(from, |(k, _)| k.value());
        for item in s.revs.range(start..=s.rev as u64)? {
            let (k, row) = item?;
            for (i, e) in RevEntry::decode_row(row.value())?.iter().enumerate() {
                let rev = k.value() + i as u64;
                if rev < from || rev > s.rev as u64 {
                    continue;
                }
                let path = key_path(e.pkey);
                if !glob.matches(&path) {
                    continue;
                }
                let flags = e.event_flags();
                let value = if flags == FLAG_SET {
                    s.view(Some(rev))
                        .file(e.pkey)?
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
        }
        Ok(None)
    }

    /// The current membership: voters are the ids in non-empty `/ctl/cal/*`, learners the
    /// other `/ctl/node/<id>`.
    pub fn config(&self) -> Config {
        self.inner
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What a restarted engine needs: promise, accepts above the applied slot, the decided
    /// tail, and the configs governing slots `applied + 1 ..= applied + alpha` (the config
    /// after slot `s` governs slot `s + alpha` on).
    pub fn load_engine_state(&self, alpha: u64) -> Result<PersistentState> {
        let txn = self.inner.db.begin_read()?;
        let state = txn.open_table(tables::STATE)?;
        let applied = get_u64(&state, tables::S_APPLIED)?;
        let promised = get_decoded(&state, tables::S_PROMISED)?.unwrap_or(Ballot::ZERO);
        let mut accepted = std::collections::BTreeMap::new();
        let mut decided_tail = Vec::new();
        let values = tables::read_chunks(&txn.open_table(tables::SLOT_VALUES)?, ..)?;
        let mut values: std::collections::BTreeMap<Slot, Vec<u8>> = values.into_iter().collect();
        for item in txn.open_table(tables::SLOT_META)?.iter()? {
            let (slot, meta) = item?;
            let slot = slot.value();
            let raw = values
                .remove(&slot)
                .ok_or_else(|| StoreError::Corrupt(format!("slot {slot} has no value")))?;
            let value: Value = codec::decode(&raw)?;
            match meta.value().split_first() {
                Some((&tables::SLOT_ACCEPTED, b)) if slot > applied => {
                    accepted.insert(slot, (codec::decode(b)?, value));
                }
                Some((&tables::SLOT_DECIDED, _)) if slot <= applied => {
                    decided_tail.push((slot, value))
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
        self.write(|txn, _, _| {
            txn.open_table(tables::META)?.insert(key, value)?;
            Ok(((), DedupUpdate::Keep))
        })
    }
}

/// The body of [`Store::commit`].
fn apply_batch(
    txn: &WriteTransaction,
    st: &mut Writer,
    batch: Batch,
    opts: &StoreOptions,
    dedup: &Dedup,
) -> Result<(Commit, DedupUpdate)> {
    let mut state = txn.open_table(tables::STATE)?;
    let mut slot_meta = txn.open_table(tables::SLOT_META)?;
    let mut slot_values = txn.open_table(tables::SLOT_VALUES)?;
    let mut configs = txn.open_table(tables::CONFIGS)?;
    let mut tree = Tree {
        files: txn.open_table(tables::FILES)?,
        undo: txn.open_table(tables::UNDO)?,
        revs: txn.open_table(tables::REVS)?,
        dirs: Default::default(),
        row: Vec::with_capacity(REV_ROW_BYTES + 128),
        row_first: 0,
        row_next: 0,
    };
    let mut fresh = IdMap::default();
    for rec in &batch.records {
        match rec {
            Record::Promise(b) => {
                if *b > st.promised {
                    st.promised = *b;
                    state.insert(tables::S_PROMISED, codec::try_encode(b)?.as_slice())?;
                }
            }
            Record::Accept {
                slot,
                ballot,
                value,
            } => {
                if *slot > st.applied {
                    tables::put_chunks(&mut slot_values, *slot, &codec::try_encode(value)?, true)?;
                    let mut meta = vec![tables::SLOT_ACCEPTED];
                    meta.extend_from_slice(&codec::try_encode(ballot)?);
                    slot_meta.insert(*slot, meta.as_slice())?;
                }
            }
        }
    }
    let mut out = Commit::default();
    for (slot, value) in &batch.decided {
        if *slot <= st.applied {
            continue;
        }
        if *slot != st.applied + 1 {
            return Err(StoreError::SlotGap {
                applied: st.applied,
                got: *slot,
            });
        }
        let mut membership = false;
        if let Value::Batch(cmds) = value {
            for cmd in cmds {
                let a = tree.apply(cmd, st.rev + 1, dedup, &mut fresh)?;
                out.results.push((cmd.id, a.result));
                if let Some(ev) = a.event {
                    st.rev += 1;
                    out.events.push(ev);
                }
                membership |= a.membership;
            }
        }
        if opts.retain_slots > 0 {
            // Usually the value was accepted here unchanged: then deciding it is a flag.
            let raw = codec::try_encode(value)?;
            let was_accepted = slot_meta
                .get(*slot)?
                .is_some_and(|m| m.value().first() == Some(&tables::SLOT_ACCEPTED));
            let same = was_accepted
                && tables::read_chunks(&slot_values, *slot..=*slot)?
                    .first()
                    .is_some_and(|(_, v)| *v == raw);
            if !same {
                tables::put_chunks(&mut slot_values, *slot, &raw, true)?;
            }
            slot_meta.insert(*slot, [tables::SLOT_DECIDED].as_slice())?;
        } else {
            tables::remove_chunks(&mut slot_values, *slot)?;
            slot_meta.remove(*slot)?;
        }
        st.applied = *slot;
        if membership {
            let c = tree.derive_config(&st.config)?;
            if c != st.config {
                let raw = codec::try_encode(&c)?;
                configs.insert(*slot, raw.as_slice())?;
                state.insert(tables::S_CONFIG, raw.as_slice())?;
                out.configs.push((*slot, c.clone()));
                st.config = c;
            }
        }
    }
    // Retention: history by revisions, command ids by a fixed window, decided slots and
    // config changes by slots.
    let floor = st
        .floor
        .max(st.rev - opts.hist_revs.min(i64::MAX as u64) as i64);
    tree.trim(st.floor, floor, st.rev - DEDUP_WINDOW_REVS)?; // flushes the last revs row
    st.floor = floor;
    if st.applied > opts.retain_slots {
        let cut = st.applied - opts.retain_slots;
        tables::trim_slot_meta(&mut slot_meta, cut)?;
        tables::trim_slot_values(&mut slot_values, cut)?;
    }
    if st.applied > CONFIG_KEEP_SLOTS {
        let cut = st.applied - CONFIG_KEEP_SLOTS;
        let last_old = configs
            .range(..=cut)?
            .next_back()
            .transpose()?
            .map(|(k, _)| k.value());
        if let Some(k) = last_old {
            configs.retain_in(..k, |_, _| false)?;
        }
    }
    state.insert(tables::S_REV, tables::u64_row(st.rev as u64).as_slice())?;
    state.insert(tables::S_APPLIED, tables::u64_row(st.applied).as_slice())?;
    state.insert(tables::S_FLOOR, tables::u64_row(st.floor as u64).as_slice())?;
    out.rev = st.rev;
    out.applied = st.applied;
    Ok((out, DedupUpdate::Add(fresh)))
}

/// `Store` must stay shareable between the storage thread and readers.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Store>();
}
