//! GET, GETDIR, STAT and WALK: which snapshot to read, then the read itself.
//!
//! Without a rev a read is linearizable: it first passes the node's read barrier (the
//! node has applied everything decided before the request arrived) and then reads the
//! current state. With a rev it reads the snapshot at that revision, after waiting for the
//! node to reach it if it is in the future; a rev older than the history is TOO_LATE (from
//! the store).

use doozer_proto::msg::{Response, FLAG_SET};
use doozer_proto::Glob;

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

/// GET: the value and rev of a file; a missing file is rev 0 with an empty value.
pub async fn get<H: NodeHandle>(
    h: &H,
    cfg: &SessionConfig,
    tag: Option<i32>,
    path: String,
    rev: Option<i64>,
) -> Response {
    if let Err(r) = ready_for(h, cfg, tag, rev).await {
        return r;
    }
    match h.store().get(&path, rev) {
        Ok((value, rev)) => Response::ok(tag).with_rev(rev).with_value(value),
        Err(e) => errors::store_failed(tag, &e),
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
    match h.store().getdir(&path, offset, rev) {
        Ok(name) => Response::ok(tag).with_path(name),
        Err(e) => errors::store_failed(tag, &e),
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
    match h.store().stat(&path, rev) {
        Ok((rev, len)) => Response::ok(tag).with_rev(rev).with_len(len),
        Err(e) => errors::store_failed(tag, &e),
    }
}

/// WALK: the `offset`-th file matching `glob`, in sorted depth-first order. A walk visits
/// much of the tree, so it runs on the blocking pool, off the async workers.
pub async fn walk<H: NodeHandle>(
    h: &H,
    cfg: &SessionConfig,
    tag: Option<i32>,
    glob: Glob,
    offset: i32,
    rev: Option<i64>,
) -> Response {
    if let Err(r) = ready_for(h, cfg, tag, rev).await {
        return r;
    }
    let store = h.store().clone();
    let found = tokio::task::spawn_blocking(move || store.walk(&glob, offset, rev)).await;
    match found {
        Ok(Ok((path, value, rev))) => Response::ok(tag)
            .with_flags(FLAG_SET)
            .with_rev(rev)
            .with_path(path)
            .with_value(value),
        Ok(Err(e)) => errors::store_failed(tag, &e),
        Err(e) => {
            // The walk panicked: a bug, not the client's fault; answer and keep serving.
            tracing::error!(error = %e, "walk task failed");
            Response::err_with_detail(tag, doozer_proto::ErrCode::Other, "internal error")
        }
    }
}
