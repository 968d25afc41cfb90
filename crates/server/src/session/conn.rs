//! One client connection: the reader loop that owns it, and its orderly close.

use std::fmt;
use std::sync::Arc;

use doozer_proto::codec::ServerCodec;
use doozer_proto::msg::{ErrCode, Request, Response};
use doozer_proto::{FrameError, Message};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::config::SessionConfig;
use super::outbox::{write_loop, Outbox};
use super::verbs::{self, Plan};
use crate::handle::NodeHandle;

/// Why a connection ended.
enum Close {
    /// The client closed its side.
    Eof,
    /// A frame that could not be read: oversize, negative length, not a Request, or a
    /// socket error.
    BadFrame(FrameError),
    /// Writing to the client failed: it is gone.
    WriteFailed,
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::Eof => f.write_str("closed by client"),
            Close::BadFrame(FrameError::Io(e)) => write!(f, "read failed: {e}"),
            Close::BadFrame(e) => write!(f, "bad input: {e}"),
            Close::WriteFailed => f.write_str("write to client failed"),
        }
    }
}

/// Aborts the writer if the session is dropped before it could wait for it (node shutdown).
struct AbortOnDrop<T>(Option<JoinHandle<T>>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Option<T> {
        self.0.take()?.await.ok()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Clamps a byte budget to what a semaphore can count.
fn permits(n: usize) -> usize {
    n.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize))
}

/// Serves the Doozer client protocol on `stream` until the client goes away, the input
/// turns out to be garbage, or the future is dropped (node shutdown). `peer` names the
/// client in the logs.
pub async fn serve<H, S>(stream: S, handle: H, cfg: Arc<SessionConfig>, peer: String)
where
    H: NodeHandle,
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let span = tracing::info_span!("client", %peer);
    run(stream, handle, cfg).instrument(span).await
}

async fn run<H, S>(stream: S, handle: H, cfg: Arc<SessionConfig>)
where
    H: NodeHandle,
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    tracing::info!("client connected");
    let (rd, wr) = tokio::io::split(stream);
    let mut frames = FramedRead::new(rd, ServerCodec::with_max_frame(cfg.max_frame));
    let max_outstanding = cfg.max_outstanding.max(1);
    let (outbox, rx) = Outbox::new(max_outstanding, cfg.response_bytes, cfg.max_frame);
    let outbox = Arc::new(outbox);
    let dead = CancellationToken::new();
    let writer = AbortOnDrop(Some(tokio::spawn(
        write_loop(wr, rx, cfg.max_frame, dead.clone()).in_current_span(),
    )));
    let slots = Arc::new(Semaphore::new(max_outstanding));
    let request_cap = permits(cfg.request_bytes);
    let request_budget = Arc::new(Semaphore::new(request_cap));
    let value_reads = Arc::new(Semaphore::new(cfg.value_reads.max(1)));
    let mut rights = cfg.secrets.initial();
    // Jobs bounded by a deadline, and jobs that may wait forever (WAIT, reads at a future
    // rev); dropping a set aborts its tasks.
    let mut bounded = JoinSet::new();
    let mut unbounded = JoinSet::new();
    let mut requests = 0u64;

    let why = loop {
        while bounded.try_join_next().is_some() {}
        while unbounded.try_join_next().is_some() {}
        // At the limit of outstanding requests, stop reading: TCP pushes back on the client.
        let slot: OwnedSemaphorePermit = tokio::select! {
            biased;
            _ = dead.cancelled() => break Close::WriteFailed,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break Close::WriteFailed, // never closed
            },
        };
        let req = tokio::select! {
            biased;
            _ = dead.cancelled() => break Close::WriteFailed,
            f = frames.next() => match f {
                None => break Close::Eof,
                Some(Err(e)) => break Close::BadFrame(e),
                Some(Ok(req)) => req,
            },
        };
        requests += 1;
        let tag = req.tag;
        let span = request_span(&req);
        if !outbox.claim(tag) {
            tracing::debug!(parent: &span, "tag in use");
            outbox
                .reply(None, Response::err(tag, ErrCode::TagInUse), slot)
                .instrument(span)
                .await;
            continue;
        }
        let size = req.encoded_len();
        let plan = {
            let _e = span.enter();
            verbs::plan(&handle, &cfg, &mut rights, req)
        };
        match plan {
            Plan::Reply(resp) => {
                tracing::debug!(parent: &span, err = ?resp.error_code(), "answered in line");
                outbox.reply(tag, resp, slot).instrument(span).await;
            }
            Plan::Run(job) => {
                // Request bodies in flight are bounded too: wait for earlier ones to finish.
                let want = size.clamp(1, request_cap) as u32;
                let body = tokio::select! {
                    biased;
                    _ = dead.cancelled() => break Close::WriteFailed,
                    b = request_budget.clone().acquire_many_owned(want) => b.ok(),
                };
                let unbounded_job = job.unbounded();
                let h = handle.clone();
                let cfg = cfg.clone();
                let outbox = outbox.clone();
                let value_reads = value_reads.clone();
                let task = async move {
                    let (resp, held) = job.run(&h, &cfg, &value_reads, tag).await;
                    drop(body);
                    tracing::debug!(err = ?resp.error_code(), "answered");
                    outbox.reply(tag, resp, slot).await;
                    // Queued (and counted in the response budget) now.
                    drop(held);
                }
                .instrument(span);
                if unbounded_job {
                    unbounded.spawn(task);
                } else {
                    bounded.spawn(task);
                }
            }
        }
    };

    match &why {
        Close::BadFrame(FrameError::Io(_)) | Close::Eof | Close::WriteFailed => {}
        Close::BadFrame(e) => tracing::warn!(error = %e, "closing connection on bad input"),
    }
    drop(frames);
    // WAITs and reads at future revs would keep a dead connection alive: cancel them.
    unbounded.shutdown().await;
    match why {
        Close::WriteFailed => bounded.shutdown().await,
        // The client may only have closed its sending side: let writes and reads already
        // under way answer (each is bounded by its deadline).
        _ => while bounded.join_next().await.is_some() {},
    }
    drop(outbox);
    let written = writer.join().await.and_then(|r| r.ok());
    tracing::info!(requests, answered = written, reason = %why, "client disconnected");
}

/// The debug span of one request: verb, tag and path (no allocation when debug is off).
fn request_span(req: &Request) -> tracing::Span {
    let known = req.known_verb();
    let span = tracing::debug_span!(
        "request",
        verb = known.map_or("UNKNOWN", |v| v.as_str()),
        raw_verb = tracing::field::Empty,
        tag = ?req.tag,
        path = req.path.as_deref().unwrap_or("")
    );
    if known.is_none() {
        span.record("raw_verb", req.verb.unwrap_or(0));
    }
    span
}
