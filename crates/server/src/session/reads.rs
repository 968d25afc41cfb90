//! GET, GETDIR, STAT and WALK: which snapshot to read, then the read itself.
//!
//! Without a rev a read is linearizable: it first passes the node's read barrier (the
//! node has applied everything decided before the request arrived) and then reads the
//! current state. With a rev it reads the snapshot at that revision, after waiting for the
//! node to reach it if it is in the future; a rev older than the history is TOO_LATE (from
//! the store).

use std::sync::Arc;

use doozer_proto::msg::{ErrCode, Response, FLAG_SET};
use doozer_proto::Glob;
use doozer_store::{Store, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::SessionConfig;
use super::errors;
use crate::handle::NodeHandle;

/// Waits until the node may answer a read at `rev`; `Err` is the answer to send instead.
async fn ready_for<H: NodeHandle>(
    h: &H,
    cfg: &SessionConfig,
    tag: Option<i32>,
    rev: Option<i64>,
) -> Result<(), Response> {
    let res = match rev {
        None => h.read_barrier(cfg.deadline).await,
        Some(r) if r > h.store().rev() => h.wait_applied_rev(r, None).await,
        Some(_) => Ok(()),
    };
    res.map_err(|e| {
        tracing::debug!(error = %e, "read not possible");
        errors::read_failed(tag, &e)
    })
}

/// Runs `read` against the store. Should the store not have reached the rev yet (the node
/// said it had: the two are updated one after the other), waits for it and reads again.
async fn read<H: NodeHandle, T>(
    h: &H,
    tag: Option<i32>,
    read: impl Fn(&Store) -> Result<T, StoreError>,
) -> Result<T, Response> {
    loop {
        match read(h.store()) {
            Ok(v) => return Ok(v),
            Err(StoreError::FutureRev { rev, .. }) => h
                .wait_applied_rev(rev, None)
                .await
                .map_err(|e| errors::read_failed(tag, &e))?,
            Err(e) => return Err(errors::store_failed(tag, &e)),
        }
    }
}

/// GET: the value and rev of a file; a missing file is rev 0 with an empty value.
pub async fn get<H: NodeHandle>(
    h: &H,
    cfg: &SessionConfig,
    value_reads: &Arc<Semaphore>,
    tag: Option<i32>,
    path: String,
    rev: Option<i64>,
) -> (Response, Option<OwnedSemaphorePermit>) {
    if let Err(r) = ready_for(h, cfg, tag, rev).await {
        return (r, None);
    }
    // The semaphore is never closed; without a permit the read just goes ungated.
    let held = value_reads.clone().acquire_owned().await.ok();
    match read(h, tag, |s| s.get(&path, rev)).await {
        Ok((value, rev)) => (Response::ok(tag).with_rev(rev).with_value(value), held),
        Err(r) => (r, None),
    }
}

/// GETDIR: the name of the `offset`-th entry of a directory.
pub async fn getdir<H: NodeHandle>(
    h: &H,
    cfg: &SessionConfig,
    tag: Option<i32>,
    path: String,
    offset: i32,
    rev: Option<i64>,
) -> Response {
    if let Err(r) = ready_for(h, cfg, tag, rev).await {
        return r;
    }
    match read(h, tag, |s| s.getdir(&path, offset, rev)).await {
        Ok(name) => Response::ok(tag).with_path(name),
        Err(r) => r,
    }
}

/// STAT: a file's rev and length, a directory's -2 and entry count, or 0 and 0.
pub async fn stat<H: NodeHandle>(
    h: &H,
    cfg: &SessionConfig,
    tag: Option<i32>,
    path: String,
    rev: Option<i64>,
) -> Response {
    if let Err(r) = ready_for(h, cfg, tag, rev).await {
        return r;
    }
    match read(h, tag, |s| s.stat(&path, rev)).await {
        Ok((rev, len)) => Response::ok(tag).with_rev(rev).with_len(len),
        Err(r) => r,
    }
}

/// WALK: the `offset`-th file matching `glob`, in sorted depth-first order. A walk visits
/// much of the tree, so it runs on the blocking pool, off the async workers.
pub async fn walk<H: NodeHandle>(
    h: &H,
    cfg: &SessionConfig,
    value_reads: &Arc<Semaphore>,
    tag: Option<i32>,
    glob: Glob,
    offset: i32,
    rev: Option<i64>,
) -> (Response, Option<OwnedSemaphorePermit>) {
    if let Err(r) = ready_for(h, cfg, tag, rev).await {
        return (r, None);
    }
    let held = value_reads.clone().acquire_owned().await.ok();
    let glob = Arc::new(glob);
    loop {
        let store = h.store().clone();
        let g = glob.clone();
        let found = tokio::task::spawn_blocking(move || store.walk(&g, offset, rev)).await;
        let resp = match found {
            Ok(Ok((path, value, rev))) => Response::ok(tag)
                .with_flags(FLAG_SET)
                .with_rev(rev)
                .with_path(path)
                .with_value(value),
            Ok(Err(StoreError::FutureRev { rev, .. })) => {
                if let Err(e) = h.wait_applied_rev(rev, None).await {
                    return (errors::read_failed(tag, &e), None);
                }
                continue;
            }
            Ok(Err(e)) => errors::store_failed(tag, &e),
            Err(e) => {
                // The walk panicked: a bug, not the client's fault; answer and keep serving.
                tracing::error!(error = %e, "walk task failed");
                Response::err_with_detail(tag, ErrCode::Other, "internal error")
            }
        };
        return (resp, held);
    }
}
