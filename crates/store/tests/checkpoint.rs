//! Checkpoints: restarts replay the decided slots after the checkpoint file and reach the
//! state they left, with its history; an interrupted snapshot install is completed at open
//! (simulated, and by SIGKILLing a process that installs snapshots); a checkpoint that cannot
//! be written keeps the log; a damaged, missing or outdated checkpoint is an error, never an
//! empty store; exports stay consistent while commits or installs go on, and reads of the
//! current state never fail during installs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ballot, command, del, set, Immutable};
use doozer_paxos::{Ballot, Command, CommandId, NodeId, Record, Slot, Value};
use doozer_proto::Glob;
use doozer_store::codec::encode_op;
use doozer_store::{
    Batch, Op, SnapshotMeta, Store, StoreError, StoreOptions, DEDUP_WINDOW_REVS, FLAG_DEL, FLAG_SET,
};

/// Decided values kept below the applied slot for lagging peers.
const RETAIN: u64 = 5;

/// Slots per table of the log: small, so that tests of a few hundred slots drop tables.
const GEN: u64 = 16;

/// The whole history is kept, so that a reopened store answers exactly as before.
fn opts(checkpoint_revs: u64) -> StoreOptions {
    StoreOptions {
        hist_revs: 100_000,
        retain_slots: RETAIN,
        checkpoint_revs,
        log_gen_slots: GEN,
        ..StoreOptions::default()
    }
}

fn store_path(dir: &Path) -> PathBuf {
    dir.join("doozer.redb")
}

fn ckpt_path(dir: &Path) -> PathBuf {
    dir.join("doozer.redb.ckpt")
}

/// The paths `ops_for` touches, besides membership and `/ctl/err`.
fn data_path(k: u64) -> String {
    format!("/d/{}/{k}", k % 6)
}

/// The commands slot `slot` decides: sets, overwrites, deletes, nops, a compare-and-set that
/// fails (written to `/ctl/err`), and membership changes now and then.
fn ops_for(slot: u64) -> Vec<Op> {
    let mut ops: Vec<Op> = (0..1 + slot % 4)
        .map(|j| {
            let k = (slot * 7 + j * 3) % 40;
            match (slot + j) % 6 {
                0 => del(&data_path(k), -1),
                1 => Op::Nop,
                _ => set(&data_path(k), -1, &format!("{slot}.{j}")),
            }
        })
        .collect();
    if slot == 1 {
        ops.push(set("/fixed", -1, "here"));
    }
    if slot % 9 == 0 {
        // Only if missing: fails with REV_MISMATCH, written to /ctl/err.
        ops.push(set("/fixed", 0, "fails"));
    }
    if slot % 25 == 1 {
        let id = NodeId(0xA + (slot / 25) as u128 % 3);
        ops.push(set(&format!("/ctl/node/{id}/addr"), -1, "127.0.0.1:1"));
        ops.push(set("/ctl/cal/0", -1, &id.to_string()));
    }
    ops
}

/// The commands of slot `slot` as (seq, op): its `ops_for`, and now and then a command of an
/// earlier slot sent again (a duplicate, answered without a revision; the original may lie
/// before the checkpoint a restart starts from).
fn cmds_for(slot: u64) -> Vec<(u64, Op)> {
    if noop_slot(slot) {
        return vec![];
    }
    let mut cmds: Vec<(u64, Op)> = ops_for(slot)
        .into_iter()
        .enumerate()
        .map(|(j, op)| (slot * 100 + j as u64, op))
        .collect();
    if slot % 11 == 0 && slot > 30 && !noop_slot(slot - 30) {
        let old = slot - 30;
        cmds.insert(0, (old * 100, ops_for(old).swap_remove(0)));
    }
    cmds
}

/// Slots that decide a no-op value (no commands, no revision).
fn noop_slot(slot: u64) -> bool {
    slot % 17 == 0
}

fn value_for(slot: u64) -> Value {
    if noop_slot(slot) {
        return Value::Noop;
    }
    let cmds = cmds_for(slot)
        .iter()
        .map(|(seq, op)| command(77, *seq, op))
        .collect();
    Value::Batch(cmds)
}

/// Commits slots `first..=last`, one to three per transaction, with the promise and the
/// accept of the next slot a leader would write.
fn commit_slots(s: &Store, first: Slot, last: Slot) {
    let mut slot = first;
    while slot <= last {
        let end = (slot + slot % 3).min(last);
        let c = s
            .commit(common::leader_batch_of(slot, end, value_for))
            .expect("commit");
        assert_eq!(c.applied, end);
        slot = end + 1;
    }
}

/// Commits one slot at a time from `next` until the checkpoint file has been replaced
/// `changes` times; returns the next slot. A checkpoint starts only once the previous one
/// was recorded by a commit, so after two changes the first is recorded (and the log below
/// it dropped).
fn commit_until_checkpoints(s: &Store, dir: &Path, mut next: Slot, changes: usize) -> Slot {
    let mut last = std::fs::read(ckpt_path(dir)).ok();
    let mut seen = 0;
    while seen < changes {
        assert!(next < 20_000, "{seen} checkpoints by slot {next}");
        commit_slots(s, next, next);
        next += 1;
        let now = std::fs::read(ckpt_path(dir)).ok();
        if now.is_some() && now != last {
            seen += 1;
            last = now;
        }
    }
    next
}

/// The slot and revision of a checkpoint (a snapshot stream), by installing it into a scratch
/// store.
fn stream_meta(bytes: &[u8]) -> SnapshotMeta {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&store_path(dir.path()), opts(u64::MAX)).unwrap();
    s.install_snapshot(&mut &bytes[..]).expect("install")
}

/// What a closed store's redb file says about checkpoints and the log.
#[derive(Debug)]
struct Log {
    format: u64,
    ckpt_slot: u64,
    applied: u64,
    /// slot -> decided (else accepted).
    slots: BTreeMap<u64, bool>,
    /// The generations that have tables.
    gens: Vec<u64>,
}

fn read_log(dir: &Path) -> Log {
    use redb::{ReadableTable, TableDefinition, TableHandle};
    let state = TableDefinition::<&str, &[u8]>::new("state");
    let db = redb::Database::create(store_path(dir)).unwrap();
    let txn = db.begin_read().unwrap();
    let mut gens: Vec<u64> = txn
        .list_tables()
        .unwrap()
        .filter_map(|t| t.name().strip_prefix("slot_meta.")?.parse().ok())
        .collect();
    gens.sort();
    let st = txn.open_table(state).unwrap();
    let u = |k: &str| {
        st.get(k)
            .unwrap()
            .map(|v| u64::from_be_bytes(v.value().try_into().unwrap()))
            .unwrap_or(0)
    };
    let mut slots = BTreeMap::new();
    for g in &gens {
        let name = format!("slot_meta.{g}");
        let meta = TableDefinition::<u64, &[u8]>::new(&name);
        for item in txn.open_table(meta).unwrap().iter().unwrap() {
            let (k, v) = item.unwrap();
            assert_eq!(k.value() / GEN, *g, "slot {} in table {name}", k.value());
            slots.insert(k.value(), v.value().first() == Some(&2));
        }
    }
    Log {
        format: u("format"),
        ckpt_slot: u("ckpt_slot"),
        applied: u("applied"),
        slots,
        gens,
    }
}

/// Records a checkpoint of `slot` at `rev` in a closed store's redb file, as a commit does.
fn record_checkpoint(dir: &Path, slot: u64, rev: i64) {
    let state = redb::TableDefinition::<&str, &[u8]>::new("state");
    let db = redb::Database::create(store_path(dir)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(state).unwrap();
        t.insert("ckpt_slot", slot.to_be_bytes().as_slice())
            .unwrap();
        t.insert("ckpt_rev", (rev as u64).to_be_bytes().as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
}

impl Log {
    /// Every slot in `from..=applied` is in the log as decided.
    fn assert_decided_from(&self, from: u64) {
        for s in from..=self.applied {
            assert_eq!(self.slots.get(&s), Some(&true), "slot {s} in {self:?}");
        }
    }

    fn first(&self) -> u64 {
        *self.slots.keys().next().expect("a slot in the log")
    }

    /// The log was dropped up to `cut` as far as whole tables go: it starts in the table of
    /// slot `cut + 1`, at or before that slot.
    fn assert_trimmed_to(&self, cut: u64) {
        assert!(self.first() <= cut + 1, "{self:?} cut {cut}");
        assert_eq!(self.gens[0], (cut + 1) / GEN, "{self:?} cut {cut}");
    }
}

/// Everything a client can see of a store, and its snapshot stream (which holds the files,
/// the history with its floor, the remembered command ids and the membership history).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    rev: i64,
    applied: Slot,
    oldest: i64,
    config: String,
    engine_configs: String,
    stream: Vec<u8>,
    /// Per revision from the oldest: every path's GET, the directories' STAT, WAIT on `/**`.
    history: Vec<String>,
}

fn paths() -> Vec<String> {
    let mut p: Vec<String> = (0..40).map(data_path).collect();
    p.extend(["/fixed", "/ctl/err", "/ctl/cal/0"].map(String::from));
    p
}

impl Seen {
    fn of(s: &Store) -> Seen {
        let mut stream = Vec::new();
        let meta = s.export_snapshot(&mut stream).unwrap();
        let (rev, oldest) = (s.rev(), s.oldest_rev());
        assert_eq!(meta.rev, rev);
        let all = Glob::new("/**").unwrap();
        let mut history = Vec::new();
        for r in oldest..=rev {
            let mut line = format!("{r}:");
            for p in paths() {
                line.push_str(&format!(" {:?}", s.get(&p, Some(r))));
            }
            for d in ["/", "/d", "/d/0", "/d/5", "/ctl/node"] {
                line.push_str(&format!(" {:?}", s.stat(d, Some(r))));
            }
            line.push_str(&format!(" {:?}", s.wait(&all, r + 1)));
            history.push(line);
        }
        Seen {
            rev,
            applied: s.applied_slot(),
            oldest,
            config: format!("{:?}", s.config()),
            engine_configs: format!("{:?}", s.load_engine_state(3).unwrap().configs),
            stream,
            history,
        }
    }

    /// Compares field by field, for readable failures.
    fn assert_same(&self, other: &Seen, what: &str) {
        assert_eq!(
            (self.rev, self.applied, self.oldest),
            (other.rev, other.applied, other.oldest),
            "{what}: rev, applied, oldest"
        );
        assert_eq!(self.config, other.config, "{what}: config");
        assert_eq!(self.engine_configs, other.engine_configs, "{what}: configs");
        assert_eq!(self.history.len(), other.history.len(), "{what}");
        for (a, b) in self.history.iter().zip(&other.history) {
            assert_eq!(a, b, "{what}: history");
        }
        assert!(
            self.stream == other.stream,
            "{what}: snapshot streams differ"
        );
    }
}

/// The files a plain replay of slots `1..=slot` of `cmds_for` leaves (path -> rev, body).
fn model(slot: Slot) -> (i64, BTreeMap<String, (i64, Bytes)>) {
    let mut tree = BTreeMap::new();
    let mut rev = 0;
    let mut seen = std::collections::HashSet::new();
    for s in 1..=slot {
        for (seq, op) in cmds_for(s) {
            if !seen.insert(seq) {
                continue;
            }
            rev += 1;
            match op {
                Op::Set {
                    path,
                    rev: -1,
                    value,
                } => {
                    tree.insert(path, (rev, value));
                }
                Op::Set { .. } => {
                    tree.insert("/ctl/err".into(), (rev, Bytes::new()));
                }
                Op::Del { path, .. } => {
                    tree.remove(&path);
                }
                Op::Nop => {}
            }
        }
    }
    (rev, tree)
}

/// The store holds exactly the files of the replay of its applied slots.
fn assert_matches_model(s: &Store) {
    let (rev, want) = model(s.applied_slot());
    assert_eq!(s.rev(), rev);
    let g = Glob::new("/**").unwrap();
    let got: BTreeMap<String, (i64, Bytes)> = (0..)
        .map_while(|i| s.walk(&g, i, None).ok())
        .map(|(p, v, r)| (p, (r, v)))
        .collect();
    assert_eq!(got.len(), want.len());
    for (p, (r, v)) in &want {
        let (gr, gv) = &got[p];
        assert_eq!(gr, r, "{p}");
        // /ctl/err's text is the store's.
        if p != "/ctl/err" {
            assert_eq!(gv, v, "{p}");
        }
    }
}

#[test]
fn restart_replays_the_log_after_the_checkpoint() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let s = Store::open(&path, opts(50)).unwrap();
    let next = commit_until_checkpoints(&s, dir.path(), 1, 2);
    let applied = next + 99;
    commit_slots(&s, next, applied);
    assert_matches_model(&s);
    let before = Seen::of(&s);
    assert_eq!(before.oldest, 0, "the whole history is kept");
    let tail = s.load_engine_state(3).unwrap();
    drop(s);

    // A checkpoint was recorded and the log below it dropped; the slots after it are kept.
    let log = read_log(dir.path());
    assert_eq!(log.applied, applied);
    assert!(log.ckpt_slot > 0 && log.ckpt_slot < applied, "{log:?}");
    let cut = log.ckpt_slot.min(applied - RETAIN);
    log.assert_trimmed_to(cut);
    log.assert_decided_from(cut + 1);
    assert_eq!(
        log.slots.get(&(applied + 1)),
        Some(&false),
        "the next accept"
    );
    let file = std::fs::read(ckpt_path(dir.path())).unwrap();
    let file_slot = stream_meta(&file).slot;
    assert!(
        file_slot >= log.ckpt_slot && file_slot <= applied,
        "{file_slot}"
    );

    // Reopened: the checkpoint plus the replayed slots are the state it left.
    let s = Store::open(&path, opts(50)).unwrap();
    Seen::of(&s).assert_same(&before, "reopened");
    let again = s.load_engine_state(3).unwrap();
    assert_eq!(again.decided_tail, tail.decided_tail);
    assert_eq!(again.accepted, tail.accepted);
    assert_eq!(again.promised, ballot(applied));
    drop(s);

    // Without checkpoints: the same, and the log after the recorded checkpoint grows.
    let s = Store::open(&path, opts(u64::MAX)).unwrap();
    Seen::of(&s).assert_same(&before, "reopened without checkpoints");
    commit_slots(&s, applied + 1, applied + 40);
    // A checkpoint written and not yet recorded: the file is newer than the recorded slot.
    let mut mid = Vec::new();
    let mid_meta = s.export_snapshot(&mut mid).unwrap();
    assert_eq!(mid_meta.slot, applied + 40);
    commit_slots(&s, applied + 41, applied + 80);
    assert_matches_model(&s);
    let after = Seen::of(&s);
    drop(s);
    let log2 = read_log(dir.path());
    assert_eq!(log2.ckpt_slot, log.ckpt_slot, "no checkpoint was recorded");
    log2.assert_decided_from(log.ckpt_slot + 1);
    assert_eq!(
        std::fs::read(ckpt_path(dir.path())).unwrap(),
        file,
        "no checkpoint was written"
    );

    let s = Store::open(&path, opts(50)).unwrap();
    Seen::of(&s).assert_same(&after, "reopened with checkpoints");
    drop(s);
    std::fs::write(ckpt_path(dir.path()), &mid).unwrap();
    let s = Store::open(&path, opts(u64::MAX)).unwrap();
    Seen::of(&s).assert_same(&after, "reopened from a newer checkpoint file");
    // And it goes on from there.
    commit_slots(&s, applied + 81, applied + 90);
    assert_matches_model(&s);
    eprintln!("took {:?}", t0.elapsed());
}

#[test]
fn a_long_log_behind_a_new_checkpoint_is_dropped_over_several_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    // 1,500 slots with no checkpoint, then a checkpoint of slot 1,500 written and recorded
    // the way a commit records one (the file, then its slot and revision in the state
    // table) with the whole log still behind it.
    let s = Store::open(&path, opts(u64::MAX)).unwrap();
    commit_slots(&s, 1, 1_500);
    let mut ckpt = Vec::new();
    let meta = s.export_snapshot(&mut ckpt).unwrap();
    drop(s);
    std::fs::write(ckpt_path(dir.path()), &ckpt).unwrap();
    record_checkpoint(dir.path(), meta.slot, meta.rev);
    let log = read_log(dir.path());
    assert_eq!((log.first(), log.ckpt_slot), (1, 1_500));
    assert_eq!(log.gens, (0..=1_500 / GEN).collect::<Vec<_>>());
    let mut next = 1_501;
    // Without new checkpoints the cut stays at the recorded one, and each commit drops the
    // next 256 slots of the log behind it in whole tables, however many are left (one
    // commit dropping thousands of slots stalled a node under load), until the log starts
    // in the table of the slot after the cut.
    let per_commit = 256 / GEN;
    let mut first = log.gens[0];
    loop {
        let s = Store::open(&path, opts(u64::MAX)).unwrap();
        commit_slots(&s, next, next);
        next += 1;
        drop(s);
        let cut = log.ckpt_slot.min(next - 1 - RETAIN);
        let now = read_log(dir.path());
        assert_eq!(now.ckpt_slot, log.ckpt_slot);
        let droppable = ((cut + 1) / GEN).saturating_sub(first);
        assert_eq!(
            now.gens[0],
            first + droppable.min(per_commit),
            "one commit from table {first}, cut {cut}"
        );
        first = now.gens[0];
        if droppable <= per_commit {
            now.assert_trimmed_to(cut);
            now.assert_decided_from(cut + 1);
            break;
        }
    }
    // Reopened, the store is the one it left.
    let s = Store::open(&path, opts(u64::MAX)).unwrap();
    assert_eq!(s.applied_slot(), next - 1);
    assert_matches_model(&s);
}

/// Rewrites a closed format-5 store file the way format 4 laid it out: one `slot_meta` and
/// one `slot_values` table, no `log_gen` row.
fn downgrade_to_format_4(dir: &Path) {
    use redb::{ReadableTable, TableDefinition, TableHandle};
    let db = redb::Database::create(store_path(dir)).unwrap();
    let txn = db.begin_write().unwrap();
    let names: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    {
        let mut meta = txn
            .open_table(TableDefinition::<u64, &[u8]>::new("slot_meta"))
            .unwrap();
        let mut values = txn
            .open_table(TableDefinition::<(u64, u32), &[u8]>::new("slot_values"))
            .unwrap();
        for n in &names {
            if n.starts_with("slot_meta.") {
                let def = TableDefinition::<u64, &[u8]>::new(n);
                for item in txn.open_table(def).unwrap().iter().unwrap() {
                    let (k, v) = item.unwrap();
                    meta.insert(k.value(), v.value()).unwrap();
                }
                txn.delete_table(def).unwrap();
            } else if n.starts_with("slot_values.") {
                let def = TableDefinition::<(u64, u32), &[u8]>::new(n);
                for item in txn.open_table(def).unwrap().iter().unwrap() {
                    let (k, v) = item.unwrap();
                    values.insert(k.value(), v.value()).unwrap();
                }
                txn.delete_table(def).unwrap();
            }
        }
        let mut st = txn
            .open_table(TableDefinition::<&str, &[u8]>::new("state"))
            .unwrap();
        st.insert("format", 4u64.to_be_bytes().as_slice()).unwrap();
        st.remove("log_gen").unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_format_4_file_is_converted_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let s = Store::open(&path, opts(50)).unwrap();
    let next = commit_until_checkpoints(&s, dir.path(), 1, 2);
    let applied = next + 60;
    commit_slots(&s, next, applied);
    // An accept above the applied slot, which the engine must get back.
    s.commit(Batch {
        records: vec![Record::Accept {
            slot: applied + 1,
            ballot: ballot(applied),
            value: value_for(applied + 1),
        }],
        decided: vec![],
    })
    .unwrap();
    let before = Seen::of(&s);
    let engine = s.load_engine_state(3).unwrap();
    drop(s);
    let log = read_log(dir.path());
    downgrade_to_format_4(dir.path());
    let old = read_log(dir.path());
    assert!(old.gens.is_empty() && old.format == 4, "{old:?}");

    // Opened by this build: the same state and acceptor records, the log in tables again.
    let s = Store::open(&path, opts(50)).unwrap();
    Seen::of(&s).assert_same(&before, "converted");
    let again = s.load_engine_state(3).unwrap();
    assert_eq!(again.accepted, engine.accepted);
    assert_eq!(again.decided_tail, engine.decided_tail);
    assert_eq!(again.promised, engine.promised);
    drop(s);
    let now = read_log(dir.path());
    assert_eq!(
        (now.format, &now.slots, &now.gens),
        (5, &log.slots, &log.gens)
    );
    // And it goes on: commits, checkpoints, tables dropped, reopened.
    let s = Store::open(&path, opts(50)).unwrap();
    let next = commit_until_checkpoints(&s, dir.path(), applied + 1, 2);
    commit_slots(&s, next, next + 40);
    assert_matches_model(&s);
    let after = Seen::of(&s);
    drop(s);
    let log = read_log(dir.path());
    log.assert_trimmed_to(log.ckpt_slot.min(log.applied - RETAIN));
    let s = Store::open(&path, opts(50)).unwrap();
    Seen::of(&s).assert_same(&after, "reopened after the conversion");
    drop(s);
    // A format-5 file that lost its table size is refused, not read with a guessed one.
    {
        use redb::TableDefinition;
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, &[u8]>::new("state"))
            .unwrap()
            .remove("log_gen")
            .unwrap();
        txn.commit().unwrap();
    }
    let err = open_err(&path);
    assert!(
        matches!(&err, StoreError::Corrupt(why) if why.contains("log_gen")),
        "{err:?}"
    );
}

#[test]
fn open_completes_an_interrupted_snapshot_install() {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    // A at slot 200; its snapshot S.
    let a = Store::open(&store_path(da.path()), opts(50)).unwrap();
    commit_slots(&a, 1, 200);
    let mut snap = Vec::new();
    let meta = a.export_snapshot(&mut snap).unwrap();
    assert_eq!(meta.slot, 200);
    let seen_a = Seen::of(&a);

    // B lags with a recorded checkpoint of its own, a promise and accepts up to slot 205.
    let b = Store::open(&store_path(db.path()), opts(50)).unwrap();
    let next = commit_until_checkpoints(&b, db.path(), 1, 2);
    assert!(next < 150, "B is at slot {next}");
    let promise = Ballot {
        round: 1_000_000,
        node: NodeId(9),
    };
    b.commit(Batch {
        records: std::iter::once(Record::Promise(promise))
            .chain((next..=205).map(|slot| Record::Accept {
                slot,
                ballot: promise,
                value: value_for(slot),
            }))
            .collect(),
        decided: vec![],
    })
    .unwrap();
    drop(b);
    assert!(read_log(db.path()).ckpt_slot > 0);

    // B's install of S renamed its checkpoint and crashed before its commit: S's checkpoint
    // (as an install writes it, here by C) is in place, B's records are the old ones.
    let c = Store::open(&store_path(dc.path()), opts(50)).unwrap();
    assert_eq!(c.install_snapshot(&mut snap.as_slice()).unwrap(), meta);
    drop(c);
    std::fs::copy(ckpt_path(dc.path()), ckpt_path(db.path())).unwrap();

    let b = Store::open(&store_path(db.path()), opts(50)).unwrap();
    assert_eq!((b.rev(), b.applied_slot()), (meta.rev, 200));
    Seen::of(&b).assert_same(&seen_a, "adopted");
    let st = b.load_engine_state(3).unwrap();
    assert_eq!(st.applied, 200);
    assert_eq!(st.promised, promise);
    assert_eq!(
        st.accepted.keys().copied().collect::<Vec<_>>(),
        (201..=205).collect::<Vec<_>>(),
        "the accepts above the snapshot are kept"
    );
    assert_eq!(st.accepted[&203], (promise, value_for(203)));
    assert!(st.decided_tail.is_empty());
    // Further commits apply on top, as on A.
    commit_slots(&b, 201, 230);
    commit_slots(&a, 201, 230);
    assert_matches_model(&b);
    let seen_a = Seen::of(&a);
    Seen::of(&b).assert_same(&seen_a, "after commits");
    drop(b);
    let log = read_log(db.path());
    assert!(log.ckpt_slot >= 200, "{log:?}");
    // B's own log below S is gone; after S, the log is trimmed as usual.
    let cut = log.ckpt_slot.min(log.applied - RETAIN).max(200);
    log.assert_trimmed_to(cut);
    assert!(log.first() > 200, "{log:?}");
    log.assert_decided_from(cut + 1);
    // And a reopen keeps it.
    let b = Store::open(&store_path(db.path()), opts(50)).unwrap();
    Seen::of(&b).assert_same(&seen_a, "reopened");
    commit_slots(&b, 231, 235);
    assert_matches_model(&b);
}

#[test]
fn a_checkpoint_that_cannot_be_written_keeps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let s = Store::open(&path, opts(50)).unwrap();
    let next = commit_until_checkpoints(&s, dir.path(), 1, 2);
    // No new file, no rename in the directory: checkpoints fail, the redb file is writable.
    let Some(flag) = Immutable::set(dir.path()) else {
        eprintln!(
            "skipped: cannot make {} immutable here",
            dir.path().display()
        );
        return;
    };
    // Nothing can replace the checkpoint from here on.
    let good = std::fs::read(ckpt_path(dir.path())).unwrap();
    let good_slot = stream_meta(&good).slot;
    let applied = next + 299;
    commit_slots(&s, next, applied);
    assert_eq!(s.applied_slot(), applied);
    assert_matches_model(&s);
    let before = Seen::of(&s);
    drop(s);
    // A checkpoint that created its file before the flag was set cannot remove it.
    let names = file_names(dir.path());
    assert!(
        names[..2] == ["doozer.redb", "doozer.redb.ckpt"]
            && names[2..]
                .iter()
                .all(|n| n.starts_with("doozer.redb.ckpt.tmp.")),
        "{names:?}"
    );
    assert!(std::fs::read(ckpt_path(dir.path())).unwrap() == good);
    let log = read_log(dir.path());
    assert_eq!(log.applied, applied);
    assert!(log.ckpt_slot <= good_slot, "{log:?} good {good_slot}");
    assert!(log.first() <= good_slot + 1, "{log:?} good {good_slot}");
    log.assert_decided_from(good_slot + 1);
    drop(flag);

    let s = Store::open(&path, opts(50)).unwrap();
    assert_eq!(file_names(dir.path()), ["doozer.redb", "doozer.redb.ckpt"]);
    Seen::of(&s).assert_same(&before, "reopened");
    // Checkpoints resume.
    let next = commit_until_checkpoints(&s, dir.path(), applied + 1, 2);
    drop(s);
    assert!(read_log(dir.path()).ckpt_slot > good_slot);
    let s = Store::open(&path, opts(50)).unwrap();
    assert_eq!(s.applied_slot(), next - 1);
    assert_matches_model(&s);
}

/// The names in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn open_err(path: &Path) -> StoreError {
    match Store::open(path, opts(50)) {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    }
}

#[test]
fn a_damaged_or_missing_checkpoint_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let ckpt = ckpt_path(dir.path());
    let s = Store::open(&path, opts(50)).unwrap();
    let next = commit_until_checkpoints(&s, dir.path(), 1, 1);
    let old = std::fs::read(&ckpt).unwrap();
    let old_slot = stream_meta(&old).slot;
    let next = commit_until_checkpoints(&s, dir.path(), next, 2);
    commit_slots(&s, next, next + 10);
    let before = Seen::of(&s);
    drop(s);
    let log = read_log(dir.path());
    assert!(log.ckpt_slot > old_slot, "{log:?} old {old_slot}");
    assert!(log.first() > old_slot + 1, "{log:?} old {old_slot}");
    let good = std::fs::read(&ckpt).unwrap();

    let corrupt = |e: StoreError, what: &str, says: &str| match e {
        StoreError::Corrupt(m) => assert!(m.contains(says), "{what}: {m}"),
        e => panic!("{what}: {e:?}"),
    };
    let mut tries: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("truncated".into(), good[..good.len() / 2].to_vec()),
        ("one byte short".into(), good[..good.len() - 1].to_vec()),
    ];
    for i in (0..good.len())
        .step_by(good.len() / 25)
        .chain([good.len() - 1])
    {
        let mut bad = good.clone();
        bad[i] ^= 0x10;
        tries.push((format!("byte {i} of {} flipped", good.len()), bad));
    }
    for (what, bad) in &tries {
        std::fs::write(&ckpt, bad).unwrap();
        corrupt(open_err(&path), what, "checkpoint");
    }
    // Missing while the store recorded one.
    std::fs::remove_file(&ckpt).unwrap();
    corrupt(open_err(&path), "missing", "missing");
    // An older checkpoint than the recorded one: the log it needs is gone.
    std::fs::write(&ckpt, &old).unwrap();
    corrupt(open_err(&path), "older checkpoint", "missing");
    // None of this changed anything. A temporary file a crashed checkpoint left is removed.
    std::fs::write(&ckpt, &good).unwrap();
    std::fs::write(dir.path().join("doozer.redb.ckpt.tmp.1.2"), &good[..100]).unwrap();
    let s = Store::open(&path, opts(50)).unwrap();
    Seen::of(&s).assert_same(&before, "the good checkpoint back");
    assert_eq!(file_names(dir.path()), ["doozer.redb", "doozer.redb.ckpt"]);
}

/// A store file name that is not UTF-8 has no checkpoint name of its own (converted lossily,
/// two names could share one): it is refused before anything is created.
#[cfg(unix)]
#[test]
fn a_store_file_name_that_is_not_utf8_is_refused() {
    use std::io::ErrorKind::InvalidInput;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"st\xffore.redb"));
    match open_err(&path) {
        StoreError::Io(e) => {
            assert_eq!(e.kind(), InvalidInput, "{e}");
            assert!(e.to_string().contains("UTF-8"), "{e}");
        }
        e => panic!("{e:?}"),
    }
    let names = file_names(dir.path());
    assert!(names.is_empty(), "{names:?}");
    // A path without a file name is refused the same way.
    let e = open_err(&dir.path().join(".."));
    assert!(
        matches!(&e, StoreError::Io(io) if io.kind() == InvalidInput),
        "{e:?}"
    );
}

/// The state of `/p/...` files over revisions, built from the ops as they are chosen.
#[derive(Default)]
struct Hist {
    /// path -> (rev, body or deleted), increasing revs.
    paths: BTreeMap<String, Vec<(i64, Option<Bytes>)>>,
    /// rev -> (path, flags) of its event; index 0 unused.
    events: Vec<(String, i32)>,
    /// slot -> revision after it.
    rev_at: Vec<i64>,
}

impl Hist {
    fn at(&self, path: &str, rev: i64) -> (Bytes, i64) {
        let changes = &self.paths[path];
        let i = changes.partition_point(|(r, _)| *r <= rev);
        match i.checked_sub(1).map(|i| &changes[i]) {
            Some((r, Some(v))) => (v.clone(), *r),
            _ => (Bytes::new(), 0),
        }
    }

    fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            let rev = self.events.len() as i64;
            let (p, change, flags) = match op {
                Op::Set { path, value, .. } => (path.clone(), Some(value.clone()), FLAG_SET),
                Op::Del { path, .. } => (path.clone(), None, FLAG_DEL),
                Op::Nop => ("/".to_string(), None, 0),
            };
            if flags != 0 {
                self.paths.entry(p.clone()).or_default().push((rev, change));
            }
            self.events.push((p, flags));
        }
        self.rev_at.push(self.events.len() as i64 - 1);
    }
}

fn p_path(k: u64) -> String {
    format!("/p/{}/{k}", k % 40)
}

/// Big enough that every part of an export spans several chunks (2048 items per lock).
const P_FILES: u64 = 2600;
const HIST: u64 = 3000;

fn p_ops(slot: u64) -> Vec<Op> {
    if slot <= 5 {
        let n = P_FILES / 5;
        return ((slot - 1) * n..slot * n)
            .map(|k| set(&p_path(k), -1, &format!("init {k}")))
            .collect();
    }
    (0..20u64)
        .map(|j| {
            let k = (slot * 131 + j * 977) % P_FILES;
            match (slot + j) % 7 {
                0 => del(&p_path(k), -1),
                1 => Op::Nop,
                _ => set(&p_path(k), -1, &format!("{slot}.{j}")),
            }
        })
        .collect()
}

/// Collects a stream, pausing after every 16 KiB.
struct Slow {
    buf: Vec<u8>,
    mark: usize,
}

impl std::io::Write for Slow {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() - self.mark >= 16 << 10 {
            self.mark = self.buf.len();
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn exports_during_commits_are_the_state_at_their_revision() {
    const SLOTS: u64 = 400;
    let mut hist = Hist {
        events: vec![(String::new(), 0)],
        rev_at: vec![0],
        ..Hist::default()
    };
    for slot in 1..=SLOTS {
        hist.apply(&p_ops(slot));
    }
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(
        &store_path(dir.path()),
        StoreOptions {
            // History (with over 2048 undo records) trimmed while exports read through it.
            hist_revs: HIST,
            retain_slots: RETAIN,
            // Checkpoints (exports too) now and then.
            checkpoint_revs: 400,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let writer = {
        let s = src.clone();
        std::thread::spawn(move || {
            for slot in 1..=SLOTS {
                let cmds = p_ops(slot)
                    .iter()
                    .enumerate()
                    .map(|(j, op)| command(5, slot * 10_000 + j as u64, op))
                    .collect();
                s.commit(Batch {
                    records: vec![],
                    decided: vec![(slot, Value::Batch(cmds))],
                })
                .unwrap();
            }
        })
    };
    let all = Glob::new("/**").unwrap();
    let mut checked = Vec::new();
    loop {
        let done = writer.is_finished();
        // A slow reader (a peer on a slow link): commits and trims happen during the export.
        let mut out = Slow {
            buf: Vec::new(),
            mark: 0,
        };
        let meta = src.export_snapshot(&mut out).unwrap();
        let buf = out.buf;
        let d = tempfile::tempdir().unwrap();
        let dst = Store::open(&store_path(d.path()), opts(u64::MAX)).unwrap();
        assert_eq!(dst.install_snapshot(&mut buf.as_slice()).unwrap(), meta);
        let rev = meta.rev;
        assert_eq!(rev, hist.rev_at[meta.slot as usize], "slot {}", meta.slot);
        // The files at its revision, and nothing else.
        let mut files = 0;
        for p in hist.paths.keys() {
            let want = hist.at(p, rev);
            files += (want.1 != 0) as u64;
            assert_eq!(dst.get(p, None).unwrap(), want, "{p} at {rev}");
        }
        assert_eq!(meta.files, files, "at {rev}");
        let dirs: u64 = (0..40)
            .map(|i| dst.stat(&format!("/p/{i}"), None).unwrap())
            .map(|(r, n)| if r == -2 { n as u64 } else { 0 })
            .sum();
        assert_eq!(dirs, files, "at {rev}");
        // Its history: the events and past states of some revisions down to its floor.
        let oldest = dst.oldest_rev();
        // At least `hist_revs` of it (more while a pin held trimming back).
        assert!(
            rev - oldest >= rev.min(HIST as i64),
            "history of {rev} from {oldest}"
        );
        let step = ((rev - oldest) / 12).max(1) as usize;
        for r in (oldest..=rev).step_by(step).chain([rev]) {
            if r > oldest {
                let ev = dst.wait(&all, r).unwrap().expect("an event");
                let (p, flags) = &hist.events[r as usize];
                assert_eq!((ev.rev, &ev.path, ev.flags), (r, p, *flags), "event {r}");
            }
            for (p, _) in hist.events[(r.max(1) as usize)..].iter().take(20) {
                if p != "/" {
                    assert_eq!(dst.get(p, Some(r)).unwrap(), hist.at(p, r), "{p} at {r}");
                }
            }
        }
        assert_eq!(dst.wait(&all, rev + 1).unwrap(), None);
        checked.push(meta.slot);
        if done {
            break;
        }
    }
    writer.join().unwrap();
    eprintln!("exports checked at slots {checked:?}");
    assert_eq!(checked.last(), Some(&SLOTS));
    assert!(checked.len() >= 3, "{checked:?}");
}

/// A command sent again after more than [`DEDUP_WINDOW_REVS`] revisions is applied again;
/// a restart that replays both slots must do the same, or it reaches another revision.
#[test]
fn a_resend_beyond_the_dedup_window_replays_as_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let s = Store::open(&path, opts(u64::MAX)).unwrap();
    let first = Command {
        id: CommandId {
            node: NodeId(3),
            seq: 1,
        },
        data: encode_op(&set("/x", -1, "once")),
    };
    let commit = |slot: Slot, cmds: Vec<Command>| {
        s.commit(Batch {
            records: vec![],
            decided: vec![(slot, Value::Batch(cmds))],
        })
        .unwrap()
    };
    commit(1, vec![first.clone()]);
    let nops = |slot: u64| -> Vec<Command> {
        (0..1_000)
            .map(|j| Command {
                id: CommandId {
                    node: NodeId(4),
                    seq: slot * 1_000 + j,
                },
                data: encode_op(&Op::Nop),
            })
            .collect()
    };
    let mut slot = 2;
    while s.rev() <= DEDUP_WINDOW_REVS + 1 {
        commit(slot, nops(slot));
        slot += 1;
    }
    // Outside the window: applied again, at a new revision.
    let rev = s.rev();
    let again = commit(slot, vec![first]);
    assert_eq!(again.rev, rev + 1);
    assert_eq!(s.get("/x", None).unwrap().1, rev + 1);
    drop(s);
    let s = Store::open(&path, opts(u64::MAX)).expect("reopen replays every slot");
    assert_eq!((s.rev(), s.applied_slot()), (rev + 1, slot));
    assert_eq!(s.get("/x", None).unwrap().1, rev + 1);
}

/// An installed snapshot's checkpoint is never replaced by a background checkpoint of the
/// state before it, which may still be running when the install renames its file.
#[test]
fn an_install_during_a_background_checkpoint_keeps_its_checkpoint() {
    let (da, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open(&store_path(da.path()), opts(50)).unwrap();
    commit_slots(&a, 1, 100);
    let mut snap = Vec::new();
    let meta = a.export_snapshot(&mut snap).unwrap();
    let seen_a = Seen::of(&a);
    for round in 0..4u64 {
        let path = store_path(dir.path());
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(ckpt_path(dir.path()));
        let b = Store::open(&path, opts(50)).unwrap();
        // Enough files that writing their checkpoint takes a while; the commit that brings
        // them starts one.
        let bulk = |slot: u64| {
            let cmds = (0..15_000u64)
                .map(|k| Command {
                    id: CommandId {
                        node: NodeId(8),
                        seq: slot * 100_000 + k,
                    },
                    data: encode_op(&set(&format!("/bulk/{}/{k}", k % 50), -1, "body")),
                })
                .collect();
            b.commit(Batch {
                records: vec![],
                decided: vec![(slot, Value::Batch(cmds))],
            })
            .unwrap();
        };
        bulk(1);
        if round % 2 == 1 {
            // Let it get further first.
            std::thread::sleep(Duration::from_millis(5 * round));
        }
        assert_eq!(b.install_snapshot(&mut snap.as_slice()).unwrap(), meta);
        drop(b);
        let file = std::fs::read(ckpt_path(dir.path())).unwrap();
        assert_eq!(stream_meta(&file), meta, "round {round}");
        let b = Store::open(&path, opts(50)).unwrap();
        Seen::of(&b).assert_same(&seen_a, &format!("round {round}"));
    }
}

const INSTALL_CHILD: &str = "DOOZER_STORE_INSTALL_CRASH_CHILD";

/// The child of `sigkill_during_installs_loses_nothing`: advances a source store (`src.redb`)
/// and installs its snapshots into the store under test, now and then committing slots to it
/// directly; prints `installed <slot>` / `done <slot>` once each returned.
fn install_child(dir: &Path) {
    use std::io::Write;
    let src = Store::open(&dir.join("src.redb"), opts(50)).expect("child open src");
    let dst = Store::open(&store_path(dir), opts(50)).expect("child open dst");
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        // One commit: most of the time goes to installs.
        let target = src.applied_slot().max(dst.applied_slot()) + 3;
        src.commit(Batch {
            records: vec![],
            decided: (src.applied_slot() + 1..=target)
                .map(|s| (s, value_for(s)))
                .collect(),
        })
        .unwrap();
        if i % 8 == 7 {
            let last = dst.applied_slot() + 3;
            commit_slots(&dst, dst.applied_slot() + 1, last);
            writeln!(out, "done {last}").unwrap();
        } else {
            let mut buf = Vec::new();
            src.export_snapshot(&mut buf).unwrap();
            let meta = dst.install_snapshot(&mut buf.as_slice()).unwrap();
            writeln!(out, "installed {}", meta.slot).unwrap();
        }
        out.flush().unwrap();
    }
}

/// Entry point of the child process; does nothing in a normal test run.
#[test]
fn install_crash_child_entry() {
    if let Some(dir) = std::env::var_os(INSTALL_CHILD) {
        install_child(Path::new(&dir));
    }
}

struct Kid(std::process::Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGKILLs a process that installs snapshots at random moments (some land between an
/// install's checkpoint rename and its commit); every reopen must find the last reported
/// state or a later one, complete an interrupted install, and match the replay model.
/// `CRASH_RUNS` sets the number of kills (default 20; about one in ten lands in that window),
/// `SEED` the kill times.
#[test]
fn sigkill_during_installs_loses_nothing() {
    use rand::{Rng, SeedableRng};
    use std::io::BufRead;
    let runs: u32 = common::env_or("CRASH_RUNS", 20);
    let seed: u64 = common::env_or("SEED", 0x1257);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, mut adopted) = (0, 0);
    for run in 0..runs {
        let mut kid = Kid(Proc::new(std::env::current_exe().unwrap())
            .args([
                "install_crash_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INSTALL_CHILD, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child"));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = kid.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let slot = line
                    .strip_prefix("done ")
                    .or_else(|| line.strip_prefix("installed "))
                    .and_then(|n| n.parse::<u64>().ok());
                if let Some(s) = slot {
                    if tx.send(s).is_err() {
                        break;
                    }
                }
            }
        });
        let mut reported = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child reported nothing");
        let kill_at = Instant::now() + Duration::from_micros(rng.gen_range(0..100_000));
        while let Some(left) = kill_at.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(s) => reported = reported.max(s),
                Err(_) => break,
            }
        }
        kid.0.kill().unwrap();
        kid.0.wait().unwrap();
        reported = rx.iter().fold(reported, u64::max);

        // An install that renamed its checkpoint and was killed before its commit?
        let log = read_log(dir.path());
        let file_slot = std::fs::read(ckpt_path(dir.path()))
            .ok()
            .map(|f| stream_meta(&f).slot);
        let interrupted = file_slot.is_some_and(|f| f > log.applied);
        let s = Store::open(&store_path(dir.path()), opts(50))
            .unwrap_or_else(|e| panic!("run {run}: reopen: {e:?}"));
        let now = s.applied_slot();
        assert!(now >= reported, "run {run}: reported {reported}, has {now}");
        assert!(
            now >= applied,
            "run {run}: went back from {applied} to {now}"
        );
        assert_matches_model(&s);
        assert_eq!(s.load_engine_state(3).unwrap().applied, now);
        if interrupted {
            // Completed, for good.
            adopted += 1;
            assert_eq!(Some(now), file_slot, "run {run}");
            let seen = Seen::of(&s);
            drop(s);
            let s = Store::open(&store_path(dir.path()), opts(50)).unwrap();
            Seen::of(&s).assert_same(&seen, &format!("run {run}: reopened again"));
        }
        let src = Store::open(&dir.path().join("src.redb"), opts(50)).unwrap();
        assert_matches_model(&src);
        applied = now;
    }
    eprintln!("{runs} kills, slot {applied}, {adopted} interrupted installs completed");
    assert!(applied > 0);
}

/// Installs snapshots of `files` files at slots `1..=snapshots` (all at the same revision,
/// with other bodies: an export that read some of one and some of the next would not notice
/// by revisions) into a store that a thread exports in a loop (through a slow reader when
/// `slow`). Every export must be, byte for byte, the stream of the snapshot at its slot, or
/// [`StoreError::Replaced`]. Returns the number of whole exports per slot and of replaced
/// ones.
fn exports_during_installs(
    snapshots: u64,
    files: u64,
    slow: bool,
) -> (BTreeMap<Slot, usize>, usize) {
    let db = tempfile::tempdir().unwrap();
    let b = Store::open(&store_path(db.path()), opts(u64::MAX)).unwrap();
    let mut empty = Vec::new();
    b.export_snapshot(&mut empty).unwrap();
    let mut streams: BTreeMap<Slot, Vec<u8>> = BTreeMap::from([(0, empty)]);
    for k in 1..=snapshots {
        let da = tempfile::tempdir().unwrap();
        let a = Store::open(&store_path(da.path()), opts(u64::MAX)).unwrap();
        let cmds = (0..files)
            .map(|i| Command {
                id: CommandId {
                    node: NodeId(6),
                    seq: i,
                },
                data: encode_op(&set(&p_path(i), -1, &format!("{k}"))),
            })
            .collect();
        let mut decided: Vec<(Slot, Value)> = (1..k).map(|s| (s, Value::Noop)).collect();
        decided.push((k, Value::Batch(cmds)));
        a.commit(Batch {
            records: vec![],
            decided,
        })
        .unwrap();
        let mut s = Vec::new();
        a.export_snapshot(&mut s).unwrap();
        streams.insert(k, s);
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let exporter = scope.spawn(|| {
            let (mut ok, mut replaced) = (BTreeMap::<Slot, usize>::new(), 0);
            // Until the installs are over and the last state was exported whole.
            loop {
                let last = stop.load(std::sync::atomic::Ordering::Relaxed);
                let mut out = Slow {
                    buf: Vec::new(),
                    mark: 0,
                };
                let r = if slow {
                    b.export_snapshot(&mut out)
                } else {
                    b.export_snapshot(&mut out.buf)
                };
                match r {
                    Ok(meta) => {
                        assert!(
                            out.buf == streams[&meta.slot],
                            "the export at slot {} (rev {}) is not the state there",
                            meta.slot,
                            meta.rev
                        );
                        *ok.entry(meta.slot).or_default() += 1;
                    }
                    Err(StoreError::Replaced) => replaced += 1,
                    Err(e) => panic!("export: {e:?}"),
                }
                if last {
                    break;
                }
            }
            (ok, replaced)
        });
        for (k, s) in streams.iter().skip(1) {
            assert_eq!(b.install_snapshot(&mut s.as_slice()).unwrap().slot, *k);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, replaced) = exporter.join().unwrap();
        assert!(ok.contains_key(&snapshots), "{ok:?}");
        (ok, replaced)
    })
}

/// Exports that run while snapshots are installed are one whole state or
/// [`StoreError::Replaced`], never a mix and never mislabelled.
#[test]
fn exports_during_installs_are_one_state_or_replaced() {
    // Long exports of big states: most are replaced.
    let (ok, replaced) = exports_during_installs(8, 3_000, true);
    eprintln!("slow: whole exports per slot {ok:?}, {replaced} replaced");
    assert!(replaced > 0);
    // Many installs of small states, exported as fast as possible.
    let (ok, replaced) = exports_during_installs(150, 20, false);
    eprintln!(
        "fast: whole exports per slot {:?}, {replaced} replaced",
        ok.len()
    );
}

/// A read of the current state never fails while snapshots are installed.
#[test]
fn current_reads_during_installs_never_fail() {
    let opts = StoreOptions {
        hist_revs: 3,
        ..opts(u64::MAX)
    };
    // Snapshot k is at revision 10k + 2000, with history back to 3 revisions before; the
    // files make swapping states take a while, so that readers queue up meanwhile.
    let da = tempfile::tempdir().unwrap();
    let a = Store::open(&store_path(da.path()), opts.clone()).unwrap();
    let mut d = common::Driver::new(a.clone());
    d.slot(
        &(0..2_000)
            .map(|i| set(&p_path(i), -1, ""))
            .collect::<Vec<_>>(),
    );
    let streams: Vec<Vec<u8>> = (2..=150u64)
        .map(|k| {
            let cmds = (0..10)
                .map(|i| Command {
                    id: CommandId {
                        node: NodeId(6),
                        seq: k * 10 + i,
                    },
                    data: encode_op(&set("/x", -1, &k.to_string())),
                })
                .collect();
            a.commit(Batch {
                records: vec![],
                decided: vec![(k, Value::Batch(cmds))],
            })
            .unwrap();
            let mut s = Vec::new();
            a.export_snapshot(&mut s).unwrap();
            s
        })
        .collect();
    let db = tempfile::tempdir().unwrap();
    let b = Store::open(&store_path(db.path()), opts).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (body, rev) = b.get("/x", None).expect("GET of the current state");
                if rev > 0 {
                    assert_eq!(body, ((rev - 2_000) / 10 + 1).to_string(), "rev {rev}");
                }
            }
        });
        for s in &streams {
            b.install_snapshot(&mut s.as_slice()).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap();
    });
}

#[test]
fn replicas_given_different_phases_checkpoint_at_different_revisions() {
    // Three replicas applying the same slots, at phases 0, 1 and 2 of 3.
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<common::Driver> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let opts = StoreOptions {
                hist_revs: 10,
                checkpoint_revs: 300,
                ..StoreOptions::default()
            };
            let s = Store::open(&store_path(d.path()), opts).unwrap();
            s.set_checkpoint_phase(i as u64, 3);
            common::Driver::new(s)
        })
        .collect();
    let mut starts: Vec<Vec<i64>> = vec![Vec::new(); 3];
    for k in 0..1_000u64 {
        let op = set(&format!("/k/{}", k % 5), -1, "v");
        for (n, d) in nodes.iter_mut().enumerate() {
            d.one(op.clone());
            let started = d.store.checkpoint_started_rev();
            if started > *starts[n].last().unwrap_or(&0) {
                starts[n].push(started);
            }
        }
    }
    // Every 300 revisions each, a third of an interval apart: 300, 600, 900 for phase 0;
    // 100 earlier for phase 1, 200 earlier for phase 2 (but not before 150).
    assert_eq!(starts[0], [300, 600, 900]);
    assert_eq!(starts[1], [200, 500, 800]);
    assert_eq!(starts[2], [150, 400, 700, 1000]);
    for d in nodes {
        assert_eq!(d.store.rev(), 1_000);
    }
}

#[test]
fn a_checkpoint_of_several_mib_is_written_back_and_loads() {
    // 25 files of 100 KB: a checkpoint of over 2 MiB, written back a step (1 MiB) at a time
    // before its fsync, then loaded by a reopen (which replays the slots after it).
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let opts = || StoreOptions {
        hist_revs: 10,
        checkpoint_revs: 30,
        ..StoreOptions::default()
    };
    let mut d = common::Driver::new(Store::open(&path, opts()).unwrap());
    let value = |k: u64| format!("{k:>8}").repeat(100_000 / 8);
    let mut k = 0;
    let mut set_next = |d: &mut common::Driver| {
        d.one(set(&format!("/big/{}", k % 25), -1, &value(k)));
        k += 1;
    };
    let t = Instant::now();
    while std::fs::metadata(ckpt_path(dir.path())).map_or(0, |m| m.len()) < 2 << 20 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no checkpoint of 2 MiB"
        );
        set_next(&mut d);
    }
    for _ in 0..10 {
        set_next(&mut d);
    }
    let rev = d.store.rev();
    let want: Vec<_> = (0..25)
        .map(|i| d.store.get(&format!("/big/{i}"), None).unwrap())
        .collect();
    drop(d);
    let s = Store::open(&path, opts()).unwrap();
    assert_eq!(s.rev(), rev);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&s.get(&format!("/big/{i}"), None).unwrap(), w, "/big/{i}");
    }
}
