//! Store throughput: group commits of 100-byte sets (applied sets/s and fsyncs/s for batches of
//! 1, 16 and 256 commands per commit), then point reads on a store of many files, then the
//! CPU time of a checkpoint's export (`BENCH_EXPORT_FILES` files, default 64000, and
//! `BENCH_EXPORT_CHANGES` overwrites in the history, default 100000: the 64-client bench).
//!
//! `cargo bench -p doozer-store --bench store`. Environment: `BENCH_FILES` (default 1000000)
//! sets the size of the read store (0: no read test), `BENCH_SECS` (default 3) the time per
//! write measurement, `BENCH_BATCHES` (default `1,16,256`) the batch sizes.
//! `BENCH_RETAIN` sets `retain_slots` of the write stores (0: decided values are not kept);
//! `BENCH_ACCEPT=1` makes each commit also accept the next slot's value, as a leader's do (the
//! value is then stored at accept time and deciding it only marks it decided).
//! Each line also gives the CPU time per operation, the bytes written per commit and the
//! share of time spent waiting for a CPU, which mean more than wall time on a shared machine.

use std::time::Instant;

use doozer_paxos::{Ballot, Command, CommandId, NodeId, Record, Value};
use doozer_store::codec::encode_op;
use doozer_store::{Batch, Op, Store, StoreOptions};
use rand::{Rng, SeedableRng};

fn env<T: std::str::FromStr>(k: &str, default: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn slot_of(first_seq: u64, n: usize, path: impl Fn(u64) -> String) -> Value {
    let value = bytes::Bytes::from(vec![b'v'; 100]);
    Value::Batch(
        (0..n as u64)
            .map(|i| {
                let seq = first_seq + i;
                let op = Op::Set {
                    path: path(seq),
                    rev: -1,
                    value: value.clone(),
                };
                Command {
                    id: CommandId {
                        node: NodeId(1),
                        seq,
                    },
                    data: encode_op(&op),
                }
            })
            .collect(),
    )
}

/// Commits of `batch` sets of new 100-byte files spread over `spread` directories.
fn writes(batch: usize, spread: u64, secs: f64) {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        retain_slots: env("BENCH_RETAIN", StoreOptions::default().retain_slots),
        ..StoreOptions::default()
    };
    let store = Store::open(&dir.path().join("bench.redb"), opts).unwrap();
    // Prepare the values outside the timed loop: encoding is the proposer's work.
    let slots: Vec<Value> = (0..64)
        .map(|s| {
            slot_of(s * batch as u64, batch, |seq| {
                format!("/bench/{}/{}", seq % spread, seq)
            })
        })
        .collect();
    let (mut commits, mut sets, mut seq) = (0u64, 0u64, 1_000_000u64);
    let cpu0 = thread_cpu();
    let queued0 = runqueue_wait();
    let io0 = written_bytes();
    let accept = env("BENCH_ACCEPT", 0) == 1;
    let ballot = Ballot {
        round: 1,
        node: NodeId(1),
    };
    let mut next = |n: u64| {
        let mut value = slots[(n % 64) as usize].clone();
        if let Value::Batch(cmds) = &mut value {
            for c in cmds.iter_mut() {
                seq += 1;
                c.id.seq = seq; // fresh ids: no duplicate short-cuts
            }
        }
        value
    };
    let mut accepted = next(0);
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let slot = store.applied_slot() + 1;
        let b = if accept {
            // As a leader does: accept the next slot's value, decide the one accepted before.
            let value = next(commits + 1);
            let decided = std::mem::replace(&mut accepted, value.clone());
            Batch {
                records: vec![Record::Accept {
                    slot: slot + 1,
                    ballot,
                    value,
                }],
                decided: vec![(slot, decided)],
            }
        } else {
            Batch {
                records: vec![],
                decided: vec![(slot, next(commits))],
            }
        };
        store.commit(b).unwrap();
        commits += 1;
        sets += batch as u64;
    }
    let t = start.elapsed().as_secs_f64();
    let cpu = thread_cpu() - cpu0;
    let queued = runqueue_wait() - queued0;
    let io = written_bytes() - io0;
    println!(
        "write batch {batch:>3}, {spread:>2} dirs: {:>9.0} sets/s  {:>7.0} fsyncs/s  ({sets} sets in {commits} commits, {t:.1} s; {:.1} us CPU/set, {:.0} KiB written/commit; {:.0}% of the time waiting for a CPU, {:.0} sets/s without that wait)",
        sets as f64 / t,
        commits as f64 / t,
        cpu * 1e6 / sets as f64,
        io as f64 / 1024.0 / commits as f64,
        queued * 100.0 / t,
        sets as f64 / (t - queued)
    );
}

/// Sets per commit when a bench fills a store.
const FILL_PER: u64 = 20_000;

/// Commits `sets` sets of 100-byte values (the i-th to `path(i)`), [`FILL_PER`] a commit.
fn fill(store: &Store, sets: u64, path: impl Fn(u64) -> String + Copy) {
    let mut i = 0;
    while i < sets {
        let n = FILL_PER.min(sets - i) as usize;
        let slot = store.applied_slot() + 1;
        store
            .commit(Batch {
                records: vec![],
                decided: vec![(slot, slot_of(i, n, path))],
            })
            .unwrap();
        i += n as u64;
    }
}

/// A checkpoint's work: exporting a store of `files` 100-byte files, `changes` of them
/// overwritten since (so the history holds that many undo records), to a sink.
fn export(files: u64, changes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        checkpoint_revs: u64::MAX,
        ..StoreOptions::default()
    };
    let store = Store::open(&dir.path().join("bench.redb"), opts).unwrap();
    let path = |i: u64| format!("/bench/c{}/k{}", i % 64, (i / 64) % files.div_ceil(64));
    let cpu = thread_cpu();
    fill(&store, files + changes, path);
    println!(
        "{files} creates then {changes} changes, in commits of {FILL_PER}: {:.2} us of CPU \
         per set",
        (thread_cpu() - cpu) * 1e6 / (files + changes) as f64
    );
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..3 {
        let mut out = Counting(0);
        let cpu = thread_cpu();
        store.export_snapshot(&mut out).unwrap();
        best = best.min(thread_cpu() - cpu);
        bytes = out.0;
    }
    println!(
        "export of {files} files and {changes} changes: {:.0} ms of CPU (best of 3), {} MB, \
         {:.2} us per item",
        best * 1e3,
        bytes >> 20,
        best * 1e6 / (files + changes) as f64
    );
}

/// A sink that counts what it is given.
struct Counting(u64);

impl std::io::Write for Counting {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn reads(files: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.redb"), StoreOptions::default()).unwrap();
    let path = |i: u64| format!("/r/{}/{}", i % 1000, i);
    let start = Instant::now();
    fill(&store, files, path);
    let t = start.elapsed().as_secs_f64();
    println!(
        "built {files} files in {t:.1} s ({:.0} sets/s in commits of {FILL_PER})",
        files as f64 / t
    );

    for threads in [1u64, 2] {
        let total = 2_000_000u64;
        // Random keys, made before the clock starts.
        let keys: Vec<Vec<String>> = (0..threads)
            .map(|th| {
                let mut rng = rand::rngs::StdRng::seed_from_u64(th);
                (0..100_000)
                    .map(|_| path(rng.gen_range(0..files)))
                    .collect()
            })
            .collect();
        let start = Instant::now();
        let (cpu, queued) = std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .iter()
                .map(|keys| {
                    let store = store.clone();
                    s.spawn(move || {
                        let (cpu0, queued0) = (thread_cpu(), runqueue_wait());
                        for k in 0..total / threads {
                            let (v, rev) = store.get(&keys[(k % 100_000) as usize], None).unwrap();
                            assert!(rev > 0 && v.len() == 100);
                        }
                        (thread_cpu() - cpu0, runqueue_wait() - queued0)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold((0.0, 0.0), |(c, q), (c1, q1)| (c + c1, q + q1))
        });
        let t = start.elapsed().as_secs_f64();
        println!(
            "point reads, {threads} thread(s): {:>9.0} reads/s  ({:.2} us CPU/read, {:.0} reads per CPU-second; {:.0}% of the threads' time waiting for a CPU)",
            total as f64 / t,
            cpu * 1e6 / total as f64,
            total as f64 / cpu,
            queued * 100.0 / (t * threads as f64)
        );
    }
}

/// CPU seconds used by this thread (the machine may be shared: wall time alone misleads).
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Seconds this thread has spent runnable but waiting for a CPU (`/proc/thread-self/schedstat`,
/// second field), 0 if unknown: on a shared machine, the part of wall time others took.
fn runqueue_wait() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 * 1e-9)
}

/// Bytes this process has written to storage so far (`/proc/self/io`), 0 if unknown.
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = if quick { 0.2 } else { env("BENCH_SECS", 3.0) };
    let batches: Vec<usize> = std::env::var("BENCH_BATCHES")
        .ok()
        .map(|v| v.split(',').filter_map(|b| b.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 256]);
    for &batch in &batches {
        writes(batch, 64, secs);
    }
    if batches.contains(&256) {
        writes(256, 1, secs);
    }
    let files = if quick {
        10_000
    } else {
        env("BENCH_FILES", 1_000_000)
    };
    if files > 0 {
        reads(files);
    }
    let (ef, ec) = if quick {
        (2_000, 3_000)
    } else {
        (
            env("BENCH_EXPORT_FILES", 64_000),
            env("BENCH_EXPORT_CHANGES", 100_000),
        )
    };
    export(ef, ec);
}
