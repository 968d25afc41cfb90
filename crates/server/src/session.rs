//! The Doozer client protocol: what one client connection does (doozer-protocol.md §1, §2).
//!
//! A connection is served by three kinds of task:
//! * the **reader** (the task that called [`serve`]) decodes frames one at a time, in order,
//!   and does every quick check in line: tag bookkeeping (TAG_IN_USE), access rights,
//!   missing arguments, path and glob syntax. REV, SELF and ACCESS are answered right there,
//!   so an ACCESS is in force for every request read after it, as in the original;
//! * one **handler task per request** that may block (store reads, consensus writes, WAIT),
//!   so responses come back in whatever order they finish, tagged with their request's tag;
//! * one **writer** that serialises responses onto the socket, so frames never interleave.
//!
//! Everything a connection holds is bounded (`SessionConfig`): outstanding requests (the
//! reader stops reading while the limit is reached, which pushes back on the client through
//! TCP), bytes of request bodies in flight, GETs and WALKs holding a file body not yet
//! queued, and bytes of responses queued for a client that does not read. Closing the connection cancels its WAITs and reads at future revisions;
//! requests that are bounded by a deadline (writes, linearizable reads) finish and their
//! answers are flushed first, so a client that half-closes still gets them.
//!
//! The session only talks to the node through [`crate::handle::NodeHandle`], so it is
//! tested against an in-memory fake node (see `session/tests`).

mod access;
mod config;
mod conn;
mod errors;
mod outbox;
mod reads;
mod verbs;
mod wait;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use access::Secrets;
pub use config::SessionConfig;
pub use conn::serve;
