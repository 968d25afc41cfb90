//! `Store::commit_deferred`: which decisions are left pending, what readers see meanwhile,
//! and how the pending transaction is committed (the next write, `flush`, closing).
//! Losing it to a crash is covered by `crash.rs`.

mod common;

use common::*;
use doozer_paxos::{Ballot, NodeId, Record, Slot, Value};
use doozer_store::{Batch, Store, StoreOptions};

fn ballot() -> Ballot {
    Ballot {
        round: 1,
        node: NodeId(2),
    }
}

fn value(seq: u64, path: &str, body: &str) -> Value {
    Value::Batch(vec![cmd(seq, &set(path, -1, body))])
}

fn accept(s: &Store, slot: Slot, v: &Value) {
    s.commit(Batch {
        records: vec![Record::Accept {
            slot,
            ballot: ballot(),
            value: v.clone(),
        }],
        decided: vec![],
    })
    .unwrap();
}

fn decide(s: &Store, slot: Slot, v: &Value) -> Vec<doozer_store::ApplyResult> {
    let mut got = vec![];
    s.commit_deferred(
        Batch {
            records: vec![],
            decided: vec![(slot, v.clone())],
        },
        |r| got = r.into_iter().map(|(_, r)| r).collect(),
    )
    .unwrap();
    got
}

fn reopen(path: &std::path::Path) -> Store {
    Store::open(path, StoreOptions::default()).unwrap()
}

/// A new store in a temporary directory (which must outlive it): the directory, the store
/// file's path, the store.
fn new_store() -> (tempfile::TempDir, std::path::PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doozer.redb");
    let s = reopen(&path);
    (dir, path, s)
}

/// [`new_store`] with `/a = 1` accepted into slot 1; also returns that value.
fn with_slot_1_accepted() -> (tempfile::TempDir, std::path::PathBuf, Store, Value) {
    let (dir, path, s) = new_store();
    let v1 = value(1, "/a", "1");
    accept(&s, 1, &v1);
    (dir, path, s, v1)
}

#[test]
fn decision_of_an_accepted_value_is_pending_but_visible() {
    let (_dir, path, s, v1) = with_slot_1_accepted();
    let results = decide(&s, 1, &v1);
    assert_eq!(
        results.len(),
        1,
        "the command's result is handed out at once"
    );
    assert!(s.has_pending());
    // Readers see it although it is not durable here.
    assert_eq!(s.applied_slot(), 1);
    assert_eq!(s.get("/a", None).unwrap(), (bytes::Bytes::from("1"), 1));
    // The next write goes on in the same transaction and commits both.
    let v2 = value(2, "/b", "2");
    accept(&s, 2, &v2);
    assert!(!s.has_pending());
    drop(s);
    let s = reopen(&path);
    let st = s.load_engine_state(50).unwrap();
    assert_eq!(st.applied, 1, "the decision was committed with the accept");
    assert_eq!(st.accepted.get(&2), Some(&(ballot(), v2)));
    assert_eq!(s.get("/a", None).unwrap().1, 1);
}

#[test]
fn flush_and_close_commit_the_pending_decision() {
    let (_dir, path, s, v1) = with_slot_1_accepted();
    decide(&s, 1, &v1);
    s.flush().unwrap();
    assert!(!s.has_pending());
    s.flush().unwrap(); // nothing pending: a no-op
    let v2 = value(2, "/a", "2");
    accept(&s, 2, &v2);
    decide(&s, 2, &v2);
    assert!(s.has_pending());
    drop(s); // closing commits it
    let s = reopen(&path);
    assert_eq!(s.applied_slot(), 2);
    assert_eq!(s.get("/a", None).unwrap(), (bytes::Bytes::from("2"), 2));
    assert_eq!(s.load_engine_state(50).unwrap().applied, 2);
}

#[test]
fn other_decisions_commit_at_once() {
    let (_dir, path, s) = new_store();
    // Not accepted here (learned from a peer): the value exists nowhere else on this disk.
    let v1 = value(1, "/a", "1");
    decide(&s, 1, &v1);
    assert!(
        !s.has_pending(),
        "a value not accepted here is committed at once"
    );
    // Accepted with another value than the one decided.
    let v2 = value(2, "/a", "2");
    accept(&s, 2, &value(9, "/a", "other"));
    decide(&s, 2, &v2);
    assert!(!s.has_pending(), "a changed value is committed at once");
    // A membership change.
    let a = NodeId(0xA);
    let ctl = Value::Batch(vec![
        cmd(3, &set(&format!("/ctl/node/{a}/addr"), -1, "127.0.0.1:1")),
        cmd(4, &set("/ctl/cal/0", -1, &a.to_string())),
    ]);
    accept(&s, 3, &ctl);
    decide(&s, 3, &ctl);
    assert!(!s.has_pending(), "a membership change is committed at once");
    assert_eq!(s.config().voters.len(), 1);
    // With acceptor records in the batch (the storage thread merged jobs): at once.
    let v5 = value(5, "/a", "5");
    s.commit_deferred(
        Batch {
            records: vec![Record::Accept {
                slot: 4,
                ballot: ballot(),
                value: v5.clone(),
            }],
            decided: vec![(4, v5)],
        },
        |_| {},
    )
    .unwrap();
    assert!(
        !s.has_pending(),
        "a batch with records is committed at once"
    );
    drop(s);
    assert_eq!(reopen(&path).applied_slot(), 4);
}

/// Results are handed out in groups of eight while the batch is applied, in order, before
/// readers see any of it: a client need not wait for the rest of a large slot.
#[test]
fn results_are_handed_out_in_groups_as_commands_are_applied() {
    let (_dir, _, s) = new_store();
    let slot = |first: u64, n: u64| {
        Value::Batch(
            (first..first + n)
                .map(|i| cmd(i, &set(&format!("/k{i}"), -1, "v")))
                .collect(),
        )
    };
    let mut groups: Vec<Vec<i64>> = vec![];
    let mut seen_rev = vec![];
    s.commit_with(
        Batch {
            records: vec![],
            decided: vec![(1, slot(1, 5)), (2, slot(6, 14))],
        },
        |r| {
            seen_rev.push(s.rev());
            groups.push(r.into_iter().map(|(_, r)| r.rev()).collect());
        },
    )
    .unwrap();
    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![8, 8, 3]);
    let revs: Vec<i64> = groups.concat();
    assert_eq!(revs, (1..=19).collect::<Vec<_>>(), "in order, one each");
    assert_eq!(
        seen_rev,
        vec![0, 0, 0],
        "readers see the batch only once it is done"
    );
    assert_eq!(s.rev(), 19);
}

/// A write refused before it changed anything (a snapshot older than the applied state, a
/// slot that does not follow) leaves a pending decision alone: the store is not poisoned and
/// the decision is committed later as usual. (A node catching up slot by slot while a
/// snapshot fetch was under way was stopped by such a stale snapshot: its store had been
/// poisoned because the refusal dropped the pending transaction.)
#[test]
fn a_refused_write_keeps_the_pending_decision() {
    let (_dir, path, s, v1) = with_slot_1_accepted();
    let mut old = vec![];
    s.export_snapshot(&mut old).unwrap();
    decide(&s, 1, &v1);
    assert!(s.has_pending());

    let e = s.install_snapshot(&mut &old[..]).unwrap_err();
    assert!(
        matches!(e, doozer_store::StoreError::StaleSnapshot { .. }),
        "{e}"
    );
    assert!(s.has_pending(), "the pending decision is kept");
    let e = s
        .commit(Batch {
            records: vec![],
            decided: vec![(3, value(3, "/c", "3"))],
        })
        .unwrap_err();
    assert!(matches!(e, doozer_store::StoreError::SlotGap { .. }), "{e}");
    assert!(s.has_pending());

    // Not poisoned: the next write goes on, in the same transaction.
    let v2 = value(2, "/b", "2");
    accept(&s, 2, &v2);
    assert!(!s.has_pending());
    drop(s);
    let s = reopen(&path);
    assert_eq!(s.load_engine_state(50).unwrap().applied, 1);
    assert_eq!(s.get("/a", None).unwrap(), (bytes::Bytes::from("1"), 1));
}
