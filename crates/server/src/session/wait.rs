//! WAIT: the first event at or after a revision whose path matches a glob.
//!
//! The history in the store answers at once if such an event has already happened.
//! Otherwise the WAIT listens to the node's stream of new events. To miss nothing in
//! between, it subscribes *before* looking at the history: an event applied after that
//! look was published after the subscription, so the receiver sees it. A receiver that
//! falls behind (the node published more than the channel holds) reads the history again
//! from the first revision it has not checked, so a lagging WAIT is slow, never wrong.

use std::sync::Arc;

use doozer_proto::msg::{ErrCode, Response};
use doozer_proto::Glob;
use doozer_store::Event;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Semaphore;

use super::errors;
use crate::handle::{NodeError, NodeHandle};

/// Why a WAIT ended without an event.
enum Failed {
    Store(doozer_store::StoreError),
    Node(NodeError),
    Internal,
}

/// Answers WAIT(glob, from).
///
/// `scans` bounds how many history scans (on the blocking pool) one connection runs at once.
pub async fn wait<H: NodeHandle>(
    h: &H,
    scans: &Arc<Semaphore>,
    tag: Option<i32>,
    glob: Glob,
    from: i64,
) -> Response {
    match first_event(h, scans, Arc::new(glob), from).await {
        Ok(ev) => Response::ok(tag)
            .with_flags(ev.flags)
            .with_rev(ev.rev)
            .with_path(ev.path)
            .with_value(ev.value),
        Err(Failed::Store(e)) => errors::store_failed(tag, &e),
        Err(Failed::Node(e)) => errors::read_failed(tag, &e),
        Err(Failed::Internal) => Response::err_with_detail(tag, ErrCode::Other, "internal error"),
    }
}

async fn first_event<H: NodeHandle>(
    h: &H,
    scans: &Arc<Semaphore>,
    glob: Arc<Glob>,
    mut from: i64,
) -> Result<Event, Failed> {
    let mut events = h.events();
    loop {
        let permit = scans.acquire().await.ok();
        let found = scan_history(h, &glob, from).await?;
        drop(permit);
        if let Some(ev) = found {
            return Ok(ev);
        }
        loop {
            match events.recv().await {
                // Already covered by the history scan (or before the requested rev).
                Ok(ev) if ev.rev < from => {}
                Ok(ev) if glob.matches(&ev.path) => return Ok(ev),
                // Events arrive in rev order, so everything up to here has been checked.
                Ok(ev) => from = ev.rev.saturating_add(1),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        from,
                        "wait fell behind the event stream; rereading history"
                    );
                    break;
                }
                Err(RecvError::Closed) => return Err(Failed::Node(NodeError::Shutdown)),
            }
        }
    }
}

/// The store's answer for the history from `from` on, read on the blocking pool (it may
/// scan many events).
async fn scan_history<H: NodeHandle>(
    h: &H,
    glob: &Arc<Glob>,
    from: i64,
) -> Result<Option<Event>, Failed> {
    let store = h.store().clone();
    let glob = glob.clone();
    match tokio::task::spawn_blocking(move || store.wait(&glob, from)).await {
        Ok(r) => r.map_err(Failed::Store),
        Err(e) => {
            tracing::error!(error = %e, "history scan failed");
            Err(Failed::Internal)
        }
    }
}
