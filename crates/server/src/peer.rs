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
//!
//! Compatibility: frames are bincode-encoded serde values, so an enum variant travels as its
//! index and a struct variant's fields in order. Nodes of different builds share a cluster
//! during a rolling upgrade, so existing variants never change; new ones are appended at the
//! end of [`Frame`]. A node that receives a variant it does not know fails to decode it and
//! closes the connection, which the sender must take as "an older build".
//!
//! Snapshot transfer negotiates the stream version ([`fetch_snapshot`]): the requester sends
//! [`Frame::SnapshotFetchVersions`] with the versions it installs, the server answers
//! [`Frame::SnapshotVersion`] with the highest one it can write, then the chunks; with no
//! common version it answers [`Frame::SnapshotFailed`]. The older [`Frame::SnapshotFetch`]
//! still works and means "version 3 only" ([`LEGACY_SNAPSHOT_VERSION`]), and a requester whose
//! new request is dropped unanswered by an older build asks again that way if it accepts 3.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, OnceLock};
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
/// The snapshot stream version a [`Frame::SnapshotFetch`] (no version list: nodes built
/// before negotiation) gets: what those nodes were always sent.
pub(crate) const LEGACY_SNAPSHOT_VERSION: u64 = 3;
/// Test hook: a comma-separated list of snapshot stream versions this node says it accepts
/// when it fetches a snapshot, instead of every version its store installs (e.g. `2`, to
/// act as a node that only installs version 2). Not a flag, so not in `--help`.
pub(crate) const SNAPSHOT_VERSIONS_ENV: &str = "DOOZERD_TEST_SNAPSHOT_VERSIONS";

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
    // Appended variants (see the module docs: never insert above this line).
    /// Asks for a snapshot of the receiver's applied state in one of `versions` (the snapshot
    /// stream versions the sender installs). Answered by [`Frame::SnapshotVersion`] then the
    /// chunks and [`Frame::SnapshotDone`], or by [`Frame::SnapshotFailed`] (e.g. no common
    /// version).
    SnapshotFetchVersions { cluster: String, versions: Vec<u64> },
    /// The snapshot stream version of the chunks that follow.
    SnapshotVersion(u64),
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
            // A node built before negotiation: it was always sent version 3.
            if let Err(e) = send_snapshot(&core, &mut conn, LEGACY_SNAPSHOT_VERSION, false).await {
                tracing::warn!(?peer, error = %e, "snapshot transfer failed");
            }
        }
        Frame::SnapshotFetchVersions { cluster, versions } => {
            if cluster != core.cluster {
                let _ = conn
                    .send(&Frame::SnapshotFailed("cluster name mismatch".into()))
                    .await;
                return;
            }
            let Some(version) = choose_version(writable_versions(), &versions) else {
                let e = no_common_version(&versions);
                tracing::warn!(?peer, "snapshot refused: {e}");
                let _ = conn.send(&Frame::SnapshotFailed(e)).await;
                return;
            };
            if let Err(e) = send_snapshot(&core, &mut conn, version, true).await {
                tracing::warn!(?peer, error = %e, "snapshot transfer failed");
            }
        }
        _ => tracing::warn!(
            ?peer,
            "unexpected first frame on a peer connection; closing"
        ),
    }
}

/// The snapshot stream versions this node's store writes.
fn writable_versions() -> RangeInclusive<u64> {
    doozer_store::SNAPSHOT_FORMAT_MIN..=doozer_store::SNAPSHOT_FORMAT
}

/// The version to send a requester that accepts `accepted`: the highest one this node can
/// write (`writable`), or `None` with no version in common.
pub(crate) fn choose_version(writable: RangeInclusive<u64>, accepted: &[u64]) -> Option<u64> {
    accepted
        .iter()
        .copied()
        .filter(|v| writable.contains(v))
        .max()
}

fn no_common_version(accepted: &[u64]) -> String {
    let w = writable_versions();
    format!(
        "no common snapshot stream version: the serving node writes versions {}..={}, the requesting node accepts {accepted:?}",
        w.start(),
        w.end()
    )
}

/// The snapshot stream versions this node accepts: every version its store installs, unless
/// [`SNAPSHOT_VERSIONS_ENV`] says otherwise (tests).
fn accepted_versions() -> &'static [u64] {
    static ACCEPTED: OnceLock<Vec<u64>> = OnceLock::new();
    ACCEPTED.get_or_init(|| {
        let all: Vec<u64> = writable_versions().collect();
        let Ok(text) = std::env::var(SNAPSHOT_VERSIONS_ENV) else {
            return all;
        };
        match parse_versions(&text) {
            Some(v) => {
                tracing::warn!(versions = ?v, "test hook {SNAPSHOT_VERSIONS_ENV}: snapshot versions accepted restricted");
                v
            }
            None => {
                tracing::warn!(%text, "{SNAPSHOT_VERSIONS_ENV} is not a comma-separated list of versions; ignored");
                all
            }
        }
    })
}

fn parse_versions(text: &str) -> Option<Vec<u64>> {
    let v: Vec<u64> = text
        .split(',')
        .map(|w| w.trim().parse().ok())
        .collect::<Option<_>>()?;
    (!v.is_empty()).then_some(v)
}

/// Exports a snapshot in stream `version` and streams it on `conn`, preceded by a
/// [`Frame::SnapshotVersion`] if `announce` (a negotiating requester).
async fn send_snapshot(
    core: &Arc<Core>,
    conn: &mut Conn,
    version: u64,
    announce: bool,
) -> Result<(), PeerError> {
    // Export into a temporary file off the runtime, then stream it in bounded chunks.
    let store = core.store.clone();
    let dir = core.cfg.data_dir.clone();
    let exported = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let mut f = tempfile::tempfile_in(&dir).map_err(|e| e.to_string())?;
        let meta = {
            let mut w = std::io::BufWriter::new(&mut f);
            let meta = store
                .export_snapshot_version(&mut w, version)
                .map_err(|e| e.to_string())?;
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
    tracing::info!(?meta, version, "sending snapshot");
    if announce {
        conn.send(&Frame::SnapshotVersion(version)).await?;
    }
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

/// Fetches a snapshot from `addr` into a new file in `dir`, in a stream version this node
/// installs (negotiated); returns its path.
pub(crate) async fn fetch_snapshot(
    addr: &str,
    cluster: &str,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, PeerError> {
    let (path, version) = fetch_snapshot_accepting(addr, cluster, dir, accepted_versions()).await?;
    tracing::info!(%addr, version, "snapshot received");
    Ok(path)
}

/// [`fetch_snapshot`] accepting the stream versions `accepted`; returns the file's path and
/// the version of its stream.
pub(crate) async fn fetch_snapshot_accepting(
    addr: &str,
    cluster: &str,
    dir: &std::path::Path,
    accepted: &[u64],
) -> Result<(std::path::PathBuf, u64), PeerError> {
    let mut conn = Conn::dial(addr).await?;
    conn.send(&Frame::SnapshotFetchVersions {
        cluster: cluster.to_string(),
        versions: accepted.to_vec(),
    })
    .await?;
    let version = match conn.recv().await {
        Ok(Frame::SnapshotVersion(v)) if accepted.contains(&v) => v,
        Ok(Frame::SnapshotVersion(v)) => {
            return Err(PeerError::Remote(format!(
                "peer sends snapshot stream version {v}, not one of {accepted:?}"
            )))
        }
        Ok(Frame::SnapshotFailed(e)) => return Err(PeerError::Remote(e)),
        Ok(_) => return Err(PeerError::Unexpected),
        // Closed unanswered: a node built before negotiation could not decode the request.
        // It answers the old request with version 3 only.
        Err(e) if closed_unanswered(&e) && accepted.contains(&LEGACY_SNAPSHOT_VERSION) => {
            tracing::info!(%addr, "peer does not negotiate snapshot versions (an older build); asking for version {LEGACY_SNAPSHOT_VERSION}");
            conn = Conn::dial(addr).await?;
            conn.send(&Frame::SnapshotFetch {
                cluster: cluster.to_string(),
            })
            .await?;
            LEGACY_SNAPSHOT_VERSION
        }
        Err(e) if closed_unanswered(&e) => {
            return Err(PeerError::Remote(format!(
                "peer closed the connection without an answer: an older build that only \
                 sends snapshot stream version {LEGACY_SNAPSHOT_VERSION}, while this node \
                 accepts {accepted:?}"
            )))
        }
        Err(e) => return Err(e),
    };
    let path = receive_snapshot(&mut conn, dir).await?;
    Ok((path, version))
}

/// Whether a connection ended without a frame the way a node that could not decode our
/// request ends it (it drops the connection).
fn closed_unanswered(e: &PeerError) -> bool {
    match e {
        PeerError::Closed => true,
        PeerError::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Writes the chunks that follow on `conn` into a new file in `dir`; returns its path.
async fn receive_snapshot(
    conn: &mut Conn,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, PeerError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::JoinInfo;
    use crate::handle::{NodeHandle, WriteResult};
    use doozer_store::{Op, Store, StoreOptions};

    #[test]
    fn the_highest_common_version_is_chosen() {
        assert_eq!(choose_version(2..=3, &[2, 3]), Some(3));
        assert_eq!(choose_version(2..=3, &[3, 2]), Some(3));
        assert_eq!(choose_version(2..=3, &[2]), Some(2));
        assert_eq!(choose_version(2..=3, &[3]), Some(3));
        assert_eq!(choose_version(2..=3, &[4, 2]), Some(2));
        assert_eq!(choose_version(2..=3, &[5, 4, 3]), Some(3));
        // A future node that writes 3..=4 and an older requester.
        assert_eq!(choose_version(3..=4, &[2, 3]), Some(3));
        assert_eq!(choose_version(3..=4, &[2, 3, 4]), Some(4));
    }

    #[test]
    fn no_common_version_is_none() {
        assert_eq!(choose_version(2..=3, &[1]), None);
        assert_eq!(choose_version(2..=3, &[4, 5]), None);
        assert_eq!(choose_version(2..=3, &[]), None);
        assert_eq!(choose_version(3..=4, &[2]), None);
        let e = no_common_version(&[1]);
        assert!(e.contains("no common snapshot stream version"), "{e}");
        assert!(e.contains("[1]"), "{e}");
    }

    #[test]
    fn the_test_hook_parses_a_version_list() {
        assert_eq!(parse_versions("2"), Some(vec![2]));
        assert_eq!(parse_versions("2, 3"), Some(vec![2, 3]));
        assert_eq!(parse_versions(""), None);
        assert_eq!(parse_versions("2,x"), None);
        // Without the variable set, a node accepts what its store installs.
        if std::env::var(SNAPSHOT_VERSIONS_ENV).is_err() {
            assert_eq!(
                accepted_versions(),
                (doozer_store::SNAPSHOT_FORMAT_MIN..=doozer_store::SNAPSHOT_FORMAT)
                    .collect::<Vec<_>>()
            );
        }
    }

    /// [`Frame`] as nodes built before snapshot version negotiation declare it.
    #[derive(Debug, Serialize, Deserialize)]
    enum OldFrame {
        Hello { id: NodeId, cluster: String },
        Msg(Message),
        Ping,
        Join(JoinRequest),
        JoinReply(Result<JoinInfo, String>),
        SnapshotFetch { cluster: String },
        SnapshotChunk(Bytes),
        SnapshotDone,
        SnapshotFailed(String),
    }

    fn old_decode(b: &[u8]) -> Result<OldFrame, doozer_store::StoreError> {
        doozer_store::codec::decode(b)
    }

    #[test]
    fn old_frames_keep_their_encoding() {
        let id = NodeId(7);
        let pairs = [
            (
                encode(&Frame::Hello {
                    id,
                    cluster: "c".into(),
                }),
                doozer_store::codec::encode(&OldFrame::Hello {
                    id,
                    cluster: "c".into(),
                }),
            ),
            (
                encode(&Frame::Ping),
                doozer_store::codec::encode(&OldFrame::Ping),
            ),
            (
                encode(&Frame::SnapshotFetch {
                    cluster: "c".into(),
                }),
                doozer_store::codec::encode(&OldFrame::SnapshotFetch {
                    cluster: "c".into(),
                }),
            ),
            (
                encode(&Frame::SnapshotChunk(Bytes::from_static(b"abc"))),
                doozer_store::codec::encode(&OldFrame::SnapshotChunk(Bytes::from_static(b"abc"))),
            ),
            (
                encode(&Frame::SnapshotDone),
                doozer_store::codec::encode(&OldFrame::SnapshotDone),
            ),
            (
                encode(&Frame::SnapshotFailed("x".into())),
                doozer_store::codec::encode(&OldFrame::SnapshotFailed("x".into())),
            ),
        ];
        for (new, old) in pairs {
            assert_eq!(&new[..], &old[..]);
        }
        // An old node's request decodes here as the old request.
        let old_req = doozer_store::codec::encode(&OldFrame::SnapshotFetch {
            cluster: "c".into(),
        });
        assert!(matches!(decode(&old_req), Ok(Frame::SnapshotFetch { cluster }) if cluster == "c"));
    }

    #[test]
    fn an_old_node_cannot_decode_the_new_frames() {
        // It fails to decode them (and so closes the connection) rather than mistaking
        // them for another frame.
        let req = encode(&Frame::SnapshotFetchVersions {
            cluster: "c".into(),
            versions: vec![2, 3],
        });
        assert!(old_decode(&req).is_err());
        assert!(old_decode(&encode(&Frame::SnapshotVersion(3))).is_err());
    }

    /// The `format` in a snapshot stream's header: the magic (8 bytes), the header frame's
    /// length (4 bytes), then the header item, whose variant index (0) and small `format`
    /// are one varint byte each.
    fn stream_version(path: &std::path::Path) -> u64 {
        let b = std::fs::read(path).unwrap();
        assert_eq!(&b[..8], b"DZSNAP01");
        assert_eq!(b[12], 0, "the header item comes first");
        u64::from(b[13])
    }

    async fn started_node(dir: &std::path::Path) -> crate::Node {
        let node = crate::Node::start(crate::NodeConfig {
            listen: Some("127.0.0.1:0".into()),
            data_dir: dir.to_path_buf(),
            ..crate::NodeConfig::default()
        })
        .await
        .unwrap();
        let h = node.handle();
        for i in 0..5 {
            let op = Op::Set {
                path: format!("/f/{i}"),
                rev: -1,
                value: Bytes::from(format!("v{i}")),
            };
            match h.write(op, Duration::from_secs(10)).await {
                Ok(WriteResult::Ok { .. }) => {}
                other => panic!("write failed: {other:?}"),
            }
        }
        node
    }

    /// Installs the snapshot at `path` in a new store; returns it with the installed meta.
    fn install(
        path: &std::path::Path,
        dir: &std::path::Path,
    ) -> (Store, doozer_store::SnapshotMeta) {
        std::fs::create_dir_all(dir).unwrap();
        let store = Store::open(&dir.join("s.redb"), StoreOptions::default()).unwrap();
        let mut r = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let meta = store.install_snapshot(&mut r).unwrap();
        (store, meta)
    }

    #[tokio::test]
    async fn a_requester_gets_the_highest_version_it_accepts() {
        let base = tempfile::tempdir().unwrap();
        let node = started_node(&base.path().join("node")).await;
        let addr = node.client_addr().to_string();
        let rev = node.handle().store().rev();
        let inbox = base.path().join("in");
        std::fs::create_dir_all(&inbox).unwrap();

        // Only version 2: a stream without history, installable.
        let (p2, v) = fetch_snapshot_accepting(&addr, "local", &inbox, &[2])
            .await
            .unwrap();
        assert_eq!(v, 2);
        assert_eq!(stream_version(&p2), 2);
        let (s2, meta) = install(&p2, &base.path().join("i2"));
        assert!(meta.rev >= rev, "{meta:?} at rev {rev}");
        assert_eq!(s2.get("/f/4", None).unwrap().0, Bytes::from("v4"));
        assert_eq!(s2.oldest_rev(), meta.rev, "version 2 carries no history");

        // Both: version 3, with the history.
        let (p3, v) = fetch_snapshot_accepting(&addr, "local", &inbox, &[2, 3])
            .await
            .unwrap();
        assert_eq!(v, 3);
        assert_eq!(stream_version(&p3), 3);
        let (s3, meta) = install(&p3, &base.path().join("i3"));
        assert_eq!(s3.get("/f/0", None).unwrap().0, Bytes::from("v0"));
        assert!(s3.oldest_rev() < meta.rev, "version 3 carries the history");

        // No common version: a clear error, and the node goes on serving.
        let e = fetch_snapshot_accepting(&addr, "local", &inbox, &[1])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no common snapshot stream version"), "{e}");
        let e = fetch_snapshot_accepting(&addr, "other", &inbox, &[3])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster name mismatch"), "{e}");
        let (_, v) = fetch_snapshot_accepting(&addr, "local", &inbox, &[3])
            .await
            .unwrap();
        assert_eq!(v, 3);

        // A request of a node built before negotiation gets version 3, unannounced.
        let mut conn = Conn::dial(&addr).await.unwrap();
        conn.send(&Frame::SnapshotFetch {
            cluster: "local".into(),
        })
        .await
        .unwrap();
        match conn.recv().await.unwrap() {
            Frame::SnapshotChunk(b) => {
                assert_eq!(&b[..8], b"DZSNAP01");
                assert_eq!(b[13], 3);
            }
            other => panic!("expected the first chunk, got {other:?}"),
        }
        drop(conn);
        node.shutdown().await;
    }

    /// Serves `conns` peer connections as a node built before negotiation does: a frame it
    /// cannot decode closes the connection; a snapshot request gets `body` in one chunk.
    async fn old_node(conns: usize, body: &'static [u8]) -> (String, JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..conns {
                let (mut s, _) = l.accept().await.unwrap();
                let mut pre = [0u8; 8];
                tokio::io::AsyncReadExt::read_exact(&mut s, &mut pre)
                    .await
                    .unwrap();
                assert_eq!(&pre, PREAMBLE);
                let mut conn = Conn::new(s);
                let raw = conn.rd.next().await.unwrap().unwrap();
                match old_decode(&raw) {
                    Err(_) => seen.push("undecodable".to_string()),
                    Ok(OldFrame::SnapshotFetch { .. }) => {
                        seen.push("fetch".to_string());
                        let chunk = OldFrame::SnapshotChunk(Bytes::from_static(body));
                        for f in [chunk, OldFrame::SnapshotDone] {
                            let b = Bytes::from(doozer_store::codec::encode(&f));
                            conn.wr.send(b).await.unwrap();
                        }
                    }
                    Ok(other) => seen.push(format!("{other:?}")),
                }
            }
            seen
        });
        (addr, task)
    }

    #[tokio::test]
    async fn an_older_node_is_asked_again_the_old_way() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, old) = old_node(2, b"v3 stream").await;
        let (path, v) = fetch_snapshot_accepting(&addr, "local", dir.path(), &[2, 3])
            .await
            .unwrap();
        assert_eq!(v, LEGACY_SNAPSHOT_VERSION);
        assert_eq!(std::fs::read(&path).unwrap(), b"v3 stream");
        assert_eq!(old.await.unwrap(), ["undecodable", "fetch"]);
    }

    #[tokio::test]
    async fn an_older_node_cannot_serve_a_version_2_only_requester() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, old) = old_node(1, b"v3 stream").await;
        let e = fetch_snapshot_accepting(&addr, "local", dir.path(), &[2])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("older build"), "{e}");
        assert_eq!(old.await.unwrap(), ["undecodable"]);
        // No partial file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
