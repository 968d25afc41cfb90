//! An async (tokio) client for doozer-rs and Doozer clusters.
//!
//! * [`Client::connect`] takes a `doozer:?ca=host:port&ca=host2&sk=secret` URI (the port
//!   defaults to 8046) and connects to one of the addresses.
//! * Every verb is a typed method: [`Client::get`], [`Client::set`], [`Client::del`],
//!   [`Client::rev`], [`Client::wait`], [`Client::walk`], [`Client::getdir`],
//!   [`Client::stat`], [`Client::nop`], [`Client::access`], [`Client::self_id`], plus
//!   [`Client::getdir_all`] and [`Client::walk_all`] for whole listings at one revision.
//! * Requests from all clones of a client are pipelined on one connection with distinct tags.
//! * Every call has a deadline: [`ClientOptions::timeout`] by default, overridden per call
//!   with [`Client::with_timeout`].
//! * When a node dies the client reconnects to another address with backoff. Reads and
//!   compare-and-set writes (rev ≥ 0) are retried transparently; a clobber write (rev -1) or
//!   NOP whose answer was lost is reported as [`ClientError::Unknown`], never retried; so
//!   is any write the server itself reports as maybe applied (`OTHER: timed out`).
//! * [`Client::watch`] is a [`Stream`](futures::Stream) of [`Event`]s that resumes from the
//!   last seen revision + 1 across reconnections, so it never misses or repeats an event.
//! * Errors are a [`ClientError`]; server answers map to `ClientError::Doozer { code, .. }`
//!   with the protocol's [`ErrCode`].
//! * TLS (rustls, ring) with [`TlsOptions`]: the cluster's CA and an optional client
//!   certificate.
//! * Feature `fake-server`: module `fake`, an in-memory server speaking real frames (plain or
//!   TLS, with hooks that stall or drop requests), for testing programs that use this
//!   client without a cluster; the example below runs against it.
//!
//! ```
//! use doozer_client::{Client, ClientError, ErrCode};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ClientError> {
//! # // An in-memory server stands in for a cluster here (feature "fake-server").
//! # let cluster = doozer_client::fake::FakeCluster::new();
//! # let node = cluster.start().await;
//! # let uri = node.uri();
//! // `uri` is e.g. "doozer:?ca=10.0.0.1:8046&ca=10.0.0.2:8046&sk=secret".
//! let client = Client::connect(&uri).await?;
//!
//! // Create only if missing (rev 0), then compare-and-set against the rev we read.
//! let rev = client.set("/app/config", 0, "v1").await?;
//! let (body, at) = client.get("/app/config", None).await?;
//! assert_eq!((&body[..], at), (&b"v1"[..], rev));
//! match client.set("/app/config", rev - 1, "stale").await {
//!     Err(e) if e.code() == Some(ErrCode::RevMismatch) => {}
//!     other => panic!("expected REV_MISMATCH, got {other:?}"),
//! }
//!
//! // Follow every change under /app from the next revision on.
//! let mut changes = client.watch("/app/**", rev + 1);
//! client.del("/app/config", -1).await?;
//! let ev = changes.next().await.unwrap()?;
//! assert!(ev.is_del() && ev.path == "/app/config");
//! # Ok(()) }
//! ```

mod client;
mod conn;
mod error;
#[cfg(feature = "fake-server")]
pub mod fake;
mod options;
mod tls;
mod types;
mod watch;

pub use client::Client;
pub use doozer_proto::msg::ErrCode;
pub use error::ClientError;
pub use options::{ClientOptions, TlsOptions};
pub use types::{Entry, Event, Stat};
pub use watch::Watch;
