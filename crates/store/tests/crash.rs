//! Crash safety for real: a child process (this test binary, re-executed) commits in a loop
//! and reports each commit once `commit` has returned; the parent SIGKILLs it at random
//! moments, reopens the store, and checks it is consistent and holds every reported commit.
//! `CRASH_RUNS` sets the number of kills (default 20), `SEED` the random kill times.
//! A second kill test has the child leave each decision pending (`commit_deferred`), as the
//! server's storage thread does, and checks that a lost one is still an accept on disk.
//! Two more tests fill the disk (a file size limit) and make the file immutable (read-only
//! even for root), and check the typed errors and recovery.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command as Proc, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ballot, check_log, check_tree, leader_batch, value_for, Immutable};
use doozer_paxos::Record;
use doozer_proto::Glob;
use doozer_store::{Batch, Store, StoreError, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHILD_DIR: &str = "DOOZER_STORE_CRASH_CHILD";
const CHILD_FSIZE: &str = "DOOZER_STORE_CRASH_FSIZE";
/// Set in a child under a file size limit: no checkpoints, so that the log grows to the limit.
const CHILD_NO_CKPT: &str = "DOOZER_STORE_CRASH_NO_CKPT";
/// Set in a child that accepts each group of slots in one commit, then decides it with
/// `commit_deferred` (left pending until the next group's accepts commit it).
const CHILD_DEFER: &str = "DOOZER_STORE_CRASH_DEFER";

fn opts() -> StoreOptions {
    StoreOptions {
        hist_revs: 300,
        retain_slots: 50,
        cache_bytes: 16 << 20,
        // Checkpoints every few hundred revisions, so that kills land in them too.
        checkpoint_revs: 400,
        // Small log tables, so that kills land in dropping them too.
        log_gen_slots: 16,
    }
}

fn store_path(dir: &Path) -> std::path::PathBuf {
    dir.join("doozer.redb")
}

/// The child: commit 1-3 slots per transaction with the acceptor records a leader would
/// write, and print `done <last slot>` after each commit returns.
fn child(dir: &str) {
    if let Some(limit) = std::env::var(CHILD_FSIZE)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        // SAFETY: plain libc calls with valid arguments, before any other thread of ours runs.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
    }
    let mut o = opts();
    if std::env::var_os(CHILD_NO_CKPT).is_some() {
        o.checkpoint_revs = u64::MAX;
    }
    let store = Store::open(&store_path(Path::new(dir)), o).expect("child open");
    let mut out = std::io::stdout().lock();
    if std::env::var_os(CHILD_DEFER).is_some() {
        return child_deferring(&store, &mut out);
    }
    loop {
        let first = store.applied_slot() + 1;
        let n = 1 + first % 3;
        let last = first + n - 1;
        match store.commit(leader_batch(first, last)) {
            Ok(_) => writeln!(out, "done {last}").unwrap(),
            Err(e) => {
                let kind = match e {
                    StoreError::DiskFull(_) => "diskfull",
                    _ => "other",
                };
                writeln!(out, "error {kind} {e}").unwrap();
                // After a failed write the store refuses more until reopened.
                let again = store.commit(Batch {
                    records: vec![],
                    decided: vec![],
                });
                let poisoned = matches!(again, Err(StoreError::Poisoned));
                writeln!(out, "error then poisoned={poisoned}").unwrap();
                out.flush().unwrap();
                return;
            }
        }
        out.flush().unwrap();
    }
}

/// The deferring child: prints `accepted <last>` once a group's accepts are durable, and
/// `done <last>` for the group before it, whose pending decision that commit made durable.
fn child_deferring(store: &Store, out: &mut impl Write) {
    let mut before: Option<u64> = None;
    loop {
        let first = store.applied_slot() + 1;
        let last = first + first % 3;
        let mut records = vec![Record::Promise(ballot(last))];
        records.extend((first..=last).map(|slot| Record::Accept {
            slot,
            ballot: ballot(last),
            value: value_for(slot),
        }));
        store
            .commit(Batch {
                records,
                decided: vec![],
            })
            .expect("accepts");
        if let Some(b) = before {
            writeln!(out, "done {b}").unwrap();
        }
        writeln!(out, "accepted {last}").unwrap();
        out.flush().unwrap();
        let decided = (first..=last).map(|s| (s, value_for(s))).collect();
        store
            .commit_deferred(
                Batch {
                    records: vec![],
                    decided,
                },
                |_| {},
            )
            .expect("decision");
        assert!(
            store.has_pending(),
            "a decision of accepted slots is deferred"
        );
        assert_eq!(store.applied_slot(), last, "readers see it at once");
        before = Some(last);
    }
}

/// Entry point of the child process; does nothing in a normal test run.
#[test]
fn crash_child_entry() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child(&dir);
    }
}

struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a child writing to `dir`; its stdout lines arrive on the returned channel.
fn spawn(dir: &Path, fsize: Option<u64>) -> (Kid, mpsc::Receiver<String>) {
    spawn_with(dir, fsize, false)
}

fn spawn_with(dir: &Path, fsize: Option<u64>, defer: bool) -> (Kid, mpsc::Receiver<String>) {
    let mut cmd = Proc::new(std::env::current_exe().unwrap());
    cmd.args([
        "crash_child_entry",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(f) = fsize {
        cmd.env(CHILD_FSIZE, f.to_string()).env(CHILD_NO_CKPT, "1");
    }
    if defer {
        cmd.env(CHILD_DEFER, "1");
    }
    let mut child = cmd.spawn().expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ours = |l: &String| {
            l.starts_with("done ") || l.starts_with("error ") || l.starts_with("accepted ")
        };
        // libtest prints its own lines around ours.
        for line in BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(ours)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Kid(child), rx)
}

fn done_slot(line: &str) -> Option<u64> {
    line.strip_prefix("done ").and_then(|n| n.parse().ok())
}

/// Waits for the child's first line, lets it run a random while (up to 150 ms), SIGKILLs
/// it, and hands `note` every line it printed, those still in the pipe included.
fn kill_at_random(
    (mut kid, rx): (Kid, mpsc::Receiver<String>),
    rng: &mut StdRng,
    mut note: impl FnMut(&str),
) {
    let first = rx.recv_timeout(Duration::from_secs(60));
    note(&first.expect("child made no commit"));
    let kill_at = Instant::now() + Duration::from_micros(rng.gen_range(0..150_000));
    while let Some(left) = kill_at.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => note(&line),
            Err(_) => break,
        }
    }
    kid.0.kill().unwrap(); // SIGKILL
    kid.0.wait().unwrap();
    for line in rx.iter() {
        note(&line);
    }
}

/// Reopens the store and checks it against a replay of slots `1..=applied`; returns applied.
fn check(dir: &Path, reported: u64) -> u64 {
    let store = Store::open(&store_path(dir), opts()).expect("reopen after crash");
    check_log(&store, reported, opts().retain_slots)
}

#[test]
fn sigkill_at_random_moments_loses_no_commit() {
    let runs: u32 = common::env_or("CRASH_RUNS", 20);
    let seed: u64 = common::env_or("SEED", 0xC4A5);
    eprintln!("crash test: {runs} runs, SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut applied = 0;
    for run in 0..runs {
        let mut reported = 0;
        kill_at_random(spawn(dir.path(), None), &mut rng, |line| {
            reported = reported.max(done_slot(line).unwrap_or(0));
        });
        assert!(reported > 0, "run {run}: no done line");
        let now = check(dir.path(), reported);
        assert!(
            now >= applied,
            "run {run}: applied went back from {applied} to {now}"
        );
        applied = now;
    }
    assert!(applied > 0);
    eprintln!("crash test: {applied} slots applied over {runs} kills");
}

fn accepted_slot(line: &str) -> Option<u64> {
    line.strip_prefix("accepted ").and_then(|n| n.parse().ok())
}

#[test]
fn sigkill_with_deferred_decisions_loses_no_accept() {
    let runs: u32 = common::env_or("CRASH_RUNS", 20);
    let seed: u64 = common::env_or("SEED", 0xDEF3);
    eprintln!("deferred crash test: {runs} runs, SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (mut applied, mut relearn) = (0, 0);
    for run in 0..runs {
        let (mut done, mut accepted) = (0, 0);
        kill_at_random(spawn_with(dir.path(), None, true), &mut rng, |line| {
            done = done.max(done_slot(line).unwrap_or(0));
            accepted = accepted.max(accepted_slot(line).unwrap_or(0));
        });
        let store = Store::open(&store_path(dir.path()), opts()).expect("reopen after crash");
        // Every decision a later commit covered is applied, the tree is the replay's.
        let now = check_tree(&store, done);
        assert!(
            now >= applied,
            "run {run}: applied went back from {applied} to {now}"
        );
        // A decision lost with its pending transaction is still an accept here, with its
        // value: the engine learns it again.
        let st = store.load_engine_state(50).unwrap();
        assert_eq!(st.applied, now);
        for slot in now + 1..=accepted {
            let got = st.accepted.get(&slot).map(|(_, v)| v);
            assert_eq!(
                got,
                Some(&value_for(slot)),
                "run {run}: slot {slot} accepted"
            );
        }
        relearn += u64::from(now < accepted);
        applied = now;
    }
    assert!(applied > 0);
    eprintln!(
        "deferred crash test: {applied} slots applied, {relearn} kills lost a pending decision"
    );
}

#[test]
fn disk_full_is_a_typed_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A first short run to create the file, then a run under a file size limit.
    {
        let (mut kid, rx) = spawn(dir.path(), None);
        rx.recv_timeout(Duration::from_secs(60))
            .expect("child made no commit");
        kid.0.kill().unwrap();
        kid.0.wait().unwrap();
    }
    let size = std::fs::metadata(store_path(dir.path())).unwrap().len();
    let (mut kid, rx) = spawn(dir.path(), Some(size + (4 << 20)));
    let mut reported = 0;
    let mut error = None;
    for line in rx.iter() {
        if let Some(s) = done_slot(&line) {
            reported = s;
        } else {
            error = Some(line);
            break;
        }
    }
    let then = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("no line after the error");
    kid.0.wait().unwrap();
    let error = error.expect("the child stopped without an error");
    assert!(error.starts_with("error diskfull"), "{error}");
    assert_eq!(then, "error then poisoned=true");
    let applied = check(dir.path(), reported);
    // Without the limit the store goes on.
    let s = Store::open(&store_path(dir.path()), opts()).unwrap();
    let r = s
        .commit(Batch {
            records: vec![],
            decided: vec![(applied + 1, value_for(applied + 1))],
        })
        .unwrap();
    assert_eq!(r.applied, applied + 1);
}

#[test]
fn read_only_file_is_a_typed_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let s = Store::open(&path, opts()).unwrap();
    s.commit(Batch {
        records: vec![
            Record::Promise(ballot(1)),
            Record::Accept {
                slot: 2,
                ballot: ballot(1),
                value: value_for(2),
            },
        ],
        decided: vec![(1, value_for(1))],
    })
    .unwrap();
    let Some(flag) = Immutable::set(&path) else {
        eprintln!("skipped: cannot make {} immutable here", path.display());
        return;
    };
    // The next write fails with EPERM: read-only, and the store refuses further writes.
    let err = s
        .commit(Batch {
            records: vec![],
            decided: vec![(2, value_for(2))],
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly(_)), "{err:?}");
    let again = s.commit(Batch::default()).unwrap_err();
    assert!(matches!(again, StoreError::Poisoned), "{again:?}");
    // Reads still answer from the last commit.
    assert_eq!(s.applied_slot(), 1);
    assert_eq!(
        s.walk(&Glob::new("/**").unwrap(), 0, None).unwrap().0,
        "/c/1/31"
    );
    drop(s);
    // Opening for writing is refused with the same typed error.
    let err = Store::open(&path, opts()).err().unwrap();
    assert!(matches!(err, StoreError::ReadOnly(_)), "{err:?}");
    drop(flag);
    assert_eq!(check(dir.path(), 1), 1);
}
