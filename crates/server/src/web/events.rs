//! `GET /v1/events?glob=G&rev=N`: every change whose path matches `G` (default `/**`), from
//! revision `N` on (default: the next one), as server-sent events. Each event has the
//! revision as its id and `{"rev","path","value","flags"}` as its data (`"value_b64"` too
//! when the body is not UTF-8; flags 4 set, 8 del, 0 nop). A browser that reconnects sends
//! the last id it saw (`Last-Event-ID`) and the stream resumes right after it.
//!
//! This is WAIT run continuously, on the same machinery as the client protocol's WAIT
//! (`session/wait.rs`): the store's history answers for revisions already applied and the
//! node's event broadcast for new ones. The stream subscribes to the broadcast *before* it
//! first reads the history, so no event falls between the two, and a stream that falls
//! behind the broadcast reads the history again from its next revision. A `from` below the
//! history is TOO_LATE: 410 before the stream starts, or an `error` event (then the end) if
//! the stream fell that far behind. The stream ends when the client goes away (the
//! response body is dropped) or the node stops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use doozer_proto::msg::ErrCode;
use doozer_proto::Glob;
use doozer_store::{Event, StoreError};
use futures::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::OwnedSemaphorePermit;

use super::{parse_rev, put_value, ApiError, Web, KEEP_ALIVE};
use crate::core::Handle;
use crate::handle::NodeHandle;

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// `GET /v1/events`.
pub(super) async fn stream(
    State(web): State<Web>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, ApiError> {
    web.check_readable()?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(ErrCode::Other, e.body_text()))?;
    let glob = Glob::new(q.get("glob").map_or("/**", String::as_str)).map_err(StoreError::from)?;
    let from = match (last_event_id(&headers), parse_rev(q.get("rev"))?) {
        (Some(seen), _) => seen.saturating_add(1),
        (None, Some(rev)) => rev,
        (None, None) => web.h.store().rev().saturating_add(1),
    };
    let permit = web.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrCode::Other,
            "too many event streams open",
        )
    })?;
    let mut follow = Follow {
        events: web.h.events(),
        h: web.h.clone(),
        glob: Arc::new(glob),
        from,
        live: false,
        pending: None,
        failed: false,
        _permit: permit,
    };
    // The first look at the history, before answering: TOO_LATE is a 410, not an event.
    match follow.scan().await? {
        Some(ev) => {
            follow.from = ev.rev.saturating_add(1);
            follow.pending = Some(ev);
        }
        None => follow.live = true,
    }
    let stop = web.h.core.stop.clone();
    let events = futures::stream::unfold(follow, |mut f| async move {
        if f.failed {
            return None;
        }
        match f.next().await {
            Ok(Some(ev)) => Some((Ok::<_, Infallible>(sse_event(&ev)), f)),
            Ok(None) => None,
            Err(e) => {
                f.failed = true;
                let ev = SseEvent::default()
                    .event("error")
                    .data(e.json().to_string());
                Some((Ok(ev), f))
            }
        }
    })
    .take_until(stop.cancelled_owned());
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// The revision a reconnecting browser saw last.
fn last_event_id(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn sse_event(ev: &Event) -> SseEvent {
    let mut obj = serde_json::Map::new();
    obj.insert("rev".into(), ev.rev.into());
    obj.insert("path".into(), ev.path.clone().into());
    put_value(&mut obj, &ev.value);
    obj.insert("flags".into(), ev.flags.into());
    SseEvent::default()
        .id(ev.rev.to_string())
        .data(serde_json::Value::Object(obj).to_string())
}

/// One stream's position: every event below `from` has been considered.
struct Follow {
    h: Handle,
    glob: Arc<Glob>,
    from: i64,
    /// Subscribed before the first history read.
    events: broadcast::Receiver<Event>,
    /// The history has nothing more at `from`: follow the broadcast.
    live: bool,
    /// Found by the first history read, not sent yet.
    pending: Option<Event>,
    /// An error event was sent: the stream ends.
    failed: bool,
    /// Counts towards [`super::MAX_EVENT_STREAMS`] while the stream lives.
    _permit: OwnedSemaphorePermit,
}

impl Follow {
    /// The next matching event; `None` once the node stops publishing.
    async fn next(&mut self) -> Result<Option<Event>, ApiError> {
        if let Some(ev) = self.pending.take() {
            return Ok(Some(ev));
        }
        loop {
            if !self.live {
                match self.scan().await? {
                    Some(ev) => {
                        self.from = ev.rev.saturating_add(1);
                        return Ok(Some(ev));
                    }
                    None => self.live = true,
                }
            }
            match self.events.recv().await {
                // Already covered by the history.
                Ok(ev) if ev.rev < self.from => {}
                Ok(ev) => {
                    // Events arrive in rev order: everything up to here is considered.
                    self.from = ev.rev.saturating_add(1);
                    if self.glob.matches(&ev.path) {
                        return Ok(Some(ev));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        from = self.from,
                        "event stream fell behind; rereading history"
                    );
                    self.live = false;
                }
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// The history's first matching event at or after `from`, read on the blocking pool.
    async fn scan(&self) -> Result<Option<Event>, ApiError> {
        let store = self.h.store().clone();
        let glob = self.glob.clone();
        let from = self.from;
        match tokio::task::spawn_blocking(move || store.wait(&glob, from)).await {
            Ok(r) => r.map_err(ApiError::from),
            Err(e) => Err(ApiError::internal(e)),
        }
    }
}
