//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::Path;

use doozer_paxos::{Command, CommandId, NodeId, Slot, Value};
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
    Command {
        id: CommandId {
            node: NodeId(1),
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
