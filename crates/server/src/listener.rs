//! The one listening port: tells peer connections from client connections.
//!
//! A peer connection starts with [`crate::peer::PREAMBLE`]. The listener peeks at the first
//! bytes without consuming them: as soon as they stop matching the preamble the connection
//! is a client's and goes to the session code untouched; if all eight match, they are
//! consumed and the connection becomes a peer link.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::client_conn::ClientCount;
use crate::core::{Core, Handle};
use crate::peer::PREAMBLE;

/// Open connections at most (clients and peers together).
pub const MAX_CONNS: usize = 10_000;
/// How long a new connection may take to show its first bytes.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until the node stops; `clients` counts the open client connections.
pub(crate) async fn run(core: Arc<Core>, listener: TcpListener, clients: ClientCount) {
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = core.stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = MAX_CONNS, "connection limit reached; closing");
            continue;
        };
        let core = core.clone();
        let clients = clients.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stop = core.stop.clone();
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve(core, stream, &clients) => {}
            }
        });
    }
}

/// Outcome of looking at a connection's first bytes.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Peer,
    Client,
    Closed,
}

async fn sniff(stream: &TcpStream) -> std::io::Result<Kind> {
    let mut buf = [0u8; 8];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Kind::Closed);
        }
        if buf[..n] != PREAMBLE[..n] {
            return Ok(Kind::Client);
        }
        if n == PREAMBLE.len() {
            return Ok(Kind::Peer);
        }
        // A prefix of the preamble so far: wait for more bytes to arrive.
        stream.readable().await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn serve(core: Arc<Core>, mut stream: TcpStream, clients: &ClientCount) {
    let peer = stream.peer_addr().ok();
    let kind = match tokio::time::timeout(SNIFF_TIMEOUT, sniff(&stream)).await {
        Ok(Ok(k)) => k,
        Ok(Err(e)) => {
            tracing::debug!(?peer, error = %e, "connection failed before its first bytes");
            return;
        }
        Err(_) => {
            tracing::debug!(?peer, "connection sent nothing; closing");
            return;
        }
    };
    match kind {
        Kind::Closed => {}
        Kind::Peer => {
            let mut pre = [0u8; 8];
            if stream.read_exact(&mut pre).await.is_err() {
                return;
            }
            crate::peer::serve_inbound(core, stream).await;
        }
        Kind::Client => {
            let _ = stream.set_nodelay(true);
            let handle = Handle { core };
            crate::client_conn::serve(stream, handle, clients).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn kind_of(bytes: &[u8]) -> Kind {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let bytes = bytes.to_vec();
        let w = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(&bytes).await.unwrap();
            c.shutdown().await.unwrap();
            // keep the socket until the reader is done
            let mut sink = Vec::new();
            let _ = c.read_to_end(&mut sink).await;
        });
        let (s, _) = l.accept().await.unwrap();
        let k = sniff(&s).await.unwrap();
        drop(s);
        w.await.unwrap();
        k
    }

    #[tokio::test]
    async fn preamble_means_peer() {
        assert_eq!(kind_of(b"DZPEER01rest").await, Kind::Peer);
    }

    #[tokio::test]
    async fn client_frame_means_client() {
        // A NOP request: length 2, then verb field.
        assert_eq!(kind_of(&[0, 0, 0, 2, 0x10, 7]).await, Kind::Client);
        assert_eq!(kind_of(b"DZPX").await, Kind::Client);
    }

    #[tokio::test]
    async fn nothing_means_closed() {
        assert_eq!(kind_of(b"").await, Kind::Closed);
    }
}
