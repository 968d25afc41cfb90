//! Acceptor records, the decided tail, membership derived from /ctl, engine state after a
//! reopen, metadata.

mod common;

use std::collections::BTreeSet;

use common::*;
use doozer_paxos::{Ballot, Config, NodeId, Record, Value};
use doozer_store::{Batch, Store, StoreOptions};

fn ballot(round: u64) -> Ballot {
    Ballot {
        round,
        node: NodeId(2),
    }
}

fn noop_accept(slot: u64, round: u64) -> Record {
    Record::Accept {
        slot,
        ballot: ballot(round),
        value: Value::Noop,
    }
}

#[test]
fn acceptor_records_survive_reopen_and_follow_applied() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        retain_slots: 2,
        ..StoreOptions::default()
    };
    let path = dir.path().join("doozer.redb");
    let s = Store::open(&path, opts.clone()).unwrap();
    let batch = Value::Batch(vec![cmd(1, &set("/x", -1, "1"))]);
    s.commit(Batch {
        records: vec![
            Record::Promise(ballot(3)),
            Record::Accept {
                slot: 1,
                ballot: ballot(3),
                value: batch.clone(),
            },
            noop_accept(2, 3),
            noop_accept(3, 3),
            noop_accept(2, 4),
            Record::Promise(ballot(2)), // never goes back
        ],
        decided: vec![],
    })
    .unwrap();
    drop(s);
    let s = Store::open(&path, opts.clone()).unwrap();
    let st = s.load_engine_state(50).unwrap();
    assert_eq!(st.promised, ballot(3));
    assert_eq!(st.applied, 0);
    let acc: Vec<_> = st
        .accepted
        .iter()
        .map(|(s, (b, _))| (*s, b.round))
        .collect();
    assert_eq!(
        acc,
        [(1, 3), (2, 4), (3, 3)],
        "the latest accept of each slot"
    );
    assert_eq!(st.accepted[&1].1, batch);

    s.commit(Batch {
        records: vec![],
        decided: vec![(1, batch.clone()), (2, Value::Noop)],
    })
    .unwrap();
    let st = s.load_engine_state(50).unwrap();
    assert_eq!(st.applied, 2);
    assert_eq!(
        st.accepted.keys().copied().collect::<Vec<_>>(),
        [3],
        "only slots above applied"
    );
    assert_eq!(st.decided_tail, vec![(1, batch), (2, Value::Noop)]);
    for slot in 3..=5 {
        s.commit(Batch {
            records: vec![noop_accept(slot + 1, 5)],
            decided: vec![(slot, Value::Noop)],
        })
        .unwrap();
    }
    drop(s);
    let s = Store::open(&path, opts).unwrap();
    let st = s.load_engine_state(50).unwrap();
    assert_eq!(st.applied, 5);
    assert_eq!(
        st.decided_tail.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [4, 5],
        "retain_slots = 2"
    );
    assert_eq!(st.accepted.keys().copied().collect::<Vec<_>>(), [6]);
    assert_eq!(st.promised, ballot(3));
}

#[test]
fn membership_comes_from_ctl() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(open(dir.path(), 1000));
    let (a, b) = (NodeId(0xA), NodeId(0xB));
    let ids = |v: &[NodeId]| v.iter().copied().collect::<BTreeSet<_>>();
    assert_eq!(d.store.config(), Config::default());
    let c = d.slot(&[
        set(&format!("/ctl/node/{a}/addr"), -1, "127.0.0.1:1"),
        set("/ctl/cal/0", -1, &a.to_string()),
        set("/ctl/cal/1", -1, ""),
    ]); // slot 1
    let want1 = Config {
        voters: ids(&[a]),
        learners: ids(&[]),
    };
    assert_eq!(c.configs, vec![(1, want1.clone())]);
    let c = d.slot(&[set("/app", -1, "x")]); // slot 2
    assert!(c.configs.is_empty(), "unchanged membership is not reported");
    let c = d.slot(&[set(&format!("/ctl/node/{b}/addr"), -1, "127.0.0.1:2")]); // slot 3
    let want3 = Config {
        voters: ids(&[a]),
        learners: ids(&[b]),
    };
    assert_eq!(c.configs, vec![(3, want3.clone())]);
    let c = d.slot(&[set("/ctl/cal/1", -1, &b.to_string())]); // slot 4
    let want4 = Config {
        voters: ids(&[a, b]),
        learners: ids(&[]),
    };
    assert_eq!(c.configs, vec![(4, want4.clone())]);
    assert_eq!(d.store.config(), want4);
    // Emptying every slot keeps the last voters (the last CAL is never removed).
    let c = d.slot(&[set("/ctl/cal/0", -1, ""), set("/ctl/cal/1", -1, "garbage")]); // slot 5
    assert!(c.configs.is_empty());
    assert_eq!(d.store.config(), want4);
    for _ in 6..=10 {
        d.slot(&[]);
    }
    // With alpha 3 at applied 10: slot 11 is governed by the config after slot 8 (= want4),
    // nothing changed since.
    let st = d.store.load_engine_state(3).unwrap();
    assert_eq!(st.configs, vec![(11, want4.clone())]);
    // With alpha 8: slot 11 by the config after slot 3, then slot 4's change from slot 12.
    let st = d.store.load_engine_state(8).unwrap();
    assert_eq!(st.configs, vec![(11, want3), (12, want4.clone())]);
    // With alpha 10: slot 11 by after-slot-1, then 3 -> 13, 4 -> 14.
    let st = d.store.load_engine_state(10).unwrap();
    assert_eq!(st.configs[0], (11, want1));
    assert_eq!(
        st.configs.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [11, 13, 14]
    );
    drop(d);
    let s = open(dir.path(), 1000);
    assert_eq!(s.config(), want4, "membership survives a reopen");
}

#[test]
fn metadata_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1000);
    assert_eq!(s.meta_get("id").unwrap(), None);
    s.meta_put("id", b"AAAAAAAAAAAAAAAA").unwrap();
    s.meta_put("id", b"BBBBBBBBBBBBBBBB").unwrap();
    drop(s);
    let s = open(dir.path(), 1000);
    assert_eq!(
        s.meta_get("id").unwrap().as_deref(),
        Some(&b"BBBBBBBBBBBBBBBB"[..])
    );
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = open(dir.path(), 1000);
    let again = Store::open(&dir.path().join("doozer.redb"), StoreOptions::default());
    assert!(
        matches!(again, Err(doozer_store::StoreError::Locked)),
        "{:?}",
        again.err()
    );
}

#[test]
fn decided_values_win_over_accepted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doozer.redb");
    let opts = StoreOptions {
        retain_slots: 10,
        ..StoreOptions::default()
    };
    let s = Store::open(&path, opts.clone()).unwrap();
    // A value of several chunks, accepted and decided unchanged; another accepted value
    // replaced by a different decision; a decision with no accept here at all.
    let big = Value::Batch(vec![cmd(1, &set("/big", -1, &"v".repeat(9_000)))]);
    let other = Value::Batch(vec![cmd(2, &set("/o", -1, "decided"))]);
    s.commit(Batch {
        records: vec![
            Record::Accept {
                slot: 1,
                ballot: ballot(1),
                value: big.clone(),
            },
            Record::Accept {
                slot: 2,
                ballot: ballot(1),
                value: big.clone(),
            },
            noop_accept(4, 1),
        ],
        decided: vec![],
    })
    .unwrap();
    s.commit(Batch {
        records: vec![],
        decided: vec![(1, big.clone()), (2, other.clone()), (3, Value::Noop)],
    })
    .unwrap();
    drop(s);
    let s = Store::open(&path, opts).unwrap();
    let st = s.load_engine_state(50).unwrap();
    assert_eq!(
        st.decided_tail,
        vec![(1, big), (2, other), (3, Value::Noop)]
    );
    assert_eq!(st.accepted.keys().copied().collect::<Vec<_>>(), [4]);
    assert_eq!(s.get("/o", None).unwrap().0, "decided");
}

#[test]
fn with_no_retained_slots_decided_values_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doozer.redb");
    let opts = StoreOptions {
        retain_slots: 0,
        ..StoreOptions::default()
    };
    let s = Store::open(&path, opts.clone()).unwrap();
    s.commit(Batch {
        records: vec![noop_accept(1, 1), noop_accept(2, 1)],
        decided: vec![(1, Value::Noop)],
    })
    .unwrap();
    drop(s);
    let st = Store::open(&path, opts)
        .unwrap()
        .load_engine_state(50)
        .unwrap();
    assert!(st.decided_tail.is_empty());
    assert_eq!(st.accepted.keys().copied().collect::<Vec<_>>(), [2]);
}

#[test]
fn a_file_of_another_format_is_refused_unchanged() {
    use redb::{TableDefinition, TableHandle};
    let state = TableDefinition::<&str, &[u8]>::new("state");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doozer.redb");
    // A format-2 file as the previous release wrote it: chunked `accepted`/`decided` tables.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut st = txn.open_table(state).unwrap();
            st.insert("format", 2u64.to_be_bytes().as_slice()).unwrap();
            st.insert("applied", 5u64.to_be_bytes().as_slice()).unwrap();
            let accepted = TableDefinition::<(u64, u32), &[u8]>::new("accepted");
            let mut acc = txn.open_table(accepted).unwrap();
            acc.insert((6, 0), b"x".as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Store::open(&path, StoreOptions::default()).err().unwrap();
    assert!(
        matches!(
            err,
            doozer_store::StoreError::UnsupportedFormat {
                found: 2,
                supported: 5
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("format 2"), "{err}");
    // Nothing was written: no table of the new format, the old format row as it was.
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let names: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|h| h.name().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let st = txn.open_table(state).unwrap();
    assert_eq!(
        st.get("format").unwrap().unwrap().value(),
        2u64.to_be_bytes().as_slice()
    );
}

#[test]
fn a_checkpoint_without_its_store_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doozer.redb");
    let ckpt = dir.path().join("doozer.redb.ckpt");
    std::fs::write(&ckpt, b"a checkpoint of a store file that is gone").unwrap();
    for _ in 0..2 {
        let err = Store::open(&path, StoreOptions::default()).err().unwrap();
        assert!(
            matches!(&err, doozer_store::StoreError::Corrupt(m) if m.contains("checkpoint")),
            "{err:?}"
        );
    }
    // Moving it away, as the message says, opens a new store.
    std::fs::remove_file(&ckpt).unwrap();
    let s = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!((s.rev(), s.applied_slot()), (0, 0));
}
