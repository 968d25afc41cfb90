//! The state shared by a node's tasks, and its [`NodeHandle`] implementation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use doozer_paxos::{Command, CommandId, NodeId, ProposeError, Slot};
use doozer_store::{ApplyResult, Event, Op, Store};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::NodeConfig;
use crate::driver::Input;
use crate::handle::{NodeError, NodeHandle, WriteResult};
use crate::peer::PeerNet;

/// How far the local state machine has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Last applied slot.
    pub slot: Slot,
    /// Store revision after it.
    pub rev: i64,
}

/// What the driver publishes about consensus, for logs and the membership task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consensus {
    /// The leader this node believes in.
    pub leader: Option<NodeId>,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// The membership governing the next slot to be decided (the tree's `/ctl/cal` takes
    /// effect `alpha` slots after it changes).
    pub in_force: doozer_paxos::Config,
}

/// What a waiting write learns: its result, or that the engine did not take its proposal
/// (the driver answers only refusals, so a taken proposal costs no reply).
#[derive(Debug)]
pub(crate) enum WriteOutcome {
    Applied(WriteResult),
    Refused(ProposeError),
}

/// A read-index answer: the slot to wait for, or why there is none.
pub(crate) type ReadAnswer = Result<Slot, String>;

/// Shared by every task of one node.
pub(crate) struct Core {
    pub id: NodeId,
    pub cluster: String,
    pub advertise: String,
    pub cfg: NodeConfig,
    /// The membership this node started its engine with (a first node: itself; a joiner:
    /// the voters it was told). It governs the slots before the store's first recorded
    /// membership takes effect.
    pub config0: doozer_paxos::Config,
    pub store: Store,
    pub driver: mpsc::Sender<Input>,
    pub writes: Mutex<HashMap<CommandId, oneshot::Sender<WriteOutcome>>>,
    pub reads: Mutex<HashMap<u64, oneshot::Sender<ReadAnswer>>>,
    pub applied: watch::Sender<Applied>,
    pub consensus: watch::Sender<Consensus>,
    /// Bumped whenever something under `/ctl/` changed (wakes the membership task).
    pub ctl_changes: watch::Sender<u64>,
    pub events: broadcast::Sender<Event>,
    pub peers: PeerNet,
    pub heard: Mutex<HashMap<NodeId, Instant>>,
    /// When this node last resumed from a stall (the process was frozen, or starved of
    /// CPU): peers are not silent for the time it did not run.
    pub stalled_at: Mutex<Option<Instant>>,
    pub seq: AtomicU64,
    /// The highest revision a local write was answered with (REV never reports less).
    pub answered_rev: AtomicI64,
    pub read_ctx: AtomicU64,
    pub stop: CancellationToken,
    /// Set when storage failed: the node no longer applies anything.
    pub failed: Mutex<Option<String>>,
}

impl Core {
    /// Notes that `peer` just sent us something (failure detection).
    pub fn heard(&self, peer: NodeId) {
        self.heard
            .lock()
            .expect("heard lock")
            .insert(peer, Instant::now());
    }

    /// A gap between two wake-ups longer than this means the node itself did not run.
    pub fn stall_threshold(&self) -> Duration {
        (self.cfg.timeout / 2).min(Duration::from_secs(1))
    }

    /// Notes that this node just resumed from a stall of `gap`.
    pub fn note_stall(&self, gap: Duration) {
        tracing::warn!(stalled_for = ?gap, "this node did not run for a while");
        *self.stalled_at.lock().expect("stalled_at lock") = Some(Instant::now());
    }

    fn check_failed(&self) -> Result<(), NodeError> {
        if let Some(e) = self.failed.lock().expect("failed lock").as_ref() {
            return Err(NodeError::Storage(e.clone()));
        }
        if self.stop.is_cancelled() {
            return Err(NodeError::Shutdown);
        }
        Ok(())
    }
}

/// Removes a pending write's waiter when the write future ends, however it ends.
struct WriteGuard<'a> {
    core: &'a Core,
    id: CommandId,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.core
            .writes
            .lock()
            .expect("writes lock")
            .remove(&self.id);
    }
}

struct ReadGuard<'a> {
    core: &'a Core,
    ctx: u64,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.core
            .reads
            .lock()
            .expect("reads lock")
            .remove(&self.ctx);
    }
}

/// Backoff between retries of a proposal the engine could not take.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((5u64 << attempt.min(6)).min(200))
}

/// Interval after which a write still unanswered is proposed again (same command id, so it
/// applies at most once): a forwarded proposal can be lost with a leader change.
const REPROPOSE_AFTER: Duration = Duration::from_secs(3);

/// The node side of [`NodeHandle`], given to client sessions. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    pub(crate) core: Arc<Core>,
}

impl Handle {
    /// The current applied slot and revision.
    pub fn applied(&self) -> Applied {
        *self.core.applied.borrow()
    }

    /// What this node knows about the leader.
    pub fn consensus(&self) -> Consensus {
        self.core.consensus.borrow().clone()
    }

    /// Default deadline for writes (`--write-deadline`).
    pub fn write_deadline(&self) -> Duration {
        self.core.cfg.write_deadline
    }

    /// Registers the waiter for the outcome of the command `id` (replacing any earlier one).
    fn waiter(&self, id: CommandId) -> oneshot::Receiver<WriteOutcome> {
        let (tx, rx) = oneshot::channel();
        self.core.writes.lock().expect("writes lock").insert(id, tx);
        rx
    }

    /// Hands `cmd` to the driver; a refusal comes back through its waiter.
    async fn propose(&self, cmd: &Command) -> Result<(), NodeError> {
        self.core.check_failed()?;
        if self
            .core
            .driver
            .send(Input::Propose(cmd.clone()))
            .await
            .is_err()
        {
            // The driver is gone: the node is stopping, perhaps because storage failed.
            self.core.check_failed()?;
            return Err(NodeError::Shutdown);
        }
        Ok(())
    }
}

fn to_write_result(r: ApplyResult) -> WriteResult {
    match r {
        ApplyResult::Ok { rev } => WriteResult::Ok { rev },
        ApplyResult::Err { rev, code } => WriteResult::Err { rev, code },
    }
}

impl NodeHandle for Handle {
    fn self_id(&self) -> String {
        self.core.id.to_string()
    }

    fn store(&self) -> &Store {
        &self.core.store
    }

    async fn write(&self, op: Op, deadline: Duration) -> Result<WriteResult, NodeError> {
        let until = tokio::time::Instant::now() + deadline;
        let r = self.write_answered(op, deadline).await?;
        let rev = match r {
            WriteResult::Ok { rev } | WriteResult::Err { rev, .. } => rev,
        };
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        self.wait_applied_rev(rev, Some(left)).await?;
        Ok(r)
    }

    fn rev(&self) -> i64 {
        self.core
            .store
            .rev()
            .max(self.core.answered_rev.load(Ordering::Acquire))
    }

    async fn write_answered(&self, op: Op, deadline: Duration) -> Result<WriteResult, NodeError> {
        let core = &*self.core;
        core.check_failed()?;
        let id = CommandId {
            node: core.id,
            seq: core.seq.fetch_add(1, Ordering::Relaxed),
        };
        // Instrumented, not entered: an entered guard held across awaits would tag whatever
        // else runs on this thread meanwhile with this write's span.
        let span = tracing::debug_span!("write", seq = id.seq);
        async move {
            let _guard = WriteGuard { core, id };
            let cmd = Command {
                id,
                data: doozer_store::codec::encode_op(&op),
            };
            let until = tokio::time::Instant::now() + deadline;
            // Whether the engine took one of the proposals: its fate is unknown from then on.
            let mut taken = false;
            let mut attempt = 0;
            let mut rx = self.waiter(id);
            self.propose(&cmd).await?;
            loop {
                let next = (tokio::time::Instant::now() + REPROPOSE_AFTER).min(until);
                let refused = match tokio::time::timeout_at(next, &mut rx).await {
                    Ok(Ok(WriteOutcome::Applied(r))) => return Ok(r),
                    Ok(Ok(WriteOutcome::Refused(e))) => e,
                    Ok(Err(_)) => {
                        core.check_failed()?;
                        return Err(NodeError::Shutdown);
                    }
                    Err(_) if next >= until => return Err(NodeError::Timeout),
                    Err(_) => {
                        // Not refused: the engine took it, and a forwarded proposal can be
                        // lost with a leader change. Same command id: the store applies it
                        // at most once.
                        tracing::debug!("write not answered yet; proposing again");
                        taken = true;
                        self.propose(&cmd).await?;
                        continue;
                    }
                };
                // The driver dropped the waiter with its refusal: a new one at once, so
                // that an earlier proposal applied meanwhile still finds it.
                rx = self.waiter(id);
                let wait = backoff(attempt);
                attempt += 1;
                if tokio::time::Instant::now() + wait >= until {
                    return Err(match refused {
                        // Proposed before: it may still be applied.
                        _ if taken => NodeError::Timeout,
                        ProposeError::Busy => NodeError::Busy,
                        ProposeError::NoLeader => NodeError::NoLeader,
                    });
                }
                tokio::time::sleep(wait).await;
                self.propose(&cmd).await?;
            }
        }
        .instrument(span)
        .await
    }

    async fn read_barrier(&self, deadline: Duration) -> Result<(), NodeError> {
        let core = &*self.core;
        core.check_failed()?;
        if core.cfg.unsafe_local_reads {
            return Ok(());
        }
        let until = tokio::time::Instant::now() + deadline;
        let mut attempt = 0;
        let slot = loop {
            let ctx = core.read_ctx.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            core.reads.lock().expect("reads lock").insert(ctx, tx);
            let _guard = ReadGuard { core, ctx };
            if core.driver.send(Input::ReadIndex(ctx)).await.is_err() {
                return Err(NodeError::Shutdown);
            }
            match tokio::time::timeout_at(until, rx).await {
                Ok(Ok(Ok(slot))) => break slot,
                Ok(Ok(Err(why))) => {
                    tracing::debug!(%why, "read index refused; retrying");
                    let wait = backoff(attempt);
                    attempt += 1;
                    if tokio::time::Instant::now() + wait >= until {
                        return Err(NodeError::NoLeader);
                    }
                    tokio::time::sleep(wait).await;
                }
                Ok(Err(_)) => return Err(NodeError::Shutdown),
                Err(_) => return Err(NodeError::Timeout),
            }
        };
        let mut w = core.applied.subscribe();
        let res = tokio::time::timeout_at(until, w.wait_for(|a| a.slot >= slot)).await;
        match res {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(NodeError::Shutdown),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    async fn wait_applied_rev(
        &self,
        rev: i64,
        deadline: Option<Duration>,
    ) -> Result<(), NodeError> {
        let mut w = self.core.applied.subscribe();
        let fut = w.wait_for(|a| a.rev >= rev);
        let res = match deadline {
            Some(d) => tokio::time::timeout(d, fut)
                .await
                .map_err(|_| NodeError::Timeout)?,
            None => fut.await,
        };
        res.map(|_| ()).map_err(|_| NodeError::Shutdown)
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.core.events.subscribe()
    }
}

/// Applies an apply result from the store to the waiting write, if any.
pub(crate) fn answer_write(core: &Core, id: CommandId, r: ApplyResult) {
    if id.node != core.id {
        return;
    }
    if let Some(tx) = core.writes.lock().expect("writes lock").remove(&id) {
        core.answered_rev.fetch_max(r.rev(), Ordering::AcqRel);
        let _ = tx.send(WriteOutcome::Applied(to_write_result(r)));
    }
}
