//! An in-memory stand-in for the node core, for testing sessions: a real
//! `doozer_store::Store` in a temporary directory, with every write applied directly as
//! its own decided slot (no consensus), and knobs to hold, fail or lag things.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doozer_paxos::{Command, CommandId, NodeId, Value};
use doozer_store::{Batch, Event, Op, Store, StoreOptions};
use tokio::sync::{broadcast, watch};

use crate::handle::{NodeError, NodeHandle, WriteResult};

/// How the fake answers read barriers or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Work normally.
    None,
    /// Fail with `NodeError::Timeout`.
    Timeout,
    /// Fail with `NodeError::NoLeader`.
    NoLeader,
}

impl Failure {
    fn check(self) -> Result<(), NodeError> {
        match self {
            Failure::None => Ok(()),
            Failure::Timeout => Err(NodeError::Timeout),
            Failure::NoLeader => Err(NodeError::NoLeader),
        }
    }
}

struct Inner {
    store: Store,
    _dir: tempfile::TempDir,
    /// Last slot committed; the lock serialises commits as the storage thread does.
    slot: Mutex<u64>,
    applied: watch::Sender<i64>,
    events: broadcast::Sender<Event>,
    /// While true, writes wait (to make responses come back out of order).
    hold_writes: watch::Sender<bool>,
    write_failure: Mutex<Failure>,
    barrier_failure: Mutex<Failure>,
    /// Instead of publishing each event, overflow every subscriber with junk so that it
    /// sees `Lagged` and has to reread the history.
    lag_subscribers: AtomicBool,
    event_capacity: usize,
    pub barriers: AtomicU64,
    pub writes: AtomicU64,
}

/// The fake node. Cheap to clone.
#[derive(Clone)]
pub struct FakeNode(Arc<Inner>);

impl FakeNode {
    /// A fresh node at rev 0 keeping `hist_revs` of history.
    pub fn new(hist_revs: u64) -> FakeNode {
        Self::with_event_capacity(hist_revs, 1024)
    }

    /// Like [`FakeNode::new`] with a given capacity of the event channel.
    pub fn with_event_capacity(hist_revs: u64, event_capacity: usize) -> FakeNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &dir.path().join("store.redb"),
            StoreOptions {
                hist_revs,
                ..StoreOptions::default()
            },
        )
        .expect("open store");
        let (events, _) = broadcast::channel(event_capacity);
        FakeNode(Arc::new(Inner {
            applied: watch::channel(store.rev()).0,
            store,
            _dir: dir,
            slot: Mutex::new(0),
            events,
            hold_writes: watch::channel(false).0,
            write_failure: Mutex::new(Failure::None),
            barrier_failure: Mutex::new(Failure::None),
            lag_subscribers: AtomicBool::new(false),
            event_capacity,
            barriers: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }))
    }

    /// Applies `op` at once as the next slot (what a decided write does), publishing its
    /// events. Synchronous, so a test can apply many without letting other tasks run.
    pub fn apply(&self, op: Op) -> WriteResult {
        let mut slot = self.0.slot.lock().expect("slot lock");
        *slot += 1;
        let cmd = Command {
            id: CommandId {
                node: NodeId(1),
                seq: *slot,
            },
            data: doozer_store::codec::encode_op(&op),
        };
        let commit = self
            .0
            .store
            .commit(Batch {
                records: Vec::new(),
                decided: vec![(*slot, Value::Batch(vec![cmd]))],
            })
            .expect("commit");
        let lag = self.0.lag_subscribers.load(Ordering::SeqCst);
        for ev in commit.events {
            if lag {
                for _ in 0..=self.0.event_capacity {
                    let _ = self.0.events.send(Event {
                        rev: 0,
                        path: "/junk".into(),
                        value: Default::default(),
                        flags: 0,
                    });
                }
            } else {
                let _ = self.0.events.send(ev);
            }
        }
        self.0.applied.send_replace(commit.rev);
        let (_, res) = commit.results.into_iter().next().expect("one result");
        match res {
            doozer_store::ApplyResult::Ok { rev } => WriteResult::Ok { rev },
            doozer_store::ApplyResult::Err { rev, code } => WriteResult::Err { rev, code },
        }
    }

    /// Applies `n` NOPs.
    pub fn nops(&self, n: usize) {
        for _ in 0..n {
            self.apply(Op::Nop);
        }
    }

    /// Makes writes wait (`true`) or go (`false`).
    pub fn hold_writes(&self, hold: bool) {
        self.0.hold_writes.send_replace(hold);
    }

    /// How writes fail from now on.
    pub fn fail_writes(&self, f: Failure) {
        *self.0.write_failure.lock().expect("lock") = f;
    }

    /// How read barriers fail from now on.
    pub fn fail_barriers(&self, f: Failure) {
        *self.0.barrier_failure.lock().expect("lock") = f;
    }

    /// From now on, events reach subscribers only as lag (see `Inner::lag_subscribers`).
    pub fn lag_subscribers(&self, on: bool) {
        self.0.lag_subscribers.store(on, Ordering::SeqCst);
    }

    /// How many WAITs (or others) listen to events now.
    pub fn subscribers(&self) -> usize {
        self.0.events.receiver_count()
    }

    /// Read barriers passed so far.
    pub fn barriers(&self) -> u64 {
        self.0.barriers.load(Ordering::SeqCst)
    }

    /// Writes started so far (held ones included).
    pub fn writes(&self) -> u64 {
        self.0.writes.load(Ordering::SeqCst)
    }
}

impl NodeHandle for FakeNode {
    fn self_id(&self) -> String {
        "HZAVFJHCLRH5WCUT".into()
    }

    fn store(&self) -> &Store {
        &self.0.store
    }

    async fn write(&self, op: Op, _deadline: Duration) -> Result<WriteResult, NodeError> {
        self.0.writes.fetch_add(1, Ordering::SeqCst);
        let mut hold = self.0.hold_writes.subscribe();
        hold.wait_for(|h| !*h)
            .await
            .map_err(|_| NodeError::Shutdown)?;
        let failure = *self.0.write_failure.lock().expect("lock");
        failure.check()?;
        Ok(self.apply(op))
    }

    async fn read_barrier(&self, _deadline: Duration) -> Result<(), NodeError> {
        let failure = *self.0.barrier_failure.lock().expect("lock");
        failure.check()?;
        self.0.barriers.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn wait_applied_rev(
        &self,
        rev: i64,
        _deadline: Option<Duration>,
    ) -> Result<(), NodeError> {
        let mut w = self.0.applied.subscribe();
        w.wait_for(|r| *r >= rev)
            .await
            .map(|_| ())
            .map_err(|_| NodeError::Shutdown)
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.0.events.subscribe()
    }
}
