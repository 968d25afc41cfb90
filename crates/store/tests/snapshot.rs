//! Snapshot export/install round trips, integrity checks, and consistency under writes.

mod common;

use common::*;
use doozer_paxos::{Ballot, NodeId, Record, Value};
use doozer_proto::{ErrCode, Glob};
use doozer_store::{ApplyResult, Batch, Op, Store, StoreError};

/// Every file as (path, value, rev) at `rev`, via WALK.
fn all_files(s: &Store, rev: Option<i64>) -> Vec<(String, bytes::Bytes, i64)> {
    let g = Glob::new("/**").unwrap();
    (0..).map_while(|i| s.walk(&g, i, rev).ok()).collect()
}

fn sample(d: &mut Driver) {
    let a = NodeId(0xA);
    d.slot(&[
        set(&format!("/ctl/node/{a}/addr"), -1, "127.0.0.1:1"),
        set("/ctl/cal/0", -1, &a.to_string()),
    ]);
    for i in 0..50 {
        d.slot(&[
            set(&format!("/data/{}/f{i}", i % 7), -1, &"x".repeat(i)),
            del("/data/0/f0", -1),
        ]);
    }
    d.one(set("/data/1", 0, "fails: is a directory"));
}

#[test]
fn export_install_round_trip() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut src = Driver::new(open(d1.path(), 1000));
    sample(&mut src);
    let mut buf = Vec::new();
    let meta = src.store.export_snapshot(&mut buf).unwrap();
    assert_eq!(
        (meta.rev, meta.slot),
        (src.store.rev(), src.store.applied_slot())
    );
    assert_eq!(meta.files as usize, all_files(&src.store, None).len());

    let dst = open(d2.path(), 1000);
    let got = dst.install_snapshot(&mut buf.as_slice()).unwrap();
    assert_eq!(got, meta);
    assert_eq!((dst.rev(), dst.applied_slot()), (meta.rev, meta.slot));
    assert_eq!(all_files(&dst, None), all_files(&src.store, None));
    assert_eq!(
        dst.getdir("/data", 3, None).unwrap(),
        src.store.getdir("/data", 3, None).unwrap()
    );
    assert_eq!(dst.config(), src.store.config());
    assert_eq!(
        dst.load_engine_state(5).unwrap().configs,
        src.store.load_engine_state(5).unwrap().configs
    );
    assert_eq!(
        dst.get("/ctl/err", None).unwrap(),
        src.store.get("/ctl/err", None).unwrap()
    );
    // History came along.
    assert_eq!(dst.oldest_rev(), src.store.oldest_rev());
    assert_eq!(
        dst.get("/data/1/f1", Some(meta.rev - 1)).unwrap(),
        src.store.get("/data/1/f1", Some(meta.rev - 1)).unwrap()
    );
    // Remembered command ids came along: a duplicate is answered, not applied.
    let mut dup = Driver {
        store: dst.clone(),
        seq: 1_000,
    };
    let r = dup.one(set("/ctl/node/X", -1, "would be applied twice"));
    assert_eq!(
        r,
        ApplyResult::Ok { rev: 1 },
        "seq 1001 was the first command"
    );
    assert_eq!(dst.rev(), meta.rev);
    // Writes continue from the snapshot's revision.
    dup.seq = 1_000_000;
    let r = dup.one(set("/after", 0, "y"));
    assert_eq!(r, ApplyResult::Ok { rev: meta.rev + 1 });
    // Exporting the installed state gives the same bytes (files, ids, configs).
    let mut again = Vec::new();
    let d3 = tempfile::tempdir().unwrap();
    let dst2 = open(d3.path(), 10);
    dst2.install_snapshot(&mut buf.as_slice()).unwrap();
    dst2.export_snapshot(&mut again).unwrap();
    assert_eq!(again, buf);
}

/// Values large enough that an export's chunks end on their byte bound, some in the middle
/// of a file's undo records: the stream is still the whole state with its history.
#[test]
fn exports_of_large_values_round_trip() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut src = Driver::new(open(d1.path(), 1000));
    let big = |i: usize| format!("{i:06}").repeat(50_000); // 300 KB
    let mut revs = Vec::new();
    for round in 0..6 {
        for f in 0..5 {
            // File 0 changes six times as often: its undo records span several chunks.
            let n = if f == 0 { 6 } else { 1 };
            for k in 0..n {
                src.one(set(
                    &format!("/big/f{f}"),
                    -1,
                    &big(round * 100 + f * 10 + k),
                ));
            }
        }
        revs.push(src.store.rev());
    }
    let mut buf = Vec::new();
    let meta = src.store.export_snapshot(&mut buf).unwrap();
    assert!(buf.len() > 40 * 300_000, "{} bytes", buf.len());
    let dst = open(d2.path(), 1000);
    assert_eq!(dst.install_snapshot(&mut buf.as_slice()).unwrap(), meta);
    assert_eq!(dst.oldest_rev(), src.store.oldest_rev());
    for rev in revs {
        assert_eq!(
            all_files(&dst, Some(rev)),
            all_files(&src.store, Some(rev)),
            "at rev {rev}"
        );
    }
    let mut again = Vec::new();
    dst.export_snapshot(&mut again).unwrap();
    assert!(again == buf, "a re-export differs");
}

#[test]
fn install_keeps_acceptor_records_above_the_snapshot() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut src = Driver::new(open(d1.path(), 1000));
    for i in 0..5 {
        src.one(set("/k", -1, &i.to_string()));
    }
    let mut buf = Vec::new();
    src.store.export_snapshot(&mut buf).unwrap(); // slot 5
    let dst = open(d2.path(), 1000);
    let b = Ballot {
        round: 7,
        node: NodeId(1),
    };
    let records = std::iter::once(Record::Promise(b))
        .chain((1..=8).map(|slot| Record::Accept {
            slot,
            ballot: b,
            value: Value::Noop,
        }))
        .collect();
    dst.commit(Batch {
        records,
        decided: vec![],
    })
    .unwrap();
    dst.install_snapshot(&mut buf.as_slice()).unwrap();
    let st = dst.load_engine_state(50).unwrap();
    assert_eq!(st.applied, 5);
    assert_eq!(st.promised, b);
    assert_eq!(st.accepted.keys().copied().collect::<Vec<_>>(), [6, 7, 8]);
    assert!(st.decided_tail.is_empty());
    // The next slot applies on top.
    let r = dst
        .commit(Batch {
            records: vec![],
            decided: vec![(6, Value::Noop)],
        })
        .unwrap();
    assert_eq!((r.applied, r.rev), (6, 5));
    // An older snapshot is refused.
    let err = dst.install_snapshot(&mut buf.as_slice()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::StaleSnapshot {
                snapshot: 5,
                applied: 6
            }
        ),
        "{err:?}"
    );
}

#[test]
fn damaged_snapshots_change_nothing() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut src = Driver::new(open(d1.path(), 1000));
    sample(&mut src);
    let mut buf = Vec::new();
    src.store.export_snapshot(&mut buf).unwrap();
    let mut dst = Driver::new(open(d2.path(), 1000));
    dst.one(set("/mine", 0, "kept"));
    let before = all_files(&dst.store, None);
    let mut tries = vec![
        buf[..buf.len() - 1].to_vec(),
        buf[..buf.len() / 2].to_vec(),
        b"DZSNAP0".to_vec(),
    ];
    for i in (8..buf.len()).step_by(buf.len() / 40) {
        let mut bad = buf.clone();
        bad[i] ^= 0x20;
        tries.push(bad);
    }
    for (n, bad) in tries.iter().enumerate() {
        let r = dst.store.install_snapshot(&mut bad.as_slice());
        assert!(
            matches!(
                r,
                Err(StoreError::BadSnapshot(_)) | Err(StoreError::Decode(_))
            ),
            "try {n}: {r:?}"
        );
        assert_eq!(all_files(&dst.store, None), before, "try {n}");
        assert_eq!(dst.store.rev(), 1);
    }
    assert_eq!(
        dst.one(set("/mine", 1, "still writable")),
        ApplyResult::Ok { rev: 2 }
    );
    assert_eq!(
        dst.one(set("/mine", 1, "x")),
        ApplyResult::Err {
            rev: 3,
            code: ErrCode::RevMismatch
        }
    );
}

#[test]
fn export_is_consistent_while_commits_go_on() {
    let d1 = tempfile::tempdir().unwrap();
    let src = open(d1.path(), 100_000);
    let writer = {
        let s = src.clone();
        std::thread::spawn(move || {
            let mut d = Driver::new(s);
            for i in 0..300 {
                // Each slot moves value between two files: a torn read would show both or none.
                d.slot(&[
                    del(&format!("/t/{}", i % 2), -1),
                    set(&format!("/t/{}", (i + 1) % 2), -1, &i.to_string()),
                ]);
            }
        })
    };
    let mut checked = 0;
    while !writer.is_finished() || checked == 0 {
        let mut buf = Vec::new();
        let meta = src.export_snapshot(&mut buf).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dst = open(dir.path(), 10);
        assert_eq!(dst.install_snapshot(&mut buf.as_slice()).unwrap(), meta);
        let got = all_files(&dst, None);
        assert_eq!(
            got,
            all_files(&src, Some(meta.rev)),
            "the snapshot is the state at its rev"
        );
        if meta.rev > 0 {
            assert_eq!(got.len(), 1, "rev {} shows {got:?}", meta.rev);
        }
        checked += 1;
    }
    writer.join().unwrap();
    assert!(checked > 0);
}

/// Everything the read verbs say at `rev` about the paths `sample_history` touches.
fn reads_at(s: &Store, rev: i64) -> Vec<String> {
    let mut out = vec![format!("{:?}", all_files(s, Some(rev)))];
    for p in [
        "/", "/h", "/h/a", "/h/a/0", "/h/a/1", "/h/b", "/h/b/2", "/ctl", "/ctl/err", "/gone",
        "/gone/x", "/nope",
    ] {
        out.push(format!("{p} get {:?}", s.get(p, Some(rev))));
        out.push(format!("{p} stat {:?}", s.stat(p, Some(rev))));
        for i in 0..4 {
            out.push(format!("{p} getdir {i} {:?}", s.getdir(p, i, Some(rev))));
        }
    }
    for g in ["/h/**", "/h/a/*", "/ctl/err"] {
        let g = Glob::new(g).unwrap();
        out.push(format!("walk {g:?} {:?}", s.walk(&g, 2, Some(rev))));
    }
    out
}

/// Every event from `rev` on matching each glob, by WAIT, as text.
fn waits_from(s: &Store, rev: i64) -> Vec<String> {
    let mut out = Vec::new();
    for g in ["/**", "/h/**", "/h/a/*", "/ctl/err", "/", "/gone/*"] {
        let g = Glob::new(g).unwrap();
        let mut from = rev;
        for _ in 0..3 {
            match s.wait(&g, from) {
                Ok(Some(e)) => {
                    out.push(format!("{g:?} {from}: {e:?}"));
                    from = e.rev + 1;
                }
                r => {
                    out.push(format!("{g:?} {from}: {r:?}"));
                    break;
                }
            }
        }
    }
    out
}

/// Sets, overwrites, deletes, NOPs, failures (written to /ctl/err) over ~300 revisions.
fn sample_history(d: &mut Driver) {
    for i in 0..60i64 {
        let a = format!("/h/a/{}", i % 5);
        let b = format!("/h/b/{}", i % 3);
        d.slot(&[
            set(&a, -1, &format!("a{i}")),
            set(&b, -1, &"b".repeat(i as usize % 9)),
            Op::Nop,
        ]);
        match i % 4 {
            0 => d.slot(&[del(&a, -1), set("/gone/x", -1, "here")]),
            1 => d.slot(&[set(&b, 1, "cas fails"), del("/gone/x", -1)]),
            2 => d.slot(&[del("/h/never", 5), Op::Nop]),
            _ => d.slot(&[set("/h/a", 0, "is a directory"), set("/h/c", 0, "once")]),
        };
    }
}

#[test]
fn installed_store_answers_the_source_history() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A history of 150 revisions: the older ones are trimmed.
    let mut src = Driver::new(open(d1.path(), 150));
    sample_history(&mut src);
    let (rev, floor) = (src.store.rev(), src.store.oldest_rev());
    assert!(floor > 100 && rev - floor == 150, "rev {rev} floor {floor}");
    let mut buf = Vec::new();
    src.store.export_snapshot(&mut buf).unwrap();
    let dst = open(d2.path(), 100_000);
    dst.install_snapshot(&mut buf.as_slice()).unwrap();
    assert_eq!((dst.rev(), dst.oldest_rev()), (rev, floor));
    for r in floor..=rev {
        assert_eq!(reads_at(&dst, r), reads_at(&src.store, r), "reads at {r}");
    }
    let first = waits_from(&dst, floor + 1);
    assert!(
        first.iter().filter(|l| l.contains(": Event {")).count() >= 10,
        "{first:?}"
    );
    for r in floor + 1..=rev + 1 {
        assert_eq!(
            waits_from(&dst, r),
            waits_from(&src.store, r),
            "waits from {r}"
        );
    }
    for (s, name) in [(&src.store, "src"), (&dst, "dst")] {
        assert!(
            matches!(
                s.get("/h/c", Some(floor - 1)),
                Err(StoreError::TooLate { .. })
            ),
            "{name}"
        );
        let g = Glob::new("/h/**").unwrap();
        assert!(
            matches!(s.wait(&g, floor), Err(StoreError::TooLate { .. })),
            "{name}"
        );
        assert!(
            matches!(s.wait(&g, 1), Err(StoreError::TooLate { .. })),
            "{name}"
        );
    }
    // Both keep trimming alike: the installed store's history moves on from the same floor.
    let mut dst = Driver {
        store: open_again(dst, d2.path(), 150),
        seq: 1_000_000,
    };
    src.seq = 1_000_000;
    for i in 0..40 {
        src.one(set("/h/a/0", -1, &format!("later {i}")));
        dst.one(set("/h/a/0", -1, &format!("later {i}")));
    }
    assert_eq!(dst.store.oldest_rev(), src.store.oldest_rev());
    for r in dst.store.oldest_rev()..=dst.store.rev() {
        assert_eq!(
            reads_at(&dst.store, r),
            reads_at(&src.store, r),
            "reads at {r}"
        );
        assert_eq!(waits_from(&dst.store, r + 1), waits_from(&src.store, r + 1));
    }
}

/// Reopens a store with another history length.
fn open_again(s: Store, dir: &std::path::Path, hist: u64) -> Store {
    drop(s);
    open(dir, hist)
}

#[test]
fn version_2_streams_still_install_without_history() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut src = Driver::new(open(d1.path(), 1000));
    sample(&mut src);
    let mut v2 = Vec::new();
    let meta = src.store.export_snapshot_version(&mut v2, 2).unwrap();
    let mut v3 = Vec::new();
    src.store.export_snapshot(&mut v3).unwrap();
    assert_ne!(v2, v3);
    let dst = open(d2.path(), 1000);
    assert_eq!(dst.install_snapshot(&mut v2.as_slice()).unwrap(), meta);
    assert_eq!(all_files(&dst, None), all_files(&src.store, None));
    // No history: it starts at the snapshot's revision.
    assert_eq!(dst.oldest_rev(), meta.rev);
    assert!(matches!(
        dst.get("/data/1/f1", Some(meta.rev - 1)),
        Err(StoreError::TooLate { .. })
    ));
    let g = Glob::new("/**").unwrap();
    assert!(matches!(
        dst.wait(&g, meta.rev),
        Err(StoreError::TooLate { .. })
    ));
    assert_eq!(dst.wait(&g, meta.rev + 1).unwrap(), None);
    // Exporting version 2 of the installed state gives the same bytes.
    let mut again = Vec::new();
    dst.export_snapshot_version(&mut again, 2).unwrap();
    assert!(again == v2);
    // The remembered command ids came along: a duplicate is answered, not applied.
    let mut dup = Driver {
        store: dst.clone(),
        seq: 1_000,
    };
    assert_eq!(
        dup.one(set("/ctl/node/X", -1, "would be applied twice")),
        ApplyResult::Ok { rev: 1 }
    );
    assert_eq!(dst.rev(), meta.rev);
    assert!(matches!(
        dst.export_snapshot_version(&mut Vec::new(), 4),
        Err(StoreError::BadSnapshot(_))
    ));
}
