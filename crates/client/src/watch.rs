//! [`Watch`]: a stream of events that survives reconnections without gaps or repeats.

use std::pin::Pin;
use std::task::{Context, Poll};

use doozer_proto::msg::ErrCode;
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
/// shows in the stream (the client's deadline does not apply to a watch). A node answering
/// `TOO_LATE` (it keeps no history that far back, e.g. after catching up from a snapshot)
/// makes the watch ask each other address once, on a connection of its own. A Doozer
/// error (`TOO_LATE` from every node, `OTHER` for a bad glob) is yielded once and ends the
/// stream.
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
    /// Other nodes asked in a row after a `TOO_LATE`.
    elsewhere: usize,
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
            elsewhere: 0,
        };
        let inner = futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                // Without a deadline, `wait` itself reconnects and retries until it gets an
                // answer, so an error here is permanent on this node.
                match st.client.wait(&st.glob, st.next_rev).await {
                    Ok(ev) => {
                        st.next_rev = ev.rev + 1;
                        st.elsewhere = 0;
                        return Some((Ok(ev), st));
                    }
                    // History is per node: one that caught up from a snapshot has none
                    // before it, while others may. Ask each other address once.
                    Err(e)
                        if e.code() == Some(ErrCode::TooLate)
                            && st.elsewhere + 1 < st.client.addrs().len() =>
                    {
                        debug!(rev = st.next_rev, "TOO_LATE; asking another node");
                        st.elsewhere += 1;
                        st.client = st.client.on_another_node();
                    }
                    Err(e) => {
                        debug!(error = %e, rev = st.next_rev, "watch ends");
                        st.done = true;
                        return Some((Err(e), st));
                    }
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
