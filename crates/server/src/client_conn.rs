//! Hands a client connection to the Doozer protocol session code (`crate::session`).

use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;

use crate::core::Handle;
use crate::session::{Secrets, SessionConfig};

/// The secrets, read from the environment once (as the original did, at start).
fn secrets() -> &'static Secrets {
    static SECRETS: OnceLock<Secrets> = OnceLock::new();
    SECRETS.get_or_init(Secrets::from_env)
}

/// Serves one client connection until it closes.
pub(crate) async fn serve(stream: TcpStream, handle: Handle) {
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
