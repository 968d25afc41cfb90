//! doozerd: a doozer-rs cluster node.
//!
//! A node ties the Multi-Paxos engine (`doozer_paxos`) to the durable store
//! (`doozer_store`) and serves the Doozer client protocol and the peer protocol on one
//! port. Inside, tokio tasks: the listener (`listener.rs`), one per client session, one per
//! peer link (`peer.rs`), the engine driver (`driver.rs`), the membership task
//! (`cluster.rs`); plus one `std::thread` that owns every store commit (`storage.rs`).
//! With [`NodeConfig::web`] set, a read-only HTTP server (`web.rs`) shows the tree, its
//! changes as server-sent events, `/health` and `/metrics` ([`Node::web_addr`]).
//!
//! Embedding a node:
//!
//! ```no_run
//! # async fn demo() -> Result<(), doozerd::StartError> {
//! use doozerd::{Node, NodeConfig, NodeHandle};
//! let cfg = NodeConfig {
//!     listen: Some("127.0.0.1:0".into()),
//!     data_dir: "/tmp/doozer-demo".into(),
//!     ..NodeConfig::default()
//! };
//! let node = Node::start(cfg).await?;
//! println!("node {} serving on {}", node.id(), node.client_addr());
//! let h = node.handle();
//! let op = doozer_store::Op::Set { path: "/app/x".into(), rev: -1, value: "1".into() };
//! let res = h.write(op, std::time::Duration::from_secs(5)).await;
//! println!("{res:?}");
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The `doozerd` binary is this library behind a command line (`doozerd --help`).

mod client_conn;
mod cluster;
pub mod config;
mod core;
mod driver;
pub mod handle;
mod listener;
mod node;
mod peer;
mod recover;
mod session;
mod storage;
mod web;

pub use crate::cluster::JoinError;
pub use crate::config::{NodeConfig, WebView};
pub use crate::core::{Applied, Consensus, Handle};
pub use crate::handle::{NodeError, NodeHandle, WriteResult};
pub use crate::node::{Node, StartError};
pub use crate::peer::PREAMBLE;
pub use crate::recover::{recover, Recovered};
