//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use doozer_paxos::{Ballot, Command, CommandId, NodeId, Record, Slot, Value};
use doozer_proto::Glob;
use doozer_store::codec::encode_op;
use doozer_store::{Batch, Commit, Op, Store, StoreOptions};

pub fn open(dir: &Path, hist_revs: u64) -> Store {
    Store::open(
        &dir.join("doozer.redb"),
        StoreOptions {
            hist_revs,
            ..StoreOptions::default()
        },
    )
    .expect("open store")
}

pub fn cmd(seq: u64, op: &Op) -> Command {
    command(1, seq, op)
}

/// The command `seq` of node `node` carrying `op`.
pub fn command(node: u128, seq: u64, op: &Op) -> Command {
    Command {
        id: CommandId {
            node: NodeId(node),
            seq,
        },
        data: encode_op(op),
    }
}

pub fn set(path: &str, rev: i64, value: &str) -> Op {
    Op::Set {
        path: path.into(),
        rev,
        value: value.as_bytes().to_vec().into(),
    }
}

pub fn del(path: &str, rev: i64) -> Op {
    Op::Del {
        path: path.into(),
        rev,
    }
}

/// Applies `ops` as one slot after the store's applied one, with fresh command ids.
pub struct Driver {
    pub store: Store,
    pub seq: u64,
}

impl Driver {
    pub fn new(store: Store) -> Driver {
        Driver { store, seq: 1_000 }
    }

    pub fn slot(&mut self, ops: &[Op]) -> Commit {
        let cmds = ops
            .iter()
            .map(|op| {
                self.seq += 1;
                cmd(self.seq, op)
            })
            .collect();
        let slot: Slot = self.store.applied_slot() + 1;
        self.store
            .commit(Batch {
                records: vec![],
                decided: vec![(slot, Value::Batch(cmds))],
            })
            .expect("commit")
    }

    pub fn one(&mut self, op: Op) -> doozer_store::ApplyResult {
        self.slot(&[op]).results[0].1
    }
}

/// Clears the immutable flag of a file or directory when dropped, so that the test's
/// directory can go.
pub struct Immutable<'a>(&'a Path);

impl Immutable<'_> {
    /// Sets the flag with `chattr +i`; `None` where that is not possible (no tool, no
    /// CAP_LINUX_IMMUTABLE, a file system without the flag).
    pub fn set(path: &Path) -> Option<Immutable<'_>> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Immutable(path))
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(self.0)
            .status();
    }
}

/// The environment variable `name` parsed, or `default` when unset or unparsable
/// (`CRASH_RUNS`, `SEED` ...).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// The log a crash test writes: slot `s` decides `value_for(s)`, each commit also promises
// and accepts the next slot.

/// The commands slot `slot` decides: a deterministic mix of sets and deletes of varied size.
pub fn ops_for(slot: u64) -> Vec<Op> {
    (0..1 + slot % 13)
        .map(|j| {
            let k = (slot * 31 + j * 7) % 200;
            let path = format!("/c/{}/{k}", k % 10);
            if (slot + j) % 5 == 0 {
                Op::Del { path, rev: -1 }
            } else {
                let len = if (slot + j) % 17 == 0 { 6000 } else { 100 };
                Op::Set {
                    path,
                    rev: -1,
                    value: Bytes::from(format!("{slot}.{j}.").repeat(len / 4)),
                }
            }
        })
        .collect()
}

pub fn value_for(slot: u64) -> Value {
    let cmds = ops_for(slot)
        .iter()
        .enumerate()
        .map(|(j, op)| command(77, slot * 100 + j as u64, op))
        .collect();
    Value::Batch(cmds)
}

pub fn ballot(slot: u64) -> Ballot {
    Ballot {
        round: slot,
        node: NodeId(77),
    }
}

/// One commit as a leader makes it: decide `first..=last`, promise and accept the next slot.
pub fn leader_batch(first: Slot, last: Slot) -> Batch {
    leader_batch_of(first, last, value_for)
}

/// [`leader_batch`] with the values `value` gives each slot.
pub fn leader_batch_of(first: Slot, last: Slot, value: impl Fn(Slot) -> Value) -> Batch {
    Batch {
        records: vec![
            Record::Promise(ballot(last)),
            Record::Accept {
                slot: last + 1,
                ballot: ballot(last),
                value: value(last + 1),
            },
        ],
        decided: (first..=last).map(|s| (s, value(s))).collect(),
    }
}

/// Checks a store reopened after a crash against the slots [`value_for`] decides: it holds
/// every slot up to `reported` (the last commit known to have returned), its tree and
/// revision are those of replaying its applied slots, and the acceptor records and decided
/// tail are those of its last commit (which wrote the promise and accept of the next slot).
/// Returns the applied slot.
pub fn check_log(store: &Store, reported: u64, retain_slots: u64) -> u64 {
    let applied = check_tree(store, reported);
    let st = store.load_engine_state(50).unwrap();
    assert_eq!(st.applied, applied);
    if applied > 0 {
        assert_eq!(
            st.promised,
            ballot(applied),
            "the promise of the last commit"
        );
        assert_eq!(st.accepted.len(), 1);
        assert_eq!(
            st.accepted.get(&(applied + 1)),
            Some(&(ballot(applied), value_for(applied + 1)))
        );
        // The decided tail: the last `retain_slots` slots, each with its decided value
        // (the value accepted in an earlier commit and then decided is stored once).
        let from = applied.saturating_sub(retain_slots - 1).max(1);
        let want: Vec<_> = (from..=applied).map(|s| (s, value_for(s))).collect();
        assert!(st.decided_tail == want, "decided tail at slot {applied}");
    }
    applied
}

/// The part of [`check_log`] about the applied state: it holds every slot up to `reported`,
/// and its tree, revision and history are those of replaying its applied slots. Returns
/// the applied slot.
pub fn check_tree(store: &Store, reported: u64) -> u64 {
    let applied = store.applied_slot();
    assert!(
        applied >= reported,
        "slot {reported} was reported committed, store has {applied}"
    );
    let mut model: BTreeMap<String, (i64, Bytes)> = BTreeMap::new();
    let mut rev = 0;
    for slot in 1..=applied {
        for op in ops_for(slot) {
            rev += 1;
            match op {
                Op::Set { path, value, .. } => {
                    model.insert(path, (rev, value));
                }
                Op::Del { path, .. } => {
                    model.remove(&path);
                }
                Op::Nop => {}
            }
        }
    }
    assert_eq!(store.rev(), rev);
    let g = Glob::new("/c/**").unwrap();
    let files: Vec<_> = (0..).map_while(|i| store.walk(&g, i, None).ok()).collect();
    let mut want: Vec<_> = model.into_iter().map(|(p, (r, v))| (p, v, r)).collect();
    want.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    assert_eq!(files.len(), want.len());
    assert!(
        files == want,
        "tree differs from the replay at slot {applied}"
    );
    // History is intact too: the last event is the last command of the last slot.
    if rev > 0 {
        let ev = store
            .wait(&Glob::new("/**").unwrap(), rev)
            .unwrap()
            .unwrap();
        assert_eq!(ev.rev, rev);
    }
    applied
}
