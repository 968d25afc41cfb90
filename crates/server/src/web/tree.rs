//! `GET /v1/tree/<path>?rev=N`: a file or a directory at one revision, as JSON.
//!
//! Without `rev` the read is linearizable, like a client's GET without a rev: it passes the
//! node's read barrier, then reads at the revision the store has reached. With `rev` it
//! reads that revision, after waiting (at most the write deadline) for the node to reach it;
//! below the retained history it is TOO_LATE (410). A directory is read entry by entry at
//! that one revision, so the listing is a consistent snapshot.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use doozer_proto::msg::{ErrCode, REV_DIR};
use doozer_store::{Store, StoreError};
use serde_json::{json, Map, Value};

use super::{deadline, parse_rev, put_value, ApiError, Web, MAX_DIR_ENTRIES};
use crate::handle::NodeHandle;

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// `GET /v1/tree/`: the root directory.
pub(super) async fn root(State(web): State<Web>, q: Params) -> Result<Json<Value>, ApiError> {
    read(&web, "/".to_string(), q).await
}

/// `GET /v1/tree/<path>`.
pub(super) async fn path(
    State(web): State<Web>,
    Path(rest): Path<String>,
    q: Params,
) -> Result<Json<Value>, ApiError> {
    let mut path = format!("/{rest}");
    // A trailing slash (a link to a directory) names the same path.
    if path.len() > 1 && path.ends_with('/') {
        path.pop();
    }
    read(&web, path, q).await
}

async fn read(web: &Web, path: String, q: Params) -> Result<Json<Value>, ApiError> {
    web.check_readable()?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(ErrCode::Other, e.body_text()))?;
    let rev = parse_rev(q.get("rev"))?;
    doozer_proto::path::validate(&path).map_err(StoreError::from)?;
    let h = &web.h;
    let at = match rev {
        None => {
            h.read_barrier(deadline(h)).await?;
            h.store().rev()
        }
        Some(r) => {
            if r > h.store().rev() {
                h.wait_applied_rev(r, Some(deadline(h))).await?;
            }
            r
        }
    };
    loop {
        // A directory may take many store reads: off the async workers.
        let store = h.store().clone();
        let p = path.clone();
        match tokio::task::spawn_blocking(move || read_at(&store, &p, at)).await {
            Ok(Ok(v)) => return Ok(Json(v)),
            // The node said it reached `at` a moment before the store shows it.
            Ok(Err(StoreError::FutureRev { rev, .. })) => {
                h.wait_applied_rev(rev, Some(deadline(h))).await?
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
}

/// The file or directory at `path` at revision `at`.
fn read_at(store: &Store, path: &str, at: i64) -> Result<Value, StoreError> {
    let (rev, len) = store.stat(path, Some(at))?;
    if rev == REV_DIR {
        return list(store, path, at, len);
    }
    if rev == 0 {
        return Err(StoreError::NoEnt(path.to_string()));
    }
    let (value, rev) = store.get(path, Some(at))?;
    let mut obj = Map::new();
    obj.insert("path".into(), path.into());
    obj.insert("rev".into(), rev.into());
    put_value(&mut obj, &value);
    Ok(Value::Object(obj))
}

/// A directory's entries (at most [`MAX_DIR_ENTRIES`]), each with what STAT says of it.
fn list(store: &Store, path: &str, at: i64, count: i32) -> Result<Value, StoreError> {
    let count = usize::try_from(count).unwrap_or(0);
    let shown = count.min(MAX_DIR_ENTRIES);
    let mut entries = Vec::with_capacity(shown);
    for i in 0..shown {
        let name = store.getdir(path, i as i32, Some(at))?;
        let child = if path == "/" {
            format!("/{name}")
        } else {
            format!("{path}/{name}")
        };
        let (rev, len) = store.stat(&child, Some(at))?;
        entries.push(if rev == REV_DIR {
            json!({ "name": name, "dir": true, "entries": len })
        } else {
            json!({ "name": name, "dir": false, "rev": rev, "len": len })
        });
    }
    Ok(json!({
        "path": path,
        "rev": at,
        "entries": entries,
        "count": count,
        "truncated": shown < count,
    }))
}
