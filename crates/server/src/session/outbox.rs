//! The way out: the table of outstanding tags, the byte budget of queued answers, and the
//! writer task that serialises answers onto the socket.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use doozer_proto::codec::ServerCodec;
use doozer_proto::msg::{ErrCode, Response};
use doozer_proto::Message;
use futures::SinkExt;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;

/// An answer on its way to the socket. It carries the permits it holds, so dropping it
/// (written, or thrown away with a dead connection) gives them back.
pub struct Outgoing {
    resp: Response,
    _slot: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// Shared by the reader and the handler tasks of one connection.
pub struct Outbox {
    /// Tags of requests read and not yet answered (requests without a tag are not tracked:
    /// they cannot be told apart anyway).
    tags: Mutex<HashSet<i32>>,
    /// Bytes of answers queued and not yet written.
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    max_frame: usize,
    tx: mpsc::Sender<Outgoing>,
}

impl Outbox {
    /// An outbox for answers of at most `max_frame` bytes and a writer channel that can hold
    /// `slots` answers (one per outstanding request, so sending never waits on it).
    pub fn new(
        slots: usize,
        budget_bytes: usize,
        max_frame: usize,
    ) -> (Outbox, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(slots.max(1));
        let budget_bytes = budget_bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let outbox = Outbox {
            tags: Mutex::new(HashSet::new()),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            max_frame,
            tx,
        };
        (outbox, rx)
    }

    /// Records `tag` as outstanding; `false` if a request with the same tag is still
    /// unanswered (TAG_IN_USE). A missing tag is always accepted.
    pub fn claim(&self, tag: Option<i32>) -> bool {
        match tag {
            None => true,
            Some(t) => self.tags.lock().expect("tag table lock").insert(t),
        }
    }

    /// Queues `resp` for the writer. `claimed` is the tag [`Outbox::claim`] recorded for this
    /// request (if any): it is released just before the answer becomes visible, since a
    /// client may only reuse a tag once it has seen the answer. Waits while the queued
    /// answers exceed the byte budget.
    pub async fn reply(
        &self,
        claimed: Option<i32>,
        mut resp: Response,
        slot: OwnedSemaphorePermit,
    ) {
        let len = resp.encoded_len();
        if len > self.max_frame {
            // Cannot happen with the default limits (values are capped below the frame
            // size), but an answer must never be dropped silently or kill the connection.
            tracing::warn!(
                len,
                max = self.max_frame,
                "response too large for one frame"
            );
            resp = Response::err_with_detail(
                resp.tag,
                ErrCode::Other,
                format!(
                    "response of {len} bytes exceeds the frame limit of {} bytes",
                    self.max_frame
                ),
            );
        }
        let want = resp.encoded_len().clamp(1, self.budget_bytes) as u32;
        // The semaphore is never closed, so this only fails if that changes; then go without.
        let bytes = self.budget.clone().acquire_many_owned(want).await.ok();
        if let Some(t) = claimed {
            self.tags.lock().expect("tag table lock").remove(&t);
        }
        // Never blocks: the channel has room for every outstanding request. Fails only if
        // the writer has gone (socket dead), and then nobody is listening anyway.
        let _ = self
            .tx
            .send(Outgoing {
                resp,
                _slot: slot,
                _bytes: bytes,
            })
            .await;
    }
}

/// Writes answers until every sender is gone or the socket fails. Frames are batched: the
/// socket is flushed only when no answer is waiting. On failure `dead` is cancelled so the
/// reader stops too. Returns the number of answers written.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Outgoing>,
    max_frame: usize,
    dead: CancellationToken,
) -> std::io::Result<u64> {
    let mut sink = FramedWrite::new(w, ServerCodec::with_max_frame(max_frame));
    let mut written = 0u64;
    let res = async {
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(out) = next {
                // Outbox::reply checked the size, so the encoder cannot refuse it.
                sink.feed(out.resp).await.map_err(into_io)?;
                written += 1;
                next = rx.try_recv().ok();
            }
            sink.flush().await.map_err(into_io)?;
        }
        // Every answer is out: say goodbye with a FIN rather than letting the drop do it.
        sink.close().await.map_err(into_io)
    }
    .await;
    if res.is_err() {
        dead.cancel();
    }
    res.map(|()| written)
}

fn into_io(e: doozer_proto::FrameError) -> std::io::Error {
    match e {
        doozer_proto::FrameError::Io(e) => e,
        other => std::io::Error::other(other),
    }
}
