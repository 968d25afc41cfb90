//! What a node is told at start: [`NodeConfig`].
//!
//! Every field has the default the `doozerd` binary uses, so `NodeConfig::default()` starts a
//! first node on 127.0.0.1:8046 with its data in `./doozer-data`.

use std::path::PathBuf;
use std::time::Duration;

/// The default listen address (`-l`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8046";
/// The default cluster name (`-c`).
pub const DEFAULT_CLUSTER: &str = "local";
/// The web view's port when `-w` is not given (on the listen address's host).
pub const DEFAULT_WEB_PORT: u16 = 8000;
/// The version string written to `/ctl/node/<id>/version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How to start a [`crate::Node`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address to listen on for clients and peers. `None`: the address stored in the data
    /// directory by an earlier run, else [`DEFAULT_LISTEN`]. Port 0 picks a free port.
    pub listen: Option<String>,
    /// Address written to `/ctl/node/<id>/addr` and used by peers to reach this node.
    /// `None`: the address actually bound.
    pub advertise: Option<String>,
    /// Peers to join through (`-a`, or the `ca=` addresses of `-b`). A restarted member asks
    /// them, with the peers it knows, to register it again if it was removed.
    pub attach: Vec<String>,
    /// Cluster name (`-c`). `None`: the stored name, else [`DEFAULT_CLUSTER`].
    pub cluster: Option<String>,
    /// The read-only web view (`-w`): the tree as HTML and JSON, its changes as server-sent
    /// events, `/health` and `/metrics`. [`crate::Node::web_addr`] tells where it listens.
    /// `NodeConfig::default()`: [`WebView::Off`]; the `doozerd` binary without `-w`:
    /// [`WebView::Default`].
    pub web: WebView,
    /// A voter silent this long is removed from its `/ctl/cal` slot (`--timeout`).
    pub timeout: Duration,
    /// Revisions of history kept for WAIT and reads at old revisions (`--hist`).
    pub hist_revs: u64,
    /// Where the store lives (`--data-dir`).
    pub data_dir: PathBuf,
    /// Number of `/ctl/cal` slots a new cluster gets (`--cals`).
    pub cals: u32,
    /// Deadline for client writes and linearizable reads (`--write-timeout`).
    pub write_deadline: Duration,
    /// Test only: reads skip the read index and may be stale (`--unsafe-local-reads`).
    pub unsafe_local_reads: bool,
    /// Length of one engine tick.
    pub tick: Duration,
    /// Decided slots the engine keeps in memory to catch lagging peers up; older ones are
    /// only reachable through a snapshot.
    pub retain_slots: u64,
    /// Revisions between checkpoints of the tree to disk (`--checkpoint-revs`); a restart
    /// replays the log after the last one.
    pub checkpoint_revs: u64,
    /// Maximum undecided slots in flight, and the membership delay (the alpha rule).
    pub alpha: u64,
    /// Slots of new commands a leader keeps in flight at most (commands arriving meanwhile
    /// share the next slot); 0: no bound but `alpha`.
    pub max_inflight: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: None,
            advertise: None,
            attach: Vec::new(),
            cluster: None,
            web: WebView::Off,
            timeout: Duration::from_secs(60),
            hist_revs: 100_000,
            data_dir: PathBuf::from("./doozer-data"),
            cals: 3,
            write_deadline: Duration::from_secs(10),
            unsafe_local_reads: false,
            tick: Duration::from_millis(10),
            retain_slots: 4096,
            checkpoint_revs: doozer_store::StoreOptions::default().checkpoint_revs,
            alpha: 50,
            max_inflight: 1,
        }
    }
}

/// Whether and where a node serves its web view ([`NodeConfig::web`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WebView {
    /// Not served (`-w false`; the default of [`NodeConfig`], for embedders and tests).
    #[default]
    Off,
    /// What `doozerd` does without `-w`: port [`DEFAULT_WEB_PORT`] on the listen address's
    /// host, or a free port (0) when the listen port is 0, and on a restart of such a node
    /// (same or no `-l`). If that address cannot be bound (a second node on the host), the
    /// node logs a warning and runs without a web view.
    Default,
    /// This address (`-w ADDR`); port 0 picks a free one. Failing to bind it fails the start.
    At(String),
}

/// The address [`WebView::Default`] binds: the host of `listen` with port
/// [`DEFAULT_WEB_PORT`], or port 0 when `listen`'s port is 0 or when `restart` (the port the
/// default chose on this node's earlier run, if this is a restart of it) is 0.
pub(crate) fn default_web_addr(listen: &str, restart: Option<u16>) -> String {
    let (host, port) = match listen.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()),
        None => (listen, None),
    };
    let web_port = if port == Some(0) || restart == Some(0) {
        0
    } else {
        DEFAULT_WEB_PORT
    };
    format!("{host}:{web_port}")
}

/// Keys the node keeps in the store's meta table.
pub(crate) mod meta {
    /// This node's id (16 base32 characters).
    pub const ID: &str = "node.id";
    /// The cluster name.
    pub const CLUSTER: &str = "node.cluster";
    /// The address the node listened on.
    pub const LISTEN: &str = "node.listen";
    /// The address advertised to peers.
    pub const ADVERTISE: &str = "node.advertise";
    /// `"1"` once this node is a member of a cluster (bootstrapped or joined).
    pub const MEMBER: &str = "node.member";
    /// The membership the engine first started with (codec-encoded `Config`).
    pub const CONFIG0: &str = "node.config0";
    /// `"1"` once the bootstrap writes of a first node are applied, or from the start on a
    /// node that joined an existing cluster (it must never bootstrap).
    pub const BOOTSTRAPPED: &str = "node.bootstrapped";
    /// The port the default web view ([`super::WebView::Default`]) was asked for: `"0"`
    /// when the node first listened on port 0, so that its restarts keep a free port.
    pub const WEB_DEFAULT_PORT: &str = "node.web_default_port";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_web_address_follows_the_listen_host_and_port_zero() {
        assert_eq!(default_web_addr("127.0.0.1:8046", None), "127.0.0.1:8000");
        assert_eq!(default_web_addr("10.1.2.3:9000", None), "10.1.2.3:8000");
        assert_eq!(default_web_addr("[::1]:8046", None), "[::1]:8000");
        assert_eq!(default_web_addr("localhost:8046", None), "localhost:8000");
        // Ephemeral listen port: ephemeral web port, also on restarts at the bound port.
        assert_eq!(default_web_addr("127.0.0.1:0", None), "127.0.0.1:0");
        assert_eq!(default_web_addr("127.0.0.1:0", Some(8000)), "127.0.0.1:0");
        assert_eq!(default_web_addr("127.0.0.1:41234", Some(0)), "127.0.0.1:0");
        assert_eq!(
            default_web_addr("127.0.0.1:8046", Some(8000)),
            "127.0.0.1:8000"
        );
    }
}
