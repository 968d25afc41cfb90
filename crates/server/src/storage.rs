//! The storage thread: the only writer of the store.
//!
//! redb commits block on fsync, so they run on one dedicated `std::thread`, never on a tokio
//! worker. The engine driver hands it [`Batch`]es through a bounded channel and keeps
//! working while a commit is in flight (pipelining). Batches that queue up behind a commit
//! are merged into one write transaction (group commit: one fsync for many engine steps),
//! and completions come back in submission order, so the driver can release
//! `send_after_persist` messages in persist order. The commands' results do not wait for
//! the commit: the thread hands them to the waiting writes itself as soon as they are
//! applied in memory (see [`Answer`]). A batch of decided slots only is committed with
//! [`Store::commit_deferred`]: usually left pending until the next batch (the leader's next
//! accept, 2-3 ms later under load) shares its fsync, or [`FLUSH_AFTER`] passes.

use std::path::PathBuf;
use std::thread::JoinHandle;

use doozer_paxos::CommandId;
use doozer_store::{ApplyResult, Batch, Commit, SnapshotMeta, Store};
use tokio::sync::{mpsc, oneshot};

/// Batches merged into one transaction at most.
const MAX_MERGE: usize = 256;

/// How long a deferred commit ([`Store::commit_deferred`]: decided slots only) waits for the
/// next batch to share its fsync before it is committed alone. Under load the leader's next
/// accept comes 2-3 ms after a decision.
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(5);

/// Work for the storage thread.
pub(crate) enum Job {
    /// Commit this batch (records before decided slots, in order).
    Commit(Batch),
    /// Replace the applied state with the snapshot in this file, then delete the file.
    Install(PathBuf, oneshot::Sender<Result<SnapshotMeta, String>>),
}

/// The outcome of one transaction: it covers `batches` consecutive `Job::Commit`s. It
/// carries no command results: those went to [`Answer`] before the commit.
pub(crate) struct Completion {
    pub batches: usize,
    pub result: Result<Commit, String>,
}

/// Called on the storage thread with the results of the commands a commit applied, as soon
/// as they are applied in memory and before the commit is durable: decided slots are
/// durable on a majority already, so the clients waiting for them need not wait for this
/// node's fsync too, nor for the driver task to be scheduled.
pub(crate) type Answer = Box<dyn Fn(Vec<(CommandId, ApplyResult)>) + Send>;

/// Handle to the storage thread; dropping every sender stops it.
pub(crate) struct StorageThread {
    pub jobs: mpsc::Sender<Job>,
    pub thread: Option<JoinHandle<()>>,
}

impl StorageThread {
    /// Starts the thread. Completions arrive on `done`, in order.
    pub fn start(
        store: Store,
        depth: usize,
        done: mpsc::UnboundedSender<Completion>,
        answer: Answer,
    ) -> Self {
        let (tx, rx) = mpsc::channel(depth);
        let thread = std::thread::Builder::new()
            .name("doozer-storage".into())
            .spawn(move || run(store, rx, done, answer))
            .expect("spawn the storage thread");
        StorageThread {
            jobs: tx,
            thread: Some(thread),
        }
    }
}

/// Counters of the storage thread, logged at debug level every [`STATS_EVERY`].
#[derive(Default)]
struct Stats {
    commits: u64,
    batches: u64,
    records: u64,
    slots: u64,
    cmds: u64,
    /// Commits with acceptor records only, and with decided slots only.
    records_only: u64,
    decided_only: u64,
    /// Decided-only commits left pending, and pending ones committed alone (timed out).
    deferred: u64,
    flushed: u64,
    busy: std::time::Duration,
    /// The longest commit.
    longest: std::time::Duration,
}

const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Stats {
    fn maybe_log(&mut self, since: &mut std::time::Instant) {
        let now = std::time::Instant::now();
        if now.duration_since(*since) < STATS_EVERY || self.commits == 0 {
            return;
        }
        tracing::debug!(
            commits = self.commits,
            batches = self.batches,
            records = self.records,
            slots = self.slots,
            cmds = self.cmds,
            records_only = self.records_only,
            decided_only = self.decided_only,
            deferred = self.deferred,
            flushed = self.flushed,
            busy_ms = self.busy.as_millis() as u64,
            us_per_commit = (self.busy.as_micros() as u64) / self.commits,
            longest_us = self.longest.as_micros() as u64,
            "storage stats"
        );
        *self = Stats::default();
        *since = now;
    }
}

fn run(
    store: Store,
    mut rx: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Completion>,
    answer: Answer,
) {
    let mut next: Option<Job> = None;
    let mut stats = Stats::default();
    let mut since = std::time::Instant::now();
    // Only to wait for the next job with a timeout while a commit is deferred.
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a timer runtime for the storage thread");
    loop {
        let job = match next.take() {
            Some(j) => j,
            None if store.has_pending() => {
                // The timeout is made inside: its timer needs the runtime's context.
                let recv =
                    timer.block_on(async { tokio::time::timeout(FLUSH_AFTER, rx.recv()).await });
                match recv {
                    Ok(Some(j)) => j,
                    Ok(None) | Err(_) => {
                        stats.flushed += 1;
                        if let Err(e) = store.flush() {
                            let c = Completion {
                                batches: 0,
                                result: Err(e.to_string()),
                            };
                            let _ = done.send(c);
                            return;
                        }
                        if recv.is_ok() {
                            return; // the channel closed
                        }
                        continue;
                    }
                }
            }
            None => match rx.blocking_recv() {
                Some(j) => j,
                None => return,
            },
        };
        match job {
            Job::Install(path, reply) => {
                let res = std::fs::File::open(&path)
                    .map_err(|e| format!("open snapshot {}: {e}", path.display()))
                    .and_then(|f| {
                        let mut r = std::io::BufReader::new(f);
                        store.install_snapshot(&mut r).map_err(|e| e.to_string())
                    });
                let _ = std::fs::remove_file(&path);
                let _ = reply.send(res);
            }
            Job::Commit(mut batch) => {
                let mut batches = 1;
                // Group commit: take whatever queued up meanwhile, up to a bound.
                while batches < MAX_MERGE {
                    match rx.try_recv() {
                        Ok(Job::Commit(b)) => {
                            batch.records.extend(b.records);
                            batch.decided.extend(b.decided);
                            batches += 1;
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                stats.commits += 1;
                stats.records_only += u64::from(batch.decided.is_empty());
                stats.decided_only += u64::from(batch.records.is_empty());
                stats.batches += batches as u64;
                stats.records += batch.records.len() as u64;
                stats.slots += batch.decided.len() as u64;
                stats.cmds += batch
                    .decided
                    .iter()
                    .map(|(_, v)| match v {
                        doozer_paxos::Value::Batch(c) => c.len() as u64,
                        doozer_paxos::Value::Noop => 0,
                    })
                    .sum::<u64>();
                let t = std::time::Instant::now();
                let result = if batch.records.is_empty() {
                    store.commit_deferred(batch, &answer)
                } else {
                    store.commit_with(batch, &answer)
                }
                .map_err(|e| e.to_string());
                stats.deferred += u64::from(store.has_pending());
                stats.busy += t.elapsed();
                stats.longest = stats.longest.max(t.elapsed());
                stats.maybe_log(&mut since);
                let failed = result.is_err();
                let c = Completion { batches, result };
                if done.send(c).is_err() || failed {
                    // After a failed commit nothing later may be written: the driver
                    // stops the node.
                    return;
                }
            }
        }
    }
}
