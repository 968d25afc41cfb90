//! The interface between client sessions and the node core.
//!
//! `session.rs` (the Doozer client protocol) only talks to the node through [`NodeHandle`],
//! so each side can be built and tested on its own. The node core implements it.

use std::time::Duration;

use doozer_proto::msg::ErrCode;
use doozer_store::{Event, Op, Store};

/// Why the node could not complete a request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request's deadline passed. For a write, its fate is unknown.
    #[error("timed out")]
    Timeout,
    /// No leader could be reached (lost quorum, election under way).
    #[error("no leader")]
    NoLeader,
    /// The node is shutting down.
    #[error("node is shutting down")]
    Shutdown,
    /// Too many requests in flight.
    #[error("busy")]
    Busy,
    /// Storage failed (disk full, I/O error): the request was not applied here.
    #[error("storage: {0}")]
    Storage(String),
}

/// The outcome of an applied write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// Applied at this revision (the file's new rev for SET).
    Ok { rev: i64 },
    /// Consumed revision `rev` but failed with a Doozer error (REV_MISMATCH, ISDIR, NOTDIR...).
    Err { rev: i64, code: ErrCode },
}

/// What a session needs from the node. Cheap to clone.
#[allow(async_fn_in_trait)]
pub trait NodeHandle: Clone + Send + Sync + 'static {
    /// This node's id (16 base32 chars), for SELF.
    fn self_id(&self) -> String;
    /// The local store, for reads (already applied state).
    fn store(&self) -> &Store;
    /// Proposes `op` through consensus (forwarded to the leader if needed) and returns once it
    /// is decided, durable on a majority and applied locally (the local store shows it).
    fn write(
        &self,
        op: Op,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<WriteResult, NodeError>> + Send;
    /// [`NodeHandle::write`] that returns as soon as the result is known: decided, durable
    /// on a majority and applied in this node's memory, but perhaps not yet readable from
    /// the local store (its commit is still being flushed). Reads through
    /// [`NodeHandle::read_barrier`] or at its revision wait for it, and [`NodeHandle::rev`]
    /// already counts it. Client sessions answer from here.
    fn write_answered(
        &self,
        op: Op,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<WriteResult, NodeError>> + Send {
        self.write(op, deadline)
    }
    /// The revision REV reports: the store's, or a later one this node has already answered
    /// a write with (so a client never sees REV below its own write).
    fn rev(&self) -> i64 {
        self.store().rev()
    }
    /// Linearizable read barrier: returns once this node has applied everything decided
    /// before the call (read index confirmed by a quorum).
    fn read_barrier(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<(), NodeError>> + Send;
    /// Waits until the local store has applied revision `rev` (for reads at a future rev).
    fn wait_applied_rev(
        &self,
        rev: i64,
        deadline: Option<Duration>,
    ) -> impl std::future::Future<Output = Result<(), NodeError>> + Send;
    /// Subscribes to events applied from now on (for WAIT). Lagging receivers see
    /// `RecvError::Lagged` and must re-read from the store's history.
    fn events(&self) -> tokio::sync::broadcast::Receiver<Event>;
}
