//! Exact-behaviour tests of the data model: CAS rules, directories, errors, /ctl/err, events,
//! reads at past revisions, duplicates, slots.

mod common;

use bytes::Bytes;
use common::*;
use doozer_paxos::{Command, CommandId, NodeId, Value};
use doozer_proto::{ErrCode, Glob};
use doozer_store::{ApplyResult, Batch, Event, Op, StoreError, FLAG_DEL, FLAG_NOP, FLAG_SET};

fn ok(rev: i64) -> ApplyResult {
    ApplyResult::Ok { rev }
}

fn err(rev: i64, code: ErrCode) -> ApplyResult {
    ApplyResult::Err { rev, code }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn compare_and_set_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(open(dir.path(), 1000));
    assert_eq!(d.one(set("/a", 0, "1")), ok(1), "0 creates a missing file");
    assert_eq!(
        d.one(set("/a", 0, "2")),
        err(2, ErrCode::RevMismatch),
        "0 only if missing"
    );
    assert_eq!(
        d.store.get("/ctl/err", None).unwrap(),
        (b("rev mismatch"), 2)
    );
    assert_eq!(d.one(set("/a", 1, "3")), ok(3), "the current rev works");
    assert_eq!(
        d.one(set("/a", 2, "4")),
        err(4, ErrCode::RevMismatch),
        "an older rev fails"
    );
    assert_eq!(
        d.one(set("/a", 99, "5")),
        ok(5),
        "a larger rev works (Doozer's >= rule)"
    );
    assert_eq!(d.one(set("/a", -1, "6")), ok(6), "-1 clobbers");
    assert_eq!(
        d.one(set("/a", -5, "7")),
        err(7, ErrCode::RevMismatch),
        "other negatives fail"
    );
    assert_eq!(d.one(set("/a", -2, "7")), err(8, ErrCode::RevMismatch));
    assert_eq!(d.store.get("/a", None).unwrap(), (b("6"), 6));
    assert_eq!(d.one(del("/a", 5)), err(9, ErrCode::RevMismatch));
    assert_eq!(d.one(del("/a", 6)), ok(10));
    assert_eq!(d.store.get("/a", None).unwrap(), (Bytes::new(), 0));
    assert_eq!(
        d.one(del("/a", 0)),
        ok(11),
        "deleting a missing file succeeds"
    );
    assert_eq!(d.one(del("/a", -1)), ok(12));
    assert_eq!(d.store.rev(), 12);
}

#[test]
fn directories_are_implicit() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(open(dir.path(), 1000));
    for (i, p) in ["/d/x/1", "/d/x-y", "/d/x.z", "/d/b", "/d/x/2"]
        .iter()
        .enumerate()
    {
        assert_eq!(d.one(set(p, 0, p)), ok(i as i64 + 1));
    }
    let s = &d.store;
    let names: Vec<String> = (0..4).map(|i| s.getdir("/d", i, None).unwrap()).collect();
    assert_eq!(names, ["b", "x", "x-y", "x.z"], "byte order of names");
    assert!(matches!(s.getdir("/d", 4, None), Err(StoreError::Range(4))));
    assert!(matches!(
        s.getdir("/d", -1, None),
        Err(StoreError::Range(-1))
    ));
    assert!(matches!(
        s.getdir("/nope", 0, None),
        Err(StoreError::NoEnt(_))
    ));
    assert!(matches!(
        s.getdir("/d/b", 0, None),
        Err(StoreError::NotDir(_))
    ));
    assert_eq!(s.getdir("/", 0, None).unwrap(), "d");
    assert_eq!(s.stat("/d", None).unwrap(), (-2, 4));
    assert_eq!(s.stat("/d/x", None).unwrap(), (-2, 2));
    assert_eq!(s.stat("/d/b", None).unwrap(), (4, 4));
    assert_eq!(s.stat("/", None).unwrap(), (-2, 1));
    assert_eq!(s.stat("/zz", None).unwrap(), (0, 0));
    assert_eq!(
        s.stat("bad path", None).unwrap(),
        (0, 0),
        "STAT treats bad paths as missing"
    );
    assert!(matches!(s.get("/d/x", None), Err(StoreError::IsDir(_))));
    assert!(matches!(s.get("/", None), Err(StoreError::IsDir(_))));
    assert!(matches!(s.get("", None), Err(StoreError::BadPath(_))));
    assert!(matches!(
        s.getdir("/a_b", 0, None),
        Err(StoreError::BadPath(_))
    ));

    // Set on a directory, set under a file, delete a directory, delete under a file.
    assert_eq!(d.one(set("/d/x", -1, "v")), err(6, ErrCode::IsDir));
    assert_eq!(
        d.store.get("/ctl/err", None).unwrap(),
        (b("is a directory"), 6)
    );
    assert_eq!(d.one(set("/d/b/c", -1, "v")), err(7, ErrCode::NotDir));
    assert_eq!(
        d.store.get("/ctl/err", None).unwrap(),
        (b("not a directory"), 7)
    );
    assert_eq!(d.one(del("/d", -1)), err(8, ErrCode::IsDir));
    assert_eq!(d.one(del("/", -1)), err(9, ErrCode::IsDir));
    assert_eq!(d.one(set("/", -1, "")), err(10, ErrCode::IsDir));
    assert_eq!(
        d.one(del("/d/b/c", -1)),
        err(11, ErrCode::NotDir),
        "not the original's bug"
    );
    assert_eq!(
        d.store.get("/d/b", None).unwrap(),
        (b("/d/b"), 4),
        "the parent file survives"
    );
    assert_eq!(d.one(set("/a_b", -1, "")), err(12, ErrCode::BadPath));
    assert_eq!(d.store.get("/ctl/err", None).unwrap(), (b("bad path"), 12));

    // Deleting the last file of a directory removes it, up to the root.
    for (i, p) in ["/d/x/1", "/d/x/2"].iter().enumerate() {
        assert_eq!(d.one(del(p, -1)), ok(13 + i as i64));
    }
    assert!(matches!(
        d.store.getdir("/d/x", 0, None),
        Err(StoreError::NoEnt(_))
    ));
    assert_eq!(d.store.stat("/d", None).unwrap(), (-2, 3));
    for p in ["/d/x-y", "/d/x.z", "/d/b", "/ctl/err"] {
        d.one(del(p, -1));
    }
    assert_eq!(d.store.stat("/d", None).unwrap(), (0, 0));
    assert_eq!(
        d.store.stat("/", None).unwrap(),
        (-2, 0),
        "the root always exists"
    );
    assert!(matches!(
        d.store.getdir("/", 0, None),
        Err(StoreError::Range(0))
    ));
}

#[test]
fn events_and_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(open(dir.path(), 1000));
    let c = d.slot(&[
        set("/w/a", 0, "A"),
        Op::Nop,
        del("/w/a", -1),
        set("/w/a/b", -3, "x"),
    ]);
    let ev = |rev, path: &str, value: &str, flags| Event {
        rev,
        path: path.into(),
        value: b(value),
        flags,
    };
    let want = vec![
        ev(1, "/w/a", "A", FLAG_SET),
        ev(2, "/", "", FLAG_NOP),
        ev(3, "/w/a", "", FLAG_DEL),
        ev(4, "/ctl/err", "rev mismatch", FLAG_SET),
    ];
    assert_eq!(c.events, want);
    let all = Glob::new("/**").unwrap();
    for e in &want {
        assert_eq!(
            d.store.wait(&all, e.rev).unwrap().as_ref(),
            Some(e),
            "history matches live events"
        );
    }
    assert_eq!(
        d.store.wait(&all, 0).unwrap(),
        Some(want[0].clone()),
        "rev < 1 counts as 1"
    );
    assert_eq!(d.store.wait(&all, 5).unwrap(), None, "nothing yet");
    let wa = Glob::new("/w/*").unwrap();
    assert_eq!(d.store.wait(&wa, 2).unwrap(), Some(want[2].clone()));
    assert_eq!(
        d.store.wait(&Glob::new("/").unwrap(), 1).unwrap(),
        Some(want[1].clone())
    );
    // The value of a past set event is the value set then, not the current one.
    d.one(set("/w/a", -1, "B"));
    assert_eq!(d.store.wait(&wa, 1).unwrap().unwrap().value, b("A"));
    assert_eq!(d.store.wait(&wa, 4).unwrap().unwrap().value, b("B"));
}

#[test]
fn history_is_trimmed_and_past_reads_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(open(dir.path(), 10));
    for i in 1..=30 {
        d.one(set("/h/f", -1, &i.to_string()));
    }
    d.one(del("/h/f", -1)); // rev 31
    assert_eq!(d.store.oldest_rev(), 21);
    assert_eq!(d.store.get("/h/f", Some(25)).unwrap(), (b("25"), 25));
    assert_eq!(d.store.get("/h/f", Some(21)).unwrap(), (b("21"), 21));
    assert_eq!(d.store.get("/h/f", Some(31)).unwrap(), (Bytes::new(), 0));
    assert_eq!(d.store.stat("/h", Some(30)).unwrap(), (-2, 1));
    assert_eq!(d.store.getdir("/h", 0, Some(30)).unwrap(), "f");
    assert!(matches!(
        d.store.getdir("/h", 0, Some(31)),
        Err(StoreError::NoEnt(_))
    ));
    assert!(matches!(
        d.store.get("/h/f", Some(20)),
        Err(StoreError::TooLate {
            rev: 20,
            oldest: 21
        })
    ));
    assert!(matches!(
        d.store.get("/h/f", Some(32)),
        Err(StoreError::FutureRev {
            rev: 32,
            current: 31
        })
    ));
    let g = Glob::new("/h/**").unwrap();
    assert!(matches!(
        d.store.wait(&g, 21),
        Err(StoreError::TooLate { .. })
    ));
    assert_eq!(d.store.wait(&g, 22).unwrap().unwrap().rev, 22);
    assert_eq!(
        d.store.walk(&g, 0, Some(28)).unwrap(),
        ("/h/f".into(), b("28"), 28)
    );
    assert!(matches!(
        d.store.walk(&g, 0, None),
        Err(StoreError::Range(0))
    ));
    // Survives a reopen.
    drop(d);
    let s = open(dir.path(), 10);
    assert_eq!((s.rev(), s.oldest_rev()), (31, 21));
    assert_eq!(s.get("/h/f", Some(27)).unwrap(), (b("27"), 27));
}

#[test]
fn duplicates_answer_the_first_result_and_take_no_revision() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1000);
    let id = |seq| CommandId {
        node: NodeId(9),
        seq,
    };
    let c1 = Command {
        id: id(1),
        data: doozer_store::codec::encode_op(&set("/x", 0, "1")),
    };
    let c2 = Command {
        id: id(2),
        data: doozer_store::codec::encode_op(&set("/x", 0, "2")),
    };
    let r = s
        .commit(Batch {
            records: vec![],
            decided: vec![(1, Value::Batch(vec![c1.clone(), c2.clone()]))],
        })
        .unwrap();
    assert_eq!(
        r.results,
        vec![(id(1), ok(1)), (id(2), err(2, ErrCode::RevMismatch))]
    );
    // The same commands decided again in later slots (a retried proposal).
    let r = s
        .commit(Batch {
            records: vec![],
            decided: vec![(2, Value::Noop), (3, Value::Batch(vec![c2, c1]))],
        })
        .unwrap();
    assert_eq!(
        r.results,
        vec![(id(2), err(2, ErrCode::RevMismatch)), (id(1), ok(1))]
    );
    assert!(r.events.is_empty());
    assert_eq!((r.rev, r.applied), (2, 3));
    assert_eq!(s.get("/x", None).unwrap(), (b("1"), 1));
    // Also after a reopen.
    drop(s);
    let s = open(dir.path(), 1000);
    let c1 = Command {
        id: id(1),
        data: doozer_store::codec::encode_op(&set("/x", -1, "3")),
    };
    let r = s
        .commit(Batch {
            records: vec![],
            decided: vec![(4, Value::Batch(vec![c1]))],
        })
        .unwrap();
    assert_eq!(r.results, vec![(id(1), ok(1))]);
    assert_eq!(s.rev(), 2);
}

#[test]
fn slots_apply_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(open(dir.path(), 1000));
    d.one(set("/s", 0, "1"));
    let stale = d.store.commit(Batch {
        records: vec![],
        decided: vec![(1, Value::Batch(vec![cmd(1, &set("/s", -1, "again"))]))],
    });
    let stale = stale.unwrap();
    assert!(stale.results.is_empty(), "an applied slot is skipped");
    assert_eq!(stale.applied, 1);
    let gap = d.store.commit(Batch {
        records: vec![],
        decided: vec![(3, Value::Noop)],
    });
    assert!(matches!(
        gap,
        Err(StoreError::SlotGap { applied: 1, got: 3 })
    ));
    assert_eq!(
        d.store.applied_slot(),
        1,
        "nothing of a failed batch is kept"
    );
    let r = d
        .store
        .commit(Batch {
            records: vec![],
            decided: vec![(2, Value::Noop)],
        })
        .unwrap();
    assert_eq!((r.rev, r.applied), (1, 2), "a no-op slot takes no revision");
    // An undecodable command takes a revision and fails with OTHER.
    let junk = Command {
        id: CommandId {
            node: NodeId(3),
            seq: 1,
        },
        data: Bytes::from_static(&[0xff, 1]),
    };
    let r = d
        .store
        .commit(Batch {
            records: vec![],
            decided: vec![(3, Value::Batch(vec![junk]))],
        })
        .unwrap();
    assert_eq!(r.results[0].1, err(2, ErrCode::Other));
    assert_eq!(
        d.store.get("/ctl/err", None).unwrap(),
        (b("bad mutation"), 2)
    );
}
