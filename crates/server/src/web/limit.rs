//! [`Limited`]: the web view's listener, with a bound on open connections.
//!
//! An accepted connection takes a slot before it is served; at the limit the listener
//! waits for a slot (holding that one connection), so further connections wait in the
//! kernel's backlog. The slot is freed when the connection closes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A TCP listener that keeps at most as many connections open as `slots` has permits.
pub(super) struct Limited {
    pub inner: TcpListener,
    pub slots: Arc<Semaphore>,
}

impl Listener for Limited {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        // At the limit, this one connection waits here (the semaphore is never closed).
        let permit = self.slots.clone().acquire_owned().await.expect("open");
        let _ = stream.set_nodelay(true);
        (
            Counted {
                stream,
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection holding its slot.
pub(super) struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_connection_past_the_limit_waits_for_a_slot() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let slots = Arc::new(Semaphore::new(1));
        let mut l = Limited {
            inner,
            slots: slots.clone(),
        };
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (s1, _) = l.accept().await;
        assert_eq!(slots.available_permits(), 0);
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let mut second = Box::pin(l.accept());
        // A negative check: nothing to await but the lack of an answer.
        let early = tokio::time::timeout(Duration::from_millis(100), &mut second).await;
        assert!(early.is_err(), "served past the limit");
        drop(s1);
        let (s2, _) = second.await;
        assert_eq!(slots.available_permits(), 0);
        drop(s2);
        assert_eq!(slots.available_permits(), 1);
    }
}
