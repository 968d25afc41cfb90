//! [`Watch`]: a stream of events that survives reconnections without gaps or repeats.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream};
use futures::StreamExt;
use tracing::debug;

use crate::client::Client;
use crate::error::ClientError;
use crate::types::Event;

/// Every event matching a glob, in revision order, from a starting revision on.
///
/// It issues one WAIT at a time, each from the last delivered event's rev + 1, so after a
/// reconnection (even to another node) it resumes exactly where it stopped: no event is
/// missed and none is repeated. Connection trouble is retried forever with backoff and never
/// shows in the stream (the client's deadline does not apply to a watch); a Doozer error (such as `TOO_LATE` when the start revision has left
/// the history, or `OTHER` for a bad glob) is yielded once and ends the stream.
///
/// Dropping a `Watch` leaves its last WAIT pending on the server until it fires or the
/// connection closes (the protocol has no cancel).
pub struct Watch {
    inner: BoxStream<'static, Result<Event, ClientError>>,
}

struct State {
    client: Client,
    glob: String,
    next_rev: i64,
    done: bool,
}

impl Watch {
    pub(crate) fn new(client: Client, glob: String, from_rev: i64) -> Watch {
        // WAITs block until something happens: no deadline on them.
        let client = client.with_timeout(None);
        let state = State {
            client,
            glob,
            next_rev: from_rev,
            done: false,
        };
        let inner = futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            // Without a deadline, `wait` itself reconnects and retries until it gets an
            // answer, so any error here is permanent.
            match st.client.wait(&st.glob, st.next_rev).await {
                Ok(ev) => {
                    st.next_rev = ev.rev + 1;
                    Some((Ok(ev), st))
                }
                Err(e) => {
                    debug!(error = %e, rev = st.next_rev, "watch ends");
                    st.done = true;
                    Some((Err(e), st))
                }
            }
        })
        .boxed();
        Watch { inner }
    }
}

impl Stream for Watch {
    type Item = Result<Event, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
