//! One connection to one node: a writer task, a reader task, and a map of outstanding tags.
//!
//! Callers never touch the socket. [`Conn::call`] picks a free tag, registers a oneshot for
//! it, queues the request for the writer task and waits. The reader task routes each
//! response to the oneshot of its tag. When the connection dies, every outstanding oneshot
//! is dropped, so each waiting caller learns at once that its request's fate is unknown.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doozer_proto::codec::ClientCodec;
use doozer_proto::msg::{Request, Response};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::ClientError;

/// A byte stream the connection can run over: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a call did not get an answer on this connection.
#[derive(Debug)]
pub(crate) enum Lost {
    /// The request never left: the connection was already dead.
    NotSent,
    /// The request was queued or written, then the connection died: it may have been applied.
    MaybeSent,
}

#[derive(Default)]
struct Tags {
    next: i32,
    pending: HashMap<i32, oneshot::Sender<Response>>,
    /// Tags whose caller gave up (deadline) while the server may still answer: not reused
    /// until that answer arrives, so a late answer can never be taken for a new request's.
    abandoned: HashSet<i32>,
    dead: Option<String>,
}

impl Tags {
    fn free_tag(&mut self) -> i32 {
        loop {
            let t = self.next;
            self.next = if self.next == i32::MAX {
                0
            } else {
                self.next + 1
            };
            if !self.pending.contains_key(&t) && !self.abandoned.contains(&t) {
                return t;
            }
        }
    }

    fn kill(&mut self, why: String) {
        if self.dead.is_none() {
            self.dead = Some(why);
        }
        // Dropping the senders wakes every waiting caller with "lost".
        self.pending.clear();
        self.abandoned.clear();
    }
}

struct Shared {
    tags: Mutex<Tags>,
    stop: CancellationToken,
}

impl Shared {
    fn kill(&self, why: String) {
        self.tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kill(why);
        self.stop.cancel();
    }
}

/// A live (or dead) connection to one address.
pub(crate) struct Conn {
    addr: String,
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// Removes the tag from `pending` if the caller stops waiting (deadline, cancellation).
struct TagGuard<'a> {
    shared: &'a Shared,
    tag: i32,
    armed: bool,
}

impl Drop for TagGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut tags = self.shared.tags.lock().unwrap_or_else(|p| p.into_inner());
            if tags.pending.remove(&self.tag).is_some() && tags.dead.is_none() {
                tags.abandoned.insert(self.tag);
            }
        }
    }
}

impl Conn {
    /// Dials `addr` (with TLS if `tls` is given) within `connect_timeout`.
    pub(crate) async fn open(
        addr: &str,
        tls: Option<(&tokio_rustls::TlsConnector, &crate::options::TlsOptions)>,
        connect_timeout: Duration,
        max_frame: usize,
        max_outstanding: usize,
    ) -> Result<Conn, ClientError> {
        let dial = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: addr.to_owned(),
                    source,
                })?;
            // Requests are small and pipelined: don't let Nagle hold them back.
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = match tls {
                None => Box::new(tcp),
                Some((connector, opts)) => {
                    let name = crate::tls::server_name(opts, addr)?;
                    let stream = connector.connect(name, tcp).await.map_err(|source| {
                        ClientError::Connect {
                            addr: addr.to_owned(),
                            source,
                        }
                    })?;
                    Box::new(stream)
                }
            };
            Ok::<_, ClientError>(io)
        };
        let io = tokio::time::timeout(connect_timeout, dial)
            .await
            .map_err(|_| ClientError::Connect {
                addr: addr.to_owned(),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            })??;
        Ok(Conn::start(addr.to_owned(), io, max_frame, max_outstanding))
    }

    fn start(addr: String, io: Box<dyn Io>, max_frame: usize, max_outstanding: usize) -> Conn {
        let (rd, wr) = tokio::io::split(io);
        let shared = Arc::new(Shared {
            tags: Mutex::new(Tags {
                next: 1,
                ..Tags::default()
            }),
            stop: CancellationToken::new(),
        });
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(write_loop(
            FramedWrite::new(wr, ClientCodec::with_max_frame(max_frame)),
            rx,
            shared.clone(),
            addr.clone(),
        ));
        tokio::spawn(read_loop(
            FramedRead::new(rd, ClientCodec::with_max_frame(max_frame)),
            shared.clone(),
            addr.clone(),
        ));
        debug!(%addr, "connected");
        Conn {
            addr,
            tx,
            shared,
            slots: Arc::new(Semaphore::new(max_outstanding.max(1))),
        }
    }

    /// The address this connection was dialed at.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Has the connection failed?
    pub(crate) fn is_dead(&self) -> bool {
        self.shared.stop.is_cancelled()
    }

    /// Sends `req` (its tag is replaced) and waits for its response. `sent` is set to true
    /// as soon as the request may have reached the server.
    pub(crate) async fn call(&self, mut req: Request, sent: &mut bool) -> Result<Response, Lost> {
        let _permit: OwnedSemaphorePermit = tokio::select! {
            p = self.slots.clone().acquire_owned() => p.map_err(|_| Lost::NotSent)?,
            _ = self.shared.stop.cancelled() => return Err(Lost::NotSent),
        };
        let (otx, orx) = oneshot::channel();
        let tag = {
            let mut tags = self.shared.tags.lock().unwrap_or_else(|p| p.into_inner());
            if tags.dead.is_some() {
                return Err(Lost::NotSent);
            }
            let tag = tags.free_tag();
            tags.pending.insert(tag, otx);
            tag
        };
        let mut guard = TagGuard {
            shared: &self.shared,
            tag,
            armed: true,
        };
        req.tag = Some(tag);
        *sent = true;
        if self.tx.send(req).await.is_err() {
            return Err(Lost::MaybeSent);
        }
        match orx.await {
            Ok(resp) => {
                guard.armed = false;
                Ok(resp)
            }
            Err(_) => Err(Lost::MaybeSent),
        }
    }
}

async fn write_loop(
    mut sink: FramedWrite<tokio::io::WriteHalf<Box<dyn Io>>, ClientCodec>,
    mut rx: mpsc::Receiver<Request>,
    shared: Arc<Shared>,
    addr: String,
) {
    loop {
        let req = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => break },
            _ = shared.stop.cancelled() => break,
        };
        // Queue everything already waiting, then flush once: pipelined requests share
        // one write.
        let mut res = sink.feed(req).await;
        while res.is_ok() {
            match rx.try_recv() {
                Ok(more) => res = sink.feed(more).await,
                Err(_) => break,
            }
        }
        if res.is_ok() {
            res = sink.flush().await;
        }
        if let Err(e) = res {
            warn!(%addr, error = %e, "write failed; connection closed");
            shared.kill(format!("write: {e}"));
            break;
        }
    }
    let _ = sink.close().await;
}

async fn read_loop(
    mut stream: FramedRead<tokio::io::ReadHalf<Box<dyn Io>>, ClientCodec>,
    shared: Arc<Shared>,
    addr: String,
) {
    let why = loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = shared.stop.cancelled() => break "closed".to_owned(),
        };
        match next {
            None => break "connection closed by server".to_owned(),
            Some(Err(e)) => break format!("read: {e}"),
            Some(Ok(resp)) => {
                let mut tags = shared.tags.lock().unwrap_or_else(|p| p.into_inner());
                let Some(tag) = resp.tag else {
                    warn!(%addr, "response without a tag ignored");
                    continue;
                };
                if let Some(tx) = tags.pending.remove(&tag) {
                    // The caller may have just given up; then the answer is dropped.
                    let _ = tx.send(resp);
                } else if !tags.abandoned.remove(&tag) {
                    warn!(%addr, tag, "response for an unknown tag ignored");
                }
            }
        }
    };
    debug!(%addr, reason = %why, "connection down");
    shared.kill(why);
}
