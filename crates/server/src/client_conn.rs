//! Hands a client connection to the Doozer protocol session code.

use tokio::net::TcpStream;

use crate::core::Handle;

/// Serves one client connection until it closes.
pub(crate) async fn serve(stream: TcpStream, handle: Handle) {
    let peer = stream.peer_addr().ok();
    let _ = handle;
    // The session layer (crate::session) is not in the tree yet.
    tracing::warn!(
        ?peer,
        "client protocol not available yet; closing connection"
    );
}
