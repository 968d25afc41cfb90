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
    /// Address of the read-only web view (`-w`): the tree as HTML and JSON, its changes as
    /// server-sent events, `/health` and `/metrics`. `None`: not served. Port 0 picks a free
    /// port ([`crate::Node::web_addr`] tells which).
    pub web: Option<String>,
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
            web: None,
            timeout: Duration::from_secs(60),
            hist_revs: 100_000,
            data_dir: PathBuf::from("./doozer-data"),
            cals: 3,
            write_deadline: Duration::from_secs(10),
            unsafe_local_reads: false,
            tick: Duration::from_millis(10),
            retain_slots: 4096,
            alpha: 50,
            max_inflight: 2,
        }
    }
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
}
