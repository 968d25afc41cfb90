//! Limits and settings of client sessions.

use std::time::Duration;

use doozer_proto::codec::MAX_FRAME;

use super::access::Secrets;

/// Largest SET body accepted (design.md "Limits": value 1 MiB).
pub const MAX_VALUE: usize = 1024 * 1024;
/// Outstanding requests per connection (design.md "Limits").
pub const MAX_OUTSTANDING: usize = 4096;
/// Bytes of request frames a connection may have in flight at once.
pub const REQUEST_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of responses that may wait for a client that does not read.
pub const RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// GETs and WALKs per connection holding a file body read from the store and not yet
/// queued for the socket.
pub const VALUE_READS: usize = 16;

/// How client sessions behave. [`SessionConfig::default`] has the design's limits, no
/// secrets, and a 10 s deadline.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// ACCESS secrets.
    pub secrets: Secrets,
    /// Deadline of a write, and of the read barrier of a linearizable read.
    pub deadline: Duration,
    /// Largest frame body read or written; a bigger one closes the connection.
    pub max_frame: usize,
    /// Largest SET value; a bigger one gets OTHER.
    pub max_value: usize,
    /// Requests read but not yet answered, per connection; at the limit the session stops
    /// reading until an answer has been written.
    pub max_outstanding: usize,
    /// Bytes of request frames being handled at once, per connection.
    pub request_bytes: usize,
    /// Bytes of answers queued for the socket, per connection.
    pub response_bytes: usize,
    /// Reads (GET, WALK) per connection that may hold a file body between the store and
    /// the answer queue. With `response_bytes` this bounds what a client that pipelines
    /// reads of big files and never reads the answers can make the server hold.
    pub value_reads: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            secrets: Secrets::default(),
            deadline: Duration::from_secs(10),
            max_frame: MAX_FRAME,
            max_value: MAX_VALUE,
            max_outstanding: MAX_OUTSTANDING,
            request_bytes: REQUEST_BYTES,
            response_bytes: RESPONSE_BYTES,
            value_reads: VALUE_READS,
        }
    }
}
