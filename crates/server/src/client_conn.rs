//! Hands a client connection to the Doozer protocol session code (`crate::session`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;

use crate::core::Handle;
use crate::session::{Secrets, SessionConfig};

/// The secrets, read from the environment once (as the original did, at start).
fn secrets() -> &'static Secrets {
    static SECRETS: OnceLock<Secrets> = OnceLock::new();
    SECRETS.get_or_init(Secrets::from_env)
}

/// Client connections open on one node (for `/metrics`); peer links are not counted.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientCount(Arc<AtomicUsize>);

impl ClientCount {
    /// Connections open now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one connection until the guard is dropped.
    fn enter(&self) -> ClientGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        ClientGuard(self.clone())
    }
}

/// One counted connection.
struct ClientGuard(ClientCount);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one client connection until it closes (or its task is dropped), counted in
/// `count` meanwhile.
pub(crate) async fn serve(stream: TcpStream, handle: Handle, count: &ClientCount) {
    let _counted = count.enter();
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cfg = Arc::new(SessionConfig {
        secrets: secrets().clone(),
        deadline: handle.write_deadline(),
        ..SessionConfig::default()
    });
    crate::session::serve(stream, handle, cfg, peer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_open_connections() {
        let c = ClientCount::default();
        let a = c.enter();
        let b = c.clone().enter();
        assert_eq!(c.get(), 2);
        drop(a);
        assert_eq!(c.get(), 1);
        drop(b);
        assert_eq!(c.get(), 0);
    }
}
