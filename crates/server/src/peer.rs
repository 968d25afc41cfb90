//! Peer links: how nodes talk to each other.
//!
//! Peers share the client port. A peer connection opens with [`PREAMBLE`], which no valid
//! client frame can start with (read as a client frame length, `b"DZPE"` is far above the
//! frame limit), then carries length-prefixed frames (4-byte big-endian length) holding one
//! serde-encoded [`Frame`] each, through `doozer_store::codec`.
//!
//! Each node keeps one outbound connection per peer ([`PeerNet`]): a task that dials the
//! peer's advertised address, says [`Frame::Hello`], then streams engine messages from a
//! bounded queue, reconnecting with backoff. A full queue drops the message: Paxos tolerates
//! loss, and a slow peer must not hold up the others. Inbound connections are read-only
//! message streams after the hello, or one-shot requests (join, snapshot fetch).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use doozer_paxos::{Message, NodeId};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::cluster::{JoinInfo, JoinRequest};
use crate::core::Core;

/// The first bytes of every peer connection.
pub const PREAMBLE: &[u8; 8] = b"DZPEER01";
/// Largest peer frame (a slot's batch of values, a snapshot chunk).
pub const MAX_PEER_FRAME: usize = 64 << 20;
/// Messages queued for one peer before new ones are dropped.
const QUEUE_MSGS: usize = 8192;
/// Bytes of snapshot per chunk frame.
const SNAPSHOT_CHUNK: usize = 256 << 10;
/// Deadline for dialing a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An outbound link idle this long sends a [`Frame::Ping`].
const PING_EVERY: Duration = Duration::from_millis(250);

/// One frame on a peer connection.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// Opens a message stream from node `id` of cluster `cluster`.
    Hello { id: NodeId, cluster: String },
    /// An engine message.
    Msg(Message),
    /// Sent on an idle link: the sender is alive (failure detection does not depend on
    /// what the engine happens to send).
    Ping,
    /// Asks the receiving node to register the sender as a member.
    Join(JoinRequest),
    /// Answer to [`Frame::Join`].
    JoinReply(Result<JoinInfo, String>),
    /// Asks for a snapshot of the receiver's applied state.
    SnapshotFetch { cluster: String },
    /// Part of the snapshot, in order.
    SnapshotChunk(Bytes),
    /// The snapshot is complete.
    SnapshotDone,
    /// The snapshot could not be produced.
    SnapshotFailed(String),
}

/// Why a peer connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Decode(String),
    #[error("connection closed")]
    Closed,
    #[error("unexpected frame")]
    Unexpected,
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Remote(String),
}

pub(crate) fn encode(frame: &Frame) -> Bytes {
    Bytes::from(doozer_store::codec::encode(frame))
}

pub(crate) fn decode(buf: &[u8]) -> Result<Frame, PeerError> {
    doozer_store::codec::decode(buf).map_err(|e| PeerError::Decode(e.to_string()))
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_PEER_FRAME)
        .new_codec()
}

/// A framed peer connection (after the preamble).
pub(crate) struct Conn {
    rd: FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    wr: FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>,
}

impl Conn {
    /// Wraps a stream whose preamble was already exchanged.
    pub fn new(stream: TcpStream) -> Conn {
        let (r, w) = stream.into_split();
        Conn {
            rd: FramedRead::new(r, codec()),
            wr: FramedWrite::new(w, codec()),
        }
    }

    /// Dials `addr` and sends the preamble.
    pub async fn dial(addr: &str) -> Result<Conn, PeerError> {
        let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| PeerError::Timeout)??;
        s.set_nodelay(true)?;
        s.write_all(PREAMBLE).await?;
        Ok(Conn::new(s))
    }

    pub async fn send(&mut self, f: &Frame) -> Result<(), PeerError> {
        self.wr.send(encode(f)).await?;
        Ok(())
    }

    pub async fn recv(&mut self) -> Result<Frame, PeerError> {
        match self.rd.next().await {
            Some(Ok(b)) => decode(&b),
            Some(Err(e)) => Err(e.into()),
            None => Err(PeerError::Closed),
        }
    }
}

struct Link {
    addr: String,
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<()>,
}

/// The outbound side of every peer link, keyed by node id.
pub(crate) struct PeerNet {
    me: NodeId,
    cluster: String,
    links: Mutex<HashMap<NodeId, Link>>,
    stop: CancellationToken,
}

impl PeerNet {
    pub fn new(me: NodeId, cluster: String, stop: CancellationToken) -> PeerNet {
        PeerNet {
            me,
            cluster,
            links: Mutex::new(HashMap::new()),
            stop,
        }
    }

    /// Queues `msg` for `to`; drops it if `to` is unknown or its queue is full.
    pub fn send(&self, to: NodeId, msg: Message) {
        let links = self.links.lock().expect("links lock");
        let Some(link) = links.get(&to) else {
            tracing::trace!(%to, "no address for peer; message dropped");
            return;
        };
        let frame = encode(&Frame::Msg(msg));
        if link.tx.try_send(frame).is_err() {
            tracing::debug!(%to, "peer queue full or closed; message dropped");
        }
    }

    /// Address of a peer we have a link to.
    pub fn addr_of(&self, id: NodeId) -> Option<String> {
        let links = self.links.lock().expect("links lock");
        links.get(&id).map(|l| l.addr.clone())
    }

    /// Makes sure there is a link to `id` at `addr` (replacing one to another address).
    pub fn ensure(&self, id: NodeId, addr: &str) {
        if id == self.me || addr.is_empty() {
            return;
        }
        let mut links = self.links.lock().expect("links lock");
        if links.get(&id).is_some_and(|l| l.addr == addr) {
            return;
        }
        if let Some(old) = links.remove(&id) {
            old.task.abort();
        }
        tracing::info!(peer = %id, %addr, "peer link");
        let (tx, rx) = mpsc::channel(QUEUE_MSGS);
        let task = tokio::spawn(link_task(
            self.me,
            self.cluster.clone(),
            addr.to_string(),
            rx,
            self.stop.clone(),
        ));
        links.insert(
            id,
            Link {
                addr: addr.to_string(),
                tx,
                task,
            },
        );
    }

    /// Sets the whole address book: links to nodes not in `addrs` are closed (unless
    /// `addrs` is empty, as on a node that has not received any state yet).
    pub fn set_all(&self, addrs: &BTreeMap<NodeId, String>) {
        if !addrs.is_empty() {
            let mut links = self.links.lock().expect("links lock");
            links.retain(|id, l| {
                let keep = addrs.contains_key(id);
                if !keep {
                    tracing::info!(peer = %id, "peer link closed: no longer a member");
                    l.task.abort();
                }
                keep
            });
        }
        for (id, addr) in addrs {
            self.ensure(*id, addr);
        }
    }

    /// Closes every link.
    pub fn close(&self) {
        let mut links = self.links.lock().expect("links lock");
        for (_, l) in links.drain() {
            l.task.abort();
        }
    }
}

async fn link_task(
    me: NodeId,
    cluster: String,
    addr: String,
    mut rx: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let res = tokio::select! {
            _ = stop.cancelled() => return,
            r = pump(me, &cluster, &addr, &mut rx) => r,
        };
        match res {
            Ok(()) => return, // every sender dropped
            Err(e) => tracing::debug!(%addr, error = %e, "peer link down; reconnecting"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
        // Messages queued while disconnected are stale by now; Paxos resends what matters.
        while rx.try_recv().is_ok() {}
    }
}

async fn pump(
    me: NodeId,
    cluster: &str,
    addr: &str,
    rx: &mut mpsc::Receiver<Bytes>,
) -> Result<(), PeerError> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| PeerError::Timeout)??;
    s.set_nodelay(true)?;
    let mut w = BufWriter::with_capacity(256 << 10, s);
    w.write_all(PREAMBLE).await?;
    write_frame(
        &mut w,
        &encode(&Frame::Hello {
            id: me,
            cluster: cluster.to_string(),
        }),
    )
    .await?;
    w.flush().await?;
    let ping = encode(&Frame::Ping);
    loop {
        let first = match tokio::time::timeout(PING_EVERY, rx.recv()).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(_) => ping.clone(),
        };
        write_frame(&mut w, &first).await?;
        // Write whatever else is queued, then flush once.
        let mut n = 0;
        while n < 1024 {
            match rx.try_recv() {
                Ok(b) => write_frame(&mut w, &b).await?,
                Err(_) => break,
            }
            n += 1;
        }
        w.flush().await?;
    }
}

async fn write_frame(w: &mut BufWriter<TcpStream>, payload: &Bytes) -> Result<(), PeerError> {
    let mut hdr = BytesMut::with_capacity(4);
    hdr.put_u32(payload.len() as u32);
    w.write_all(&hdr).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Serves an inbound peer connection whose preamble was already read.
pub(crate) async fn serve_inbound(core: Arc<Core>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    let first = match conn.recv().await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(?peer, error = %e, "peer connection closed before its first frame");
            return;
        }
    };
    match first {
        Frame::Hello { id, cluster } => {
            if cluster != core.cluster {
                tracing::warn!(?peer, %id, %cluster, "peer from another cluster refused");
                return;
            }
            tracing::debug!(?peer, %id, "peer stream open");
            loop {
                match conn.recv().await {
                    Ok(Frame::Ping) => core.heard(id),
                    Ok(Frame::Msg(m)) => {
                        core.heard(id);
                        if core
                            .driver
                            .send(crate::driver::Input::Peer(id, m))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {
                        tracing::warn!(?peer, %id, "unexpected frame on a message stream; closing");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(?peer, %id, error = %e, "peer stream closed");
                        return;
                    }
                }
            }
        }
        Frame::Join(req) => {
            let reply = crate::cluster::handle_join(&core, req).await;
            if let Err(e) = conn.send(&Frame::JoinReply(reply)).await {
                tracing::debug!(?peer, error = %e, "join reply not delivered");
            }
        }
        Frame::SnapshotFetch { cluster } => {
            if cluster != core.cluster {
                let _ = conn
                    .send(&Frame::SnapshotFailed("cluster name mismatch".into()))
                    .await;
                return;
            }
            if let Err(e) = send_snapshot(&core, &mut conn).await {
                tracing::warn!(?peer, error = %e, "snapshot transfer failed");
            }
        }
        _ => tracing::warn!(
            ?peer,
            "unexpected first frame on a peer connection; closing"
        ),
    }
}

async fn send_snapshot(core: &Arc<Core>, conn: &mut Conn) -> Result<(), PeerError> {
    // Export into a temporary file off the runtime, then stream it in bounded chunks.
    let store = core.store.clone();
    let dir = core.cfg.data_dir.clone();
    let exported = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let mut f = tempfile::tempfile_in(&dir).map_err(|e| e.to_string())?;
        let meta = {
            let mut w = std::io::BufWriter::new(&mut f);
            let meta = store.export_snapshot(&mut w).map_err(|e| e.to_string())?;
            std::io::Write::flush(&mut w).map_err(|e| e.to_string())?;
            meta
        };
        Ok((f, meta))
    })
    .await
    .map_err(|e| PeerError::Remote(e.to_string()))?;
    let (f, meta) = match exported {
        Ok(x) => x,
        Err(e) => {
            conn.send(&Frame::SnapshotFailed(e.clone())).await?;
            return Err(PeerError::Remote(e));
        }
    };
    tracing::info!(?meta, "sending snapshot");
    let mut f = tokio::fs::File::from_std(f);
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    f.seek(std::io::SeekFrom::Start(0)).await?;
    let mut buf = vec![0u8; SNAPSHOT_CHUNK];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        conn.send(&Frame::SnapshotChunk(Bytes::copy_from_slice(&buf[..n])))
            .await?;
    }
    conn.send(&Frame::SnapshotDone).await?;
    Ok(())
}

/// Fetches a snapshot from `addr` into a new file in `dir`; returns its path.
pub(crate) async fn fetch_snapshot(
    addr: &str,
    cluster: &str,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, PeerError> {
    let mut conn = Conn::dial(addr).await?;
    conn.send(&Frame::SnapshotFetch {
        cluster: cluster.to_string(),
    })
    .await?;
    let (file, path) = tempfile::Builder::new()
        .prefix("snapshot-in-")
        .tempfile_in(dir)?
        .keep()
        .map_err(|e| PeerError::Io(e.error))?;
    let mut f = tokio::fs::File::from_std(file);
    let res = async {
        loop {
            match conn.recv().await? {
                Frame::SnapshotChunk(b) => f.write_all(&b).await?,
                Frame::SnapshotDone => break,
                Frame::SnapshotFailed(e) => return Err(PeerError::Remote(e)),
                _ => return Err(PeerError::Unexpected),
            }
        }
        f.sync_all().await?;
        Ok(())
    }
    .await;
    match res {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
}
