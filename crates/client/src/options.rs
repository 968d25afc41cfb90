//! [`ClientOptions`] and [`TlsOptions`]: how a [`crate::Client`] connects and how long it waits.

use std::path::PathBuf;
use std::time::Duration;

/// Connection and deadline settings. `ClientOptions::default()` suits most programs.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of every call unless overridden with [`crate::Client::with_timeout`].
    /// `None`: wait forever (the original client's behaviour).
    pub timeout: Option<Duration>,
    /// Deadline of one TCP (and TLS) connection attempt to one address.
    pub connect_timeout: Duration,
    /// First pause between two rounds of reconnection attempts over all addresses.
    pub backoff_min: Duration,
    /// Longest pause between two rounds (the pause doubles up to this, with jitter).
    pub backoff_max: Duration,
    /// Largest frame sent or accepted, in bytes (the server's default limit).
    pub max_frame: usize,
    /// Most requests outstanding on the connection at once; more callers wait their turn.
    pub max_outstanding: usize,
    /// TLS, or `None` for plain TCP.
    pub tls: Option<TlsOptions>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Some(Duration::from_secs(10)),
            connect_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_frame: doozer_proto::codec::MAX_FRAME,
            max_outstanding: 4096,
            tls: None,
        }
    }
}

/// TLS settings: the cluster's CA, and optionally a client certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) that signed the servers' certificates.
    pub ca_file: PathBuf,
    /// PEM client certificate chain, for clusters that ask for client certificates.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name to check the server certificate against; by default the host part of each
    /// address (an IP address or a DNS name).
    pub server_name: Option<String>,
}
